// PgStore (service/store/postgres/pg_store.h), in part:
// Opening the store, the directory lookups authentication makes, and the
// maintenance calls (reaper, statistics, health, backlog metrics).
#include "service/store/postgres/pg_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/escaping.h"
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
  int version = 0;
  try {
    pqxx::nontransaction q(*conn);
    pqxx::result r = q.exec(
        "SELECT coalesce(max(version), 0) FROM pgbus.schema_migrations");
    version = r[0][0].as<int>();
  } catch (const pqxx::undefined_table&) {
    return absl::FailedPreconditionError(
        "the pgbus schema is missing: run `pgbusd migrate` with the owner role first");
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
  if (version < LatestVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the database schema is at version ", version, ", this pgbusd needs ",
        LatestVersion(), ": run `pgbusd migrate` first"));
  }
  return store;
}

absl::StatusOr<std::optional<ApiKeyRecord>> PgStore::LookupApiKey(const std::string& key_id) {
  std::optional<ApiKeyRecord> out;
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  try {
    pqxx::work txn(*conn);  // no tenant yet: the function returns one key
    pqxx::result r = txn.exec_params(sql::kLookupApiKey, key_id);
    txn.commit();
    if (!r.empty()) {
      ApiKeyRecord k;
      k.key_id = key_id;
      k.tenant = r[0][0].as<std::string>();
      k.secret_sha256 = absl::HexStringToBytes(r[0][1].as<std::string>());
      k.scopes = absl::StrSplit(r[0][2].as<std::string>(), ',');
      k.topics = absl::StrSplit(r[0][3].as<std::string>(), ',');
      k.revoked = r[0][4].as<bool>();
      out = std::move(k);
    }
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
  return out;
}

absl::StatusOr<std::optional<TenantRecord>> PgStore::LookupTenant(const std::string& tenant) {
  std::optional<TenantRecord> out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    pqxx::result r = txn.exec(sql::kLookupTenant);
    if (!r.empty()) out = ReadTenant(r[0]);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PgStore::EnsureTenant(const std::string& tenant) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    txn.exec_params(sql::kEnsureTenant, tenant);
    return absl::OkStatus();
  });
}

absl::StatusOr<int> PgStore::ReapExpired(int batch) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  try {
    pqxx::work txn(*conn);  // no tenant: the function works across tenants
    int n = txn.exec_params(sql::kReapExpired, batch)[0][0].as<int>();
    txn.exec(sql::kFoldTenantUsage);
    txn.exec(sql::kFoldCounters);
    txn.commit();
    return n;
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
}

absl::StatusOr<std::vector<obs::SubscriptionBacklog>> PgStore::SubscriptionBacklog(
    int max_rows) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  std::vector<obs::SubscriptionBacklog> out;
  try {
    // Its own transaction: the function sets the tenant per pass, locally.
    pqxx::work txn(*conn);
    for (const auto& row : txn.exec_params(sql::kSubscriptionBacklog, max_rows)) {
      out.push_back(obs::SubscriptionBacklog{row[0].as<std::string>(),
                                             row[1].as<std::string>(), row[2].as<int64_t>(),
                                             row[3].as<int64_t>(), row[4].as<double>()});
    }
    txn.commit();
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
  return out;
}

absl::Status PgStore::Ping() {
  if (ping_conn_ == nullptr || ping_conn_->broken) {
    ping_conn_.reset();
    ASSIGN_OR_RETURN(ping_conn_, Connection::Open(options_.dsn, /*statement_timeout_ms=*/5000));
  }
  try {
    pqxx::nontransaction q(*ping_conn_);
    q.exec("SELECT 1");
    return absl::OkStatus();
  } catch (const std::exception& e) {
    ping_conn_->broken = true;
    return absl::UnavailableError(absl::StrCat("Postgres does not answer: ", e.what()));
  }
}

absl::StatusOr<int> PgStore::RefreshStatistics() {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  try {
    // Its own transaction: ANALYZE holds its lock until the commit.
    pqxx::work txn(*conn);
    int n = txn.exec(sql::kRefreshStatistics)[0][0].as<int>();
    txn.commit();
    return n;
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
}

}  // namespace pgbus::store::postgres
