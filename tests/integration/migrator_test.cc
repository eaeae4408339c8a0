// The migrator against the fixture's cluster (already migrated once by the
// fixture itself, with the same code).
#include "service/store/postgres/migrator.h"

#include <gtest/gtest.h>

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
