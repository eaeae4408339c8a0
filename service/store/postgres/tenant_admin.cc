#include "service/store/postgres/tenant_admin.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "service/common/status_macros.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {
namespace {

ArrayBuilder TextArray(const std::vector<std::string>& items) {
  ArrayBuilder a(kText);
  for (const std::string& item : items) a.Add(item);
  return a;
}

}  // namespace

TenantRecord ReadTenant(RowReader& row) {
  TenantRecord t;
  t.tenant = row.Text();
  t.max_message_bytes = row.Maybe(&RowReader::Int8);
  t.max_stored_bytes = row.Maybe(&RowReader::Int8);
  t.max_publish_rate = row.Maybe(&RowReader::Int4);
  t.max_streams = row.Maybe(&RowReader::Int4);
  t.stored_bytes = row.Int8();
  t.created_at = absl::FromUnixMicros(row.Int8());
  return t;
}

absl::StatusOr<std::unique_ptr<TenantAdmin>> TenantAdmin::Connect(const std::string& owner_dsn) {
  auto conn = Connection::Open(owner_dsn, /*statement_timeout_ms=*/30000);
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<TenantAdmin>(new TenantAdmin(*std::move(conn)));
}

absl::Status TenantAdmin::CreateTenant(const TenantRecord& t) {
  Transaction tx(*conn_, NoTenant{});
  tx.Add(sql::kCreateTenant, t.tenant, t.max_message_bytes, t.max_stored_bytes,
         t.max_publish_rate, t.max_streams);
  absl::Status st = tx.Commit();
  if (absl::IsAlreadyExists(st)) {
    return absl::AlreadyExistsError(absl::StrCat("tenant \"", t.tenant, "\" already exists"));
  }
  return st;
}

absl::Status TenantAdmin::UpdateQuotas(const TenantRecord& t) {
  Transaction tx(*conn_, NoTenant{});
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kUpdateTenant, t.tenant, t.max_message_bytes,
                                           t.max_stored_bytes, t.max_publish_rate,
                                           t.max_streams));
  if (r.empty()) return absl::NotFoundError(absl::StrCat("tenant \"", t.tenant, "\" not found"));
  return absl::OkStatus();
}

absl::StatusOr<TenantRecord> TenantAdmin::GetTenant(const std::string& tenant) {
  Transaction tx(*conn_, NoTenant{});
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kGetTenant, tenant));
  if (r.empty()) return absl::NotFoundError(absl::StrCat("tenant \"", tenant, "\" not found"));
  RowReader row = r[0];
  return ReadTenant(row);
}

absl::StatusOr<std::vector<TenantRecord>> TenantAdmin::ListTenants() {
  Transaction tx(*conn_, NoTenant{});
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kListTenants));
  return r.Map(ReadTenant);
}

absl::Status TenantAdmin::InsertKey(const ApiKeyRecord& k) {
  Transaction tx(*conn_, NoTenant{});
  tx.Add(sql::kInsertApiKey, k.tenant, k.key_id, Bytea{k.secret_sha256}, TextArray(k.scopes),
         TextArray(k.topics), k.description);
  absl::Status st = tx.Commit();
  if (absl::IsFailedPrecondition(st)) {  // the tenant foreign key
    return absl::NotFoundError(absl::StrCat("tenant \"", k.tenant,
                                            "\" not found; create it with `pgbusd tenant create`"));
  }
  return st;
}

absl::StatusOr<std::vector<ApiKeyRecord>> TenantAdmin::ListKeys(const std::string& tenant) {
  Transaction tx(*conn_, NoTenant{});
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kListApiKeys, tenant));
  return r.Map([](RowReader& row) {
    ApiKeyRecord k;
    k.tenant = row.Text();
    k.key_id = row.Text();
    k.scopes = row.TextArray();
    k.topics = row.TextArray();
    k.description = row.Text();
    k.created_at = absl::FromUnixMicros(row.Int8());
    if (auto revoked = row.Maybe(&RowReader::Int8)) {
      k.revoked = true;
      k.revoked_at = absl::FromUnixMicros(*revoked);
    }
    return k;
  });
}

absl::StatusOr<std::string> TenantAdmin::RevokeKey(const std::string& key_id) {
  Transaction tx(*conn_, NoTenant{});
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kRevokeApiKey, key_id));
  if (r.empty()) return absl::NotFoundError(absl::StrCat("API key \"", key_id, "\" not found"));
  return r[0].Text();
}

}  // namespace pgbus::store::postgres
