#include "service/store/postgres/migrator.h"

#include <cstdlib>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "service/common/sha256.h"
#include "service/obs/log.h"
#include "service/store/postgres/connection.h"

namespace pgbus::store::postgres {
namespace {

constexpr char kCreateLedger[] =
    "CREATE SCHEMA IF NOT EXISTS pgbus;"
    "CREATE TABLE IF NOT EXISTS pgbus.schema_migrations ("
    "  version int PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
    "  applied_at timestamptz NOT NULL DEFAULT now())";
// The functions pgbusd's statements call, granted to its role (migration
// 0015 takes EXECUTE from PUBLIC): the reaper and the ledger folds (SECURITY
// DEFINER, each bounded to what it may delete or fold), the API key lookup
// (SECURITY DEFINER: keys are read before a tenant is known), and the
// helpers that raise clear errors inside the publish statement.
constexpr char kAppFunctions[] =
    "pgbus.reap_expired(int), pgbus.fold_counters(), pgbus.fold_tenant_usage(), "
    "pgbus.api_key_lookup(text), pgbus.reject_oversize(text, bigint, bigint), "
    "pgbus.reject_handle(bigint), pgbus.reject_stored_bytes(bigint, bigint, bigint), "
    "pgbus.refresh_statistics(), pgbus.subscription_backlog(int)";
constexpr char kAppliedMigrations[] = "SELECT version, name, sha256 FROM pgbus.schema_migrations";
constexpr char kRecordMigration[] =
    "INSERT INTO pgbus.schema_migrations (version, name, sha256) VALUES ($1, $2, $3)";

int VersionOf(const char* name) {
  int v = 0;
  absl::string_view n(name);
  absl::SimpleAtoi(n.substr(0, n.find('_')), &v);
  return v;
}

std::string Sha256Hex(absl::string_view data) {
  return absl::BytesToHexString(pgbus::Sha256(data));
}

}  // namespace

int LatestVersion(const std::vector<MigrationFile>& files) {
  int latest = 0;
  for (const auto& f : files) latest = std::max(latest, VersionOf(f.name));
  return latest;
}

absl::StatusOr<int> Migrate(const std::string& dsn, const std::string& app_role,
                            const std::vector<MigrationFile>& files) {
  auto conn_or = Connection::Open(dsn, /*statement_timeout_ms=*/0);
  if (!conn_or.ok()) return conn_or.status();
  Connection& conn = **conn_or;
  int applied = 0;
  try {
    // A session-level advisory lock: it outlives the transactions below
    // and is released by unlock or by closing the connection.
    std::map<int, std::pair<std::string, std::string>> done;
    {
      pqxx::nontransaction session(conn);
      session.exec_params("SELECT pg_advisory_lock($1)", kMigrationLockKey);
      session.exec(kCreateLedger);
      for (const auto& row : session.exec(kAppliedMigrations)) {
        done[row[0].as<int>()] = {row[1].as<std::string>(), row[2].as<std::string>()};
      }
    }
    for (const auto& [version, entry] : done) {
      if (version > LatestVersion(files)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the database has migration ", version, " (", entry.first,
            ") that this pgbusd does not know: run a newer pgbusd"));
      }
    }
    for (const MigrationFile& f : files) {
      int version = VersionOf(f.name);
      std::string digest = Sha256Hex(f.sql);
      if (auto it = done.find(version); it != done.end()) {
        if (it->second.second != digest) {
          return absl::FailedPreconditionError(absl::StrCat(
              "migration ", f.name, " was changed after it was applied; add a new "
              "migration instead of editing an applied one"));
        }
        continue;
      }
      pqxx::work txn(conn);
      txn.exec(f.sql);
      txn.exec_params(kRecordMigration, version, f.name, digest);
      txn.commit();
      ++applied;
      obs::Info("migration_applied", {{"version", std::to_string(version)}, {"name", f.name}});
    }
    // Grants are re-applied every time: cheap, and they follow new tables.
    // The role name is an identifier, which cannot be a parameter; quote it.
    std::string role = conn.quote_name(app_role);
    {
      pqxx::work grants(conn);
      grants.exec(absl::StrCat("GRANT USAGE ON SCHEMA pgbus TO ", role));
      grants.exec(absl::StrCat(
          "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgbus TO ", role));
      grants.exec(absl::StrCat(
          "REVOKE INSERT, UPDATE, DELETE ON pgbus.schema_migrations FROM ", role));
      grants.exec(absl::StrCat("GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgbus TO ", role));
      grants.exec(absl::StrCat("GRANT EXECUTE ON FUNCTION ", kAppFunctions, " TO ", role));
      grants.commit();
    }
    pqxx::nontransaction unlock(conn);
    unlock.exec_params("SELECT pg_advisory_unlock($1)", kMigrationLockKey);
  } catch (const std::exception& e) {
    return StatusFromException(e, &conn);
  }
  return applied;
}

}  // namespace pgbus::store::postgres
