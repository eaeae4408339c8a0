// PgStore (service/store/postgres/pg_store.h), in part:
// Opening the store, the directory lookups authentication makes, and the
// maintenance calls (reaper, statistics, health, backlog metrics).
#include "service/store/postgres/pg_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"
#include "service/store/postgres/migrator.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"
#include "service/store/postgres/tenant_admin.h"

namespace pgbus::store::postgres {

PgStore::PgStore(const PgStoreOptions& options)
    : options_(options),
      pool_(options.dsn, options.pool_size, options.statement_timeout_ms) {}

PgStore::~PgStore() { StopListening(); }

absl::StatusOr<std::unique_ptr<PgStore>> PgStore::Open(const PgStoreOptions& options) {
  std::unique_ptr<PgStore> store(new PgStore(options));
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, store->pool_.Acquire());
  Transaction tx(*conn, NoTenant{});
  ASSIGN_OR_RETURN(Rows migrated, tx.Run(sql::kSchemaMigrated));
  if (!migrated[0].Bool()) {
    return absl::FailedPreconditionError(
        "the pgbus schema is missing: run `pgbusd migrate` with the owner role first");
  }
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kSchemaVersion));
  const int version = r[0].Int4();
  if (version < LatestVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the database schema is at version ", version, ", this pgbusd needs ",
        LatestVersion(), ": run `pgbusd migrate` first"));
  }
  return store;
}

absl::StatusOr<std::optional<ApiKeyRecord>> PgStore::LookupApiKey(const std::string& key_id) {
  // No tenant yet: the function returns one key.
  ASSIGN_OR_RETURN(Rows r, RunOne(NoTenant{}, sql::kLookupApiKey, key_id));
  if (r.empty()) return std::nullopt;
  RowReader row = r[0];
  ApiKeyRecord k;
  k.key_id = key_id;
  k.tenant = row.Text();
  k.secret_sha256 = row.Bytes();
  k.scopes = row.TextArray();
  k.topics = row.TextArray();
  k.revoked = row.Bool();
  return k;
}

absl::StatusOr<std::optional<TenantRecord>> PgStore::LookupTenant(const std::string& tenant) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kLookupTenant));
  if (r.empty()) return std::nullopt;
  RowReader row = r[0];
  return ReadTenant(row);
}

absl::Status PgStore::EnsureTenant(const std::string& tenant) {
  return RunOne(tenant, sql::kEnsureTenant, tenant).status();
}

absl::StatusOr<int> PgStore::ReapExpired(int batch) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, NoTenant{});  // the functions work across tenants
  const size_t reaped = tx.Add(sql::kReapExpired, batch);
  tx.Add(sql::kFoldTenantUsage);
  tx.Add(sql::kFoldCounters);
  ASSIGN_OR_RETURN(std::vector<Rows> r, tx.SendAndCommit());
  return r[reaped][0].Int4();
}

absl::StatusOr<std::vector<obs::SubscriptionBacklog>> PgStore::SubscriptionBacklog(
    int max_rows) {
  // Its own transaction: the function sets the tenant per pass, locally.
  ASSIGN_OR_RETURN(Rows r, RunOne(NoTenant{}, sql::kSubscriptionBacklog, max_rows));
  return r.Map([](RowReader& row) {
    obs::SubscriptionBacklog b;
    b.tenant = row.Text();
    b.subscription = row.Text();
    b.ready = row.Int8();
    b.in_flight = row.Int8();
    b.oldest_unacked_seconds = row.Float8();
    return b;
  });
}

absl::Status PgStore::Ping() {
  if (ping_conn_ == nullptr || ping_conn_->broken) {
    ping_conn_.reset();
    ASSIGN_OR_RETURN(ping_conn_, Connection::Open(options_.dsn, /*statement_timeout_ms=*/5000));
  }
  Transaction tx(*ping_conn_, NoTenant{});
  absl::Status st = tx.RunAndCommit(sql::kPing).status();
  if (st.ok()) return st;
  ping_conn_->broken = true;
  return absl::UnavailableError(absl::StrCat("Postgres does not answer: ", st.message()));
}

absl::StatusOr<int> PgStore::RefreshStatistics() {
  // Its own transaction: ANALYZE holds its lock until the commit.
  ASSIGN_OR_RETURN(Rows r, RunOne(NoTenant{}, sql::kRefreshStatistics));
  return r[0].Int4();
}

}  // namespace pgbus::store::postgres
