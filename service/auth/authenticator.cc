#include "service/auth/authenticator.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/auth/api_key.h"

namespace pgbus::auth {
namespace {

// Bounds memory under a flood of made-up key ids (each unknown id is cached
// as "no such key" so it does not reach the database again).
constexpr size_t kMaxCached = 10000;

constexpr int kAllScopes = static_cast<int>(Scope::kPublish) |
                           static_cast<int>(Scope::kSubscribe) |
                           static_cast<int>(Scope::kAdmin);

TenantQuotas QuotasOf(const store::TenantRecord& t) {
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

absl::StatusOr<std::pair<Authenticator::Kind, std::string>> Authenticator::Classify(
    const Credentials& creds) const {
  if (options_.dev_mode) return std::make_pair(Kind::kDev, options_.dev_tenant);
  if (creds.authorization) {
    absl::string_view v = *creds.authorization;
    if (v.size() < 7 || !absl::EqualsIgnoreCase(v.substr(0, 7), "Bearer ")) {
      return absl::UnauthenticatedError(
          "the authorization header must be `Bearer <API key>`");
    }
    auto key = ParseKey(absl::StripAsciiWhitespace(v.substr(7)));
    if (!key.ok()) return key.status();
    return std::make_pair(Kind::kKey, key->key_id);
  }
  if (options_.tenant_from_cert && !creds.cert_common_name.empty()) {
    return std::make_pair(Kind::kCert, creds.cert_common_name);
  }
  return absl::UnauthenticatedError(
      "missing API key: send the header `authorization: Bearer <API key>` (an operator issues "
      "keys with `pgbusd key issue`)");
}

absl::StatusOr<Principal> Authenticator::FromKey(const Credentials& creds,
                                                 const std::string& key_id,
                                                 const KeyEntry& entry) const {
  // Classify() parsed it already, so this cannot fail now.
  auto parsed =
      ParseKey(absl::StripAsciiWhitespace(absl::string_view(*creds.authorization).substr(7)));
  if (!parsed.ok()) return parsed.status();
  if (!entry.key || !SecretMatches(parsed->secret, entry.key->secret_sha256)) {
    return absl::UnauthenticatedError(absl::StrCat("API key ", key_id, " is not valid"));
  }
  if (entry.key->revoked_at) {
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
                                                    const TenantEntry& entry) const {
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

std::optional<absl::StatusOr<Principal>> Authenticator::Lookup(const Credentials& creds,
                                                               bool may_block) {
  auto what = Classify(creds);
  if (!what.ok()) return absl::StatusOr<Principal>(what.status());
  const auto& [kind, name] = *what;
  absl::Time now = absl::Now();
  if (kind == Kind::kKey) {
    std::optional<KeyEntry> cached;
    {
      absl::MutexLock lock(&mu_);
      auto it = keys_.find(name);
      if (it != keys_.end() && it->second.expires > now) cached = it->second;
    }
    if (cached) return FromKey(creds, name, *cached);
    if (!may_block) return std::nullopt;
    KeyEntry entry;
    auto key = directory_->LookupApiKey(name);
    if (!key.ok()) return absl::StatusOr<Principal>(key.status());
    entry.key = *std::move(key);
    if (entry.key) {
      auto tenant = directory_->LookupTenant(entry.key->tenant);
      if (!tenant.ok()) return absl::StatusOr<Principal>(tenant.status());
      entry.tenant = *std::move(tenant);
    }
    entry.expires = now + options_.cache_ttl;
    {
      absl::MutexLock lock(&mu_);
      if (keys_.size() >= kMaxCached) keys_.clear();
      keys_[name] = entry;
    }
    return FromKey(creds, name, entry);
  }
  std::optional<TenantEntry> cached;
  {
    absl::MutexLock lock(&mu_);
    auto it = tenants_.find(name);
    if (it != tenants_.end() && it->second.expires > now) cached = it->second;
  }
  if (cached) return FromTenant(kind, name, *cached);
  if (!may_block) return std::nullopt;
  TenantEntry entry;
  auto tenant = directory_->LookupTenant(name);
  if (!tenant.ok()) return absl::StatusOr<Principal>(tenant.status());
  entry.tenant = *std::move(tenant);
  entry.expires = now + options_.cache_ttl;
  {
    absl::MutexLock lock(&mu_);
    if (tenants_.size() >= kMaxCached) tenants_.clear();
    tenants_[name] = entry;
  }
  return FromTenant(kind, name, entry);
}

std::optional<absl::StatusOr<Principal>> Authenticator::Cached(const Credentials& creds) {
  return Lookup(creds, /*may_block=*/false);
}

absl::StatusOr<Principal> Authenticator::Authenticate(const Credentials& creds) {
  return *Lookup(creds, /*may_block=*/true);
}

}  // namespace pgbus::auth
