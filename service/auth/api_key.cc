#include "service/auth/api_key.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "service/common/sha256.h"

namespace pgbus::auth {
namespace {

constexpr char kPrefix[] = "pgbus_";
constexpr size_t kKeyIdBytes = 8;
constexpr size_t kSecretBytes = 32;

absl::StatusOr<std::string> RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    return absl::InternalError("the system random number generator failed");
  }
  return out;
}

absl::Status Malformed() {
  return absl::UnauthenticatedError(
      "the API key is malformed: expected `authorization: Bearer pgbus_<id>_<secret>` as "
      "issued by `pgbusd key issue`");
}

}  // namespace

absl::StatusOr<NewKey> GenerateKey() {
  auto id = RandomBytes(kKeyIdBytes);
  if (!id.ok()) return id.status();
  auto secret = RandomBytes(kSecretBytes);
  if (!secret.ok()) return secret.status();
  NewKey key;
  key.key_id = absl::BytesToHexString(*id);
  std::string secret_text = absl::WebSafeBase64Escape(*secret);  // no padding
  key.token = absl::StrCat(kPrefix, key.key_id, "_", secret_text);
  key.secret_sha256 = Sha256(secret_text);
  return key;
}

absl::StatusOr<ParsedKey> ParseKey(absl::string_view token) {
  if (!absl::ConsumePrefix(&token, kPrefix)) return Malformed();
  if (token.size() < 2 * kKeyIdBytes + 1 || token[2 * kKeyIdBytes] != '_') return Malformed();
  ParsedKey key;
  key.key_id = std::string(token.substr(0, 2 * kKeyIdBytes));
  for (char c : key.key_id) {
    if (!absl::ascii_isxdigit(c) || absl::ascii_isupper(c)) return Malformed();
  }
  key.secret = std::string(token.substr(2 * kKeyIdBytes + 1));
  // base64url of 32 bytes is 43 characters.
  if (key.secret.size() != 43) return Malformed();
  for (char c : key.secret) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_') return Malformed();
  }
  return key;
}

bool SecretMatches(absl::string_view secret, absl::string_view stored_sha256) {
  std::string digest = Sha256(secret);
  if (stored_sha256.size() != digest.size()) return false;
  return CRYPTO_memcmp(digest.data(), stored_sha256.data(), digest.size()) == 0;
}

}  // namespace pgbus::auth
