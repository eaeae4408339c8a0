// API keys: "pgbus_<key id>_<secret>". The key id (8 random bytes, hex) finds
// the key; the secret (32 random bytes from OpenSSL's CSPRNG, base64url) is
// kept only as its SHA-256 and compared in constant time.
#ifndef PGBUS_SERVICE_AUTH_API_KEY_H_
#define PGBUS_SERVICE_AUTH_API_KEY_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pgbus::auth {

struct NewKey {
  std::string key_id;
  std::string token;          // the whole key, shown once
  std::string secret_sha256;  // 32 bytes, what is stored
};

// A fresh key; INTERNAL if the CSPRNG fails.
absl::StatusOr<NewKey> GenerateKey();

struct ParsedKey {
  std::string key_id;
  std::string secret;
};

// Splits a token; UNAUTHENTICATED (never echoing the token) when it is not
// shaped like a key.
absl::StatusOr<ParsedKey> ParseKey(absl::string_view token);

// Whether SHA-256(secret) equals `stored_sha256`, in time independent of
// where they differ.
bool SecretMatches(absl::string_view secret, absl::string_view stored_sha256);

}  // namespace pgbus::auth

#endif  // PGBUS_SERVICE_AUTH_API_KEY_H_
