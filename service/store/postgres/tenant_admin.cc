#include "service/store/postgres/tenant_admin.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/escaping.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {
namespace {

template <typename T>
std::optional<T> Opt(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<T>();
}

// A quota as the statements take it: text, '' for none.
template <typename T>
std::string QuotaText(const std::optional<T>& v) {
  return v ? std::to_string(*v) : std::string();
}

absl::Status Run(Connection& conn, const std::function<void(pqxx::work&)>& fn) {
  try {
    pqxx::work txn(conn);
    fn(txn);
    txn.commit();
  } catch (const std::exception& e) {
    return StatusFromException(e, &conn);
  }
  return absl::OkStatus();
}

}  // namespace

TenantRecord ReadTenant(const pqxx::row& r) {
  TenantRecord t;
  t.tenant = r[0].as<std::string>();
  t.max_message_bytes = Opt<int64_t>(r[1]);
  t.max_stored_bytes = Opt<int64_t>(r[2]);
  t.max_publish_rate = Opt<int>(r[3]);
  t.max_streams = Opt<int>(r[4]);
  t.stored_bytes = r[5].as<int64_t>();
  t.created_at = absl::FromUnixMicros(r[6].as<int64_t>());
  return t;
}

absl::StatusOr<std::unique_ptr<TenantAdmin>> TenantAdmin::Connect(const std::string& owner_dsn) {
  auto conn = Connection::Open(owner_dsn, /*statement_timeout_ms=*/30000);
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<TenantAdmin>(new TenantAdmin(*std::move(conn)));
}

absl::Status TenantAdmin::CreateTenant(const TenantRecord& t) {
  absl::Status st = Run(*conn_, [&](pqxx::work& txn) {
    txn.exec_params(sql::kCreateTenant, t.tenant, QuotaText(t.max_message_bytes),
                    QuotaText(t.max_stored_bytes), QuotaText(t.max_publish_rate), QuotaText(t.max_streams));
  });
  if (absl::IsAlreadyExists(st)) {
    return absl::AlreadyExistsError(absl::StrCat("tenant \"", t.tenant, "\" already exists"));
  }
  return st;
}

absl::Status TenantAdmin::UpdateQuotas(const TenantRecord& t) {
  bool found = false;
  absl::Status st = Run(*conn_, [&](pqxx::work& txn) {
    found = txn.exec_params(sql::kUpdateTenant, t.tenant, QuotaText(t.max_message_bytes),
                            QuotaText(t.max_stored_bytes), QuotaText(t.max_publish_rate),
                            QuotaText(t.max_streams))
                .affected_rows() == 1;
  });
  if (st.ok() && !found) {
    return absl::NotFoundError(absl::StrCat("tenant \"", t.tenant, "\" not found"));
  }
  return st;
}

absl::StatusOr<TenantRecord> TenantAdmin::GetTenant(const std::string& tenant) {
  std::optional<TenantRecord> out;
  absl::Status st = Run(*conn_, [&](pqxx::work& txn) {
    pqxx::result r = txn.exec_params(sql::kGetTenant, tenant);
    if (!r.empty()) out = ReadTenant(r[0]);
  });
  if (!st.ok()) return st;
  if (!out) return absl::NotFoundError(absl::StrCat("tenant \"", tenant, "\" not found"));
  return *out;
}

absl::StatusOr<std::vector<TenantRecord>> TenantAdmin::ListTenants() {
  std::vector<TenantRecord> out;
  absl::Status st = Run(*conn_, [&](pqxx::work& txn) {
    for (const auto& row : txn.exec(sql::kListTenants)) out.push_back(ReadTenant(row));
  });
  if (!st.ok()) return st;
  return out;
}

absl::Status TenantAdmin::InsertKey(const ApiKeyRecord& k) {
  absl::Status st = Run(*conn_, [&](pqxx::work& txn) {
    txn.exec_params(sql::kInsertApiKey, k.tenant, k.key_id, absl::BytesToHexString(k.secret_sha256),
                    absl::StrJoin(k.scopes, ","), absl::StrJoin(k.topics, ","), k.description);
  });
  if (absl::IsFailedPrecondition(st)) {  // the tenant foreign key
    return absl::NotFoundError(absl::StrCat("tenant \"", k.tenant,
                                            "\" not found; create it with `pgbusd tenant create`"));
  }
  return st;
}

absl::StatusOr<std::vector<ApiKeyRecord>> TenantAdmin::ListKeys(const std::string& tenant) {
  std::vector<ApiKeyRecord> out;
  absl::Status st = Run(*conn_, [&](pqxx::work& txn) {
    for (const auto& row : txn.exec_params(sql::kListApiKeys, tenant)) {
      ApiKeyRecord k;
      k.tenant = row[0].as<std::string>();
      k.key_id = row[1].as<std::string>();
      k.scopes = absl::StrSplit(row[2].as<std::string>(), ',');
      k.topics = absl::StrSplit(row[3].as<std::string>(), ',');
      k.description = row[4].as<std::string>();
      k.created_at = absl::FromUnixMicros(row[5].as<int64_t>());
      if (!row[6].is_null()) {
        k.revoked = true;
        k.revoked_at = absl::FromUnixMicros(row[6].as<int64_t>());
      }
      out.push_back(std::move(k));
    }
  });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<std::string> TenantAdmin::RevokeKey(const std::string& key_id) {
  std::optional<std::string> tenant;
  absl::Status st = Run(*conn_, [&](pqxx::work& txn) {
    pqxx::result r = txn.exec_params(sql::kRevokeApiKey, key_id);
    if (!r.empty()) tenant = r[0][0].as<std::string>();
  });
  if (!st.ok()) return st;
  if (!tenant) return absl::NotFoundError(absl::StrCat("API key \"", key_id, "\" not found"));
  return *tenant;
}

}  // namespace pgbus::store::postgres
