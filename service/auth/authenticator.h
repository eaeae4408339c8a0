// Turns what a caller presented (an API key, a client certificate, or
// nothing in dev mode) into a Principal. Keys and tenants are read through
// store::Directory and cached for `cache_ttl`, so a revoked key or a changed
// quota takes effect within that time on every replica.
//
// Thread safety: all methods may be called from any thread.
#ifndef PGBUS_SERVICE_AUTH_AUTHENTICATOR_H_
#define PGBUS_SERVICE_AUTH_AUTHENTICATOR_H_

#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/auth/principal.h"
#include "service/store/store.h"

namespace pgbus::auth {

struct Credentials {
  // The value of the `authorization` header, if any.
  std::optional<std::string> authorization;
  // Common name of a client certificate that TLS verified, if any.
  std::string cert_common_name;
};

struct AuthOptions {
  // No authentication: every call runs as `dev_tenant` with every scope.
  bool dev_mode = false;
  std::string dev_tenant = "default";
  // A verified client certificate without a key authenticates as the tenant
  // named by its common name, with every scope.
  bool tenant_from_cert = false;
  absl::Duration cache_ttl = absl::Seconds(5);
};

class Authenticator {
 public:
  Authenticator(store::Directory* directory, AuthOptions options);

  // A cached answer, or nullopt when Authenticate() would ask the database.
  std::optional<absl::StatusOr<Principal>> Cached(const Credentials& creds);
  // UNAUTHENTICATED for a missing, malformed, unknown or revoked key (the
  // message never repeats the key); UNAVAILABLE when the database cannot be
  // asked. May block on the database.
  absl::StatusOr<Principal> Authenticate(const Credentials& creds);

 private:
  // A looked-up key (with its tenant) or tenant; unset: there is none.
  struct Entry {
    absl::Time expires;
    std::optional<model::ApiKeyRecord> key;
    std::optional<model::TenantRecord> tenant;
  };
  enum class Kind { kKey, kCert, kDev };
  // What the credentials name: a key id (kKey), or a tenant.
  struct Named {
    Kind kind;
    std::string name;
  };
  absl::StatusOr<Named> Classify(const Credentials& creds) const;
  absl::StatusOr<Entry> Fetch(Kind kind, const std::string& name) const;
  absl::StatusOr<Principal> FromKey(const Credentials& creds, const std::string& key_id,
                                    const Entry& entry) const;
  absl::StatusOr<Principal> FromTenant(Kind kind, const std::string& tenant,
                                       const Entry& entry) const;
  std::optional<absl::StatusOr<Principal>> Lookup(const Credentials& creds, bool may_block);

  store::Directory* const directory_;
  const AuthOptions options_;
  absl::Mutex mu_;
  // "key <id>" / "tenant <name>" -> what was looked up.
  std::map<std::string, Entry> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pgbus::auth

#endif  // PGBUS_SERVICE_AUTH_AUTHENTICATOR_H_
