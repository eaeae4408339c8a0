// SHA-256 through OpenSSL's EVP interface, whole or incrementally.
#ifndef PGBUS_SERVICE_COMMON_SHA256_H_
#define PGBUS_SERVICE_COMMON_SHA256_H_

#include <openssl/evp.h>

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace pgbus {

// The 32-byte digest of `data`.
std::string Sha256(absl::string_view data);

// Hashes bytes as they stream by. Not thread-safe.
class Sha256Stream {
 public:
  Sha256Stream();
  void Update(absl::string_view data);
  // The digest of everything so far; the stream starts over afterwards.
  std::string Finish();

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

}  // namespace pgbus

#endif  // PGBUS_SERVICE_COMMON_SHA256_H_
