// TenantTransaction: BEGIN and the tenant in one round trip (or pipelined
// with the statements), and what a pooled connection looks like afterwards.
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

// Start + Exec(..., commit): BEGIN, the tenant, the statements and COMMIT in
// one pipeline; their results come back in order, and the tenant is gone
// afterwards.
TEST(TenantTransaction, PipelinedStatementsCommitTogether) {
  auto conn = Connection::Open(testing::AppDsn(), 10000);
  ASSERT_TRUE(conn.ok()) << conn.status();
  {
    pqxx::nontransaction q(**conn);
    q.exec("CREATE TEMP TABLE piped (x int)");
  }
  ASSERT_TRUE((*conn)->PrepareRaw("t_insert", "INSERT INTO piped VALUES ($1) RETURNING x", {kInt4})
                  .ok());
  ASSERT_TRUE((*conn)
                  ->PrepareRaw("t_tenant", "SELECT current_setting('pgbus.tenant_id')", {})
                  .ok());
  const std::string one = EncodeInt4(1), two = EncodeInt4(2);
  {
    TenantTransaction tx(**conn);
    ASSERT_TRUE(tx.Start("t1", /*async_commit=*/false).ok());
    tx.Queue(Statement{"t_insert", {Param::Binary(one)}});
    auto res = tx.Exec({Statement{"t_insert", {Param::Binary(two)}}, Statement{"t_tenant", {}}},
                       /*commit=*/true);
    ASSERT_TRUE(res.ok()) << res.status();
    ASSERT_EQ(res->size(), 2u);  // the queued statement's result is not returned
    EXPECT_EQ(BinaryRow((*res)[0].get(), 0).Int4(0), 2);
    EXPECT_EQ(BinaryRow((*res)[1].get(), 0).Bytes(0), "t1");
  }
  {
    pqxx::nontransaction q(**conn);
    EXPECT_EQ(q.exec1("SELECT count(*) FROM piped")[0].as<int>(), 2);
  }
  EXPECT_EQ(Setting(**conn), "");
}

// A failing statement in a pipeline: its error is returned, nothing after it
// runs (not the COMMIT), the destructor rolls back, and the session serves
// the next caller.
TEST(TenantTransaction, APipelinedErrorRollsEverythingBack) {
  auto conn = Connection::Open(testing::AppDsn(), 10000);
  ASSERT_TRUE(conn.ok()) << conn.status();
  {
    pqxx::nontransaction q(**conn);
    q.exec("CREATE TEMP TABLE piped (x int)");
  }
  ASSERT_TRUE((*conn)->PrepareRaw("t_insert", "INSERT INTO piped VALUES ($1)", {kInt4}).ok());
  ASSERT_TRUE((*conn)->PrepareRaw("t_divide", "SELECT 1 / $1", {kInt4}).ok());
  const std::string one = EncodeInt4(1), zero = EncodeInt4(0);
  {
    TenantTransaction tx(**conn);
    ASSERT_TRUE(tx.Start("t1", false).ok());
    auto res = tx.Exec({Statement{"t_insert", {Param::Binary(one)}},
                        Statement{"t_divide", {Param::Binary(zero)}},
                        Statement{"t_insert", {Param::Binary(one)}}},
                       /*commit=*/true);
    // A data exception in a statement pgbusd built is its own bug: INTERNAL.
    EXPECT_EQ(res.status().code(), absl::StatusCode::kInternal) << res.status();
    EXPECT_NE(res.status().message().find("division by zero"), std::string::npos)
        << res.status();
  }
  EXPECT_FALSE((*conn)->broken);
  {
    pqxx::nontransaction q(**conn);
    EXPECT_EQ(q.exec1("SELECT count(*) FROM piped")[0].as<int>(), 0);
  }
  EXPECT_EQ(Setting(**conn), "");
}

}  // namespace
}  // namespace pgbus::store::postgres
