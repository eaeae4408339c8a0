// The migrator against the fixture's cluster (already migrated once by the
// fixture itself, with the same code).
#include "service/store/postgres/migrator.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>

#include <pqxx/pqxx>

#include "tests/support/harness.h"

namespace pgbus::store::postgres {
namespace {

int AppliedRows() {
  pqxx::connection conn(testing::OwnerDsn());
  pqxx::nontransaction q(conn);
  return q.exec1("SELECT count(*) FROM pgbus.schema_migrations")[0].as<int>();
}

TEST(Migrator, SecondRunAppliesNothing) {
  auto applied = Migrate(testing::OwnerDsn(), "pgbus_app");
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(*applied, 0);
  EXPECT_EQ(AppliedRows(), static_cast<int>(EmbeddedMigrations().size()));
}

// Who may call each function of the schema, besides its owner: PUBLIC may
// call none, pgbusd's role exactly those its statements call. A new
// function fails this test until it is listed here, deliberately.
TEST(Migrator, FunctionsAreCallableOnlyByTheRolesThatNeedThem) {
  const std::map<std::string, std::string> expected = {
      {"pgbus.account_stored_bytes()", ""},  // trigger: needs no grant
      {"pgbus.api_key_lookup(text)", "pgbus_app"},
      {"pgbus.cascade_delete()", ""},  // trigger
      {"pgbus.fold_counters()", "pgbus_app"},
      {"pgbus.fold_tenant_usage()", "pgbus_app"},
      {"pgbus.isolate_tenant_table(regclass)", ""},  // migrations only
      {"pgbus.reap_expired(integer)", "pgbus_app"},
      {"pgbus.refresh_statistics()", "pgbus_app"},
      {"pgbus.reject_handle(bigint)", "pgbus_app"},
      {"pgbus.reject_oversize(text,bigint,bigint)", "pgbus_app"},
      {"pgbus.reject_stored_bytes(bigint,bigint,bigint)", "pgbus_app"},
      {"pgbus.subscription_backlog(integer)", "pgbus_app"},
  };
  pqxx::connection conn(testing::OwnerDsn());
  pqxx::nontransaction q(conn);
  std::map<std::string, std::string> actual;
  for (const auto& row : q.exec(
           "SELECT p.oid::regprocedure::text, coalesce(string_agg("
           "    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, ','"
           "    ORDER BY a.grantee::regrole::text) FILTER (WHERE a.grantee <> p.proowner), '')"
           " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
           " CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
           " WHERE n.nspname = 'pgbus' AND a.privilege_type = 'EXECUTE'"
           " GROUP BY p.oid")) {
    actual[row[0].as<std::string>()] = row[1].as<std::string>();
  }
  EXPECT_EQ(actual, expected);

  // And Postgres refuses: a role that may use the schema but was granted
  // nothing cannot run the reaper.
  pqxx::connection su(testing::SuperuserDsn());
  pqxx::work w(su);
  // Migrate calls of tests running beside this one grant on the same schema.
  w.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
  w.exec("CREATE ROLE pgbus_test_nobody NOLOGIN");
  w.exec("GRANT USAGE ON SCHEMA pgbus TO pgbus_test_nobody");
  w.exec("SET LOCAL ROLE pgbus_test_nobody");
  try {
    w.exec("SELECT pgbus.reap_expired(1)");
    ADD_FAILURE() << "a role with no grant ran pgbus.reap_expired";
  } catch (const pqxx::insufficient_privilege&) {
  }
}

TEST(Migrator, ReplicasStartingTogetherTakeTurns) {
  // A fresh database, migrated by four migrators at once.
  std::string dsn = testing::CreateEmptyDatabase("pgbus_race", "pgbus_owner");
  std::vector<absl::StatusOr<int>> results(4, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { results[i] = Migrate(dsn, "pgbus_app"); });
  }
  for (auto& t : threads) t.join();
  int total = 0;
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    total += *r;
  }
  EXPECT_EQ(total, static_cast<int>(EmbeddedMigrations().size()))
      << "each migration must be applied exactly once";
}

TEST(Migrator, RefusesAnAppliedMigrationThatChanged) {
  std::vector<MigrationFile> edited = EmbeddedMigrations();
  std::string sql = std::string(edited[0].sql) + "\n-- edited afterwards\n";
  edited[0].sql = sql.c_str();
  auto r = Migrate(testing::OwnerDsn(), "pgbus_app", edited);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find(edited[0].name), absl::string_view::npos) << r.status();
}

TEST(Migrator, UnreachableDatabaseIsUnavailableWithoutLeakingTheDsn) {
  auto r = Migrate("host=/nonexistent-dir user=secretuser password=hunter2 dbname=x", "pgbus_app");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message().find("hunter2"), absl::string_view::npos) << r.status();
}

}  // namespace
}  // namespace pgbus::store::postgres
