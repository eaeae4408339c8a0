#include "service/auth/authenticator.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/auth/api_key.h"
#include "service/common/status_macros.h"

namespace pgbus::auth {
namespace {

// Bounds memory under a flood of made-up key ids (each unknown id is cached
// as "no such key" so it does not reach the database again).
constexpr size_t kMaxCached = 10000;

constexpr int kAllScopes = static_cast<int>(Scope::kPublish) |
                           static_cast<int>(Scope::kSubscribe) |
                           static_cast<int>(Scope::kAdmin);

TenantQuotas QuotasOf(const model::TenantRecord& t) {
  TenantQuotas q;
  q.max_message_bytes = t.max_message_bytes;
  q.max_stored_bytes = t.max_stored_bytes;
  q.max_publish_rate = t.max_publish_rate;
  q.max_streams = t.max_streams;
  return q;
}

}  // namespace

Authenticator::Authenticator(store::Directory* directory, AuthOptions options)
    : directory_(directory), options_(std::move(options)) {}

absl::StatusOr<Authenticator::Named> Authenticator::Classify(
    const Credentials& creds) const {
  if (options_.dev_mode) return Named{Kind::kDev, options_.dev_tenant};
  if (creds.authorization) {
    absl::string_view v = *creds.authorization;
    if (v.size() < 7 || !absl::EqualsIgnoreCase(v.substr(0, 7), "Bearer ")) {
      return absl::UnauthenticatedError(
          "the authorization header must be `Bearer <API key>`");
    }
    auto key = ParseKey(absl::StripAsciiWhitespace(v.substr(7)));
    if (!key.ok()) return key.status();
    return Named{Kind::kKey, key->key_id};
  }
  if (options_.tenant_from_cert && !creds.cert_common_name.empty()) {
    return Named{Kind::kCert, creds.cert_common_name};
  }
  return absl::UnauthenticatedError(
      "missing API key: send the header `authorization: Bearer <API key>` (an operator issues "
      "keys with `pgbusd key issue`)");
}

absl::StatusOr<Principal> Authenticator::FromKey(const Credentials& creds,
                                                 const std::string& key_id,
                                                 const Entry& entry) const {
  // Classify() parsed it already, so this cannot fail now.
  auto parsed =
      ParseKey(absl::StripAsciiWhitespace(absl::string_view(*creds.authorization).substr(7)));
  if (!parsed.ok()) return parsed.status();
  if (!entry.key || !SecretMatches(parsed->secret, entry.key->secret_sha256)) {
    return absl::UnauthenticatedError(absl::StrCat("API key ", key_id, " is not valid"));
  }
  if (entry.key->revoked) {
    return absl::UnauthenticatedError(absl::StrCat("API key ", key_id, " has been revoked"));
  }
  if (!entry.tenant) {
    return absl::UnauthenticatedError(
        absl::StrCat("the tenant of API key ", key_id, " no longer exists"));
  }
  Principal p;
  p.tenant = entry.key->tenant;
  p.identity = absl::StrCat("key ", key_id);
  for (const auto& s : entry.key->scopes) {
    auto scope = ParseScope(s);
    if (scope.ok()) p.scopes |= static_cast<int>(*scope);
  }
  p.topics = entry.key->topics;
  p.quotas = QuotasOf(*entry.tenant);
  return p;
}

absl::StatusOr<Principal> Authenticator::FromTenant(Kind kind, const std::string& tenant,
                                                    const Entry& entry) const {
  Principal p;
  p.tenant = tenant;
  p.scopes = kAllScopes;
  if (kind == Kind::kDev) {
    p.identity = "dev-mode";
  } else {
    p.identity = absl::StrCat("certificate CN=", tenant.substr(0, 64));
    if (!entry.tenant) {
      return absl::PermissionDeniedError(absl::StrCat(
          "the client certificate's common name \"", tenant.substr(0, 64),
          "\" names no tenant; create it with `pgbusd tenant create`, or send an API key"));
    }
  }
  if (entry.tenant) p.quotas = QuotasOf(*entry.tenant);
  return p;
}

absl::StatusOr<Authenticator::Entry> Authenticator::Fetch(Kind kind,
                                                          const std::string& name) const {
  Entry entry;
  std::string tenant = name;
  if (kind == Kind::kKey) {
    ASSIGN_OR_RETURN(entry.key, directory_->LookupApiKey(name));
    if (!entry.key) return entry;  // no such key: cached as such
    tenant = entry.key->tenant;
  }
  ASSIGN_OR_RETURN(entry.tenant, directory_->LookupTenant(tenant));
  return entry;
}

std::optional<absl::StatusOr<Principal>> Authenticator::Lookup(const Credentials& creds,
                                                               bool may_block) {
  auto what = Classify(creds);
  if (!what.ok()) return absl::StatusOr<Principal>(what.status());
  const auto& [kind, name] = *what;
  const std::string cache_key = absl::StrCat(kind == Kind::kKey ? "key " : "tenant ", name);
  const absl::Time now = absl::Now();
  std::optional<Entry> entry;
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(cache_key);
    if (it != cache_.end() && it->second.expires > now) entry = it->second;
  }
  if (!entry) {
    if (!may_block) return std::nullopt;
    absl::StatusOr<Entry> fetched = Fetch(kind, name);
    if (!fetched.ok()) return absl::StatusOr<Principal>(fetched.status());
    entry = *std::move(fetched);
    entry->expires = now + options_.cache_ttl;
    absl::MutexLock lock(&mu_);
    if (cache_.size() >= kMaxCached) cache_.clear();
    cache_[cache_key] = *entry;
  }
  if (kind == Kind::kKey) return FromKey(creds, name, *entry);
  return FromTenant(kind, name, *entry);
}

std::optional<absl::StatusOr<Principal>> Authenticator::Cached(const Credentials& creds) {
  return Lookup(creds, /*may_block=*/false);
}

absl::StatusOr<Principal> Authenticator::Authenticate(const Credentials& creds) {
  return *Lookup(creds, /*may_block=*/true);
}

}  // namespace pgbus::auth
