// TenantTransaction: BEGIN and the tenant in one round trip, and what a
// pooled connection looks like afterwards.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "service/store/postgres/connection.h"
#include "tests/support/harness.h"

namespace pgbus::store::postgres {
namespace {

std::string Setting(Connection& conn) {
  pqxx::nontransaction q(conn);
  return q.exec1("SELECT coalesce(current_setting('pgbus.tenant_id', true), '')")[0]
      .as<std::string>();
}

TEST(TenantTransaction, SetsTheTenantForItselfOnly) {
  auto conn = Connection::Open(testing::AppDsn(), 10000);
  ASSERT_TRUE(conn.ok()) << conn.status();
  {
    TenantTransaction tx(**conn);
    // Escaped, whatever the name holds.
    ASSERT_TRUE(tx.Begin("it's; DROP TABLE x", /*async_commit=*/false).ok());
    EXPECT_EQ(Setting(**conn), "it's; DROP TABLE x");
    ASSERT_TRUE(tx.Commit().ok());
  }
  EXPECT_EQ(Setting(**conn), "") << "the tenant outlived its transaction";
}

TEST(TenantTransaction, RollsBackUnlessCommitted) {
  auto conn = Connection::Open(testing::AppDsn(), 10000);
  ASSERT_TRUE(conn.ok()) << conn.status();
  {
    TenantTransaction tx(**conn);
    ASSERT_TRUE(tx.Begin("t1", false).ok());
    pqxx::nontransaction q(**conn);
    q.exec("CREATE TEMP TABLE scratch (x int)");
  }  // not committed
  pqxx::nontransaction q(**conn);
  EXPECT_EQ(q.exec1("SELECT count(*) FROM pg_tables WHERE tablename = 'scratch'")[0].as<int>(),
            0);
}

// An error that nobody noticed must not pass for a commit: Postgres answers
// COMMIT of a failed transaction with ROLLBACK, and so does this.
TEST(TenantTransaction, ACommitThatPostgresRolledBackIsAborted) {
  auto conn = Connection::Open(testing::AppDsn(), 10000);
  ASSERT_TRUE(conn.ok()) << conn.status();
  TenantTransaction tx(**conn);
  ASSERT_TRUE(tx.Begin("t1", false).ok());
  {
    pqxx::nontransaction q(**conn);
    EXPECT_THROW(q.exec("SELECT 1/0"), pqxx::sql_error);
  }
  EXPECT_EQ(tx.Commit().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Setting(**conn), "");
}

}  // namespace
}  // namespace pgbus::store::postgres
