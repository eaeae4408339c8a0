// Transaction: BEGIN, the tenant, the statements and COMMIT pipelined,
// typed binary parameters and results, and what a pooled connection looks
// like afterwards.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "service/store/postgres/connection.h"
#include "tests/support/harness.h"

namespace pgbus::store::postgres {
namespace {

constexpr char kTenantSetting[] = "SELECT current_setting('pgbus.tenant_id')";
constexpr char kCreateScratch[] = "CREATE TEMP TABLE scratch (x int)";
constexpr char kInsert[] = "INSERT INTO piped VALUES ($1) RETURNING x";
constexpr char kDivide[] = "SELECT 1 / $1";
constexpr char kEcho[] = "SELECT $1::int8, $2::int4, $3::bool, $4::text, $5::bytea, $6::int8[],"
                         " $7::text[], $8::int8, now()";

std::string Setting(Connection& conn) {
  pqxx::nontransaction q(conn);
  return q.exec1("SELECT coalesce(current_setting('pgbus.tenant_id', true), '')")[0]
      .as<std::string>();
}

std::unique_ptr<Connection> Open() {
  auto conn = Connection::Open(testing::AppDsn(), 10000);
  EXPECT_TRUE(conn.ok()) << conn.status();
  return conn.ok() ? *std::move(conn) : nullptr;
}

void CreatePiped(Connection& conn) {
  pqxx::nontransaction q(conn);
  q.exec("CREATE TEMP TABLE piped (x int)");
}

// Every pgbusd session runs without JIT compilation (Connection::Open).
TEST(Transaction, SessionsNeverJitCompile) {
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  pqxx::nontransaction q(*conn);
  EXPECT_EQ(q.exec1("SHOW jit")[0].as<std::string>(), "off");
}

TEST(Transaction, SetsTheTenantForItselfOnly) {
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  {
    // A parameter, whatever the name holds.
    Transaction tx(*conn, "it's; DROP TABLE x");
    auto r = tx.RunAndCommit(kTenantSetting);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)[0].Text(), "it's; DROP TABLE x");
  }
  EXPECT_EQ(Setting(*conn), "") << "the tenant outlived its transaction";
}

TEST(Transaction, RollsBackUnlessCommitted) {
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  {
    Transaction tx(*conn, "t1");
    ASSERT_TRUE(tx.Run(kCreateScratch).ok());
  }  // not committed
  pqxx::nontransaction q(*conn);
  EXPECT_EQ(q.exec1("SELECT count(*) FROM pg_tables WHERE tablename = 'scratch'")[0].as<int>(),
            0);
}

// A statement that failed leaves the transaction failed: Postgres answers
// its COMMIT with ROLLBACK, and so does Commit().
TEST(Transaction, ACommitThatPostgresRolledBackIsAborted) {
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  CreatePiped(*conn);
  Transaction tx(*conn, "t1");
  ASSERT_TRUE(tx.Run(kInsert, 1).ok());
  EXPECT_FALSE(tx.Run(kDivide, 0).ok());
  EXPECT_EQ(tx.Commit().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Setting(*conn), "");
  pqxx::nontransaction q(*conn);
  EXPECT_EQ(q.exec1("SELECT count(*) FROM piped")[0].as<int>(), 0);
}

// Add + SendAndCommit: BEGIN, the tenant, the statements and COMMIT in one
// pipeline; each statement's rows come back in the order added, and the
// tenant is gone afterwards.
TEST(Transaction, PipelinedStatementsCommitTogether) {
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  CreatePiped(*conn);
  {
    Transaction tx(*conn, "t1");
    const size_t one = tx.Add(kInsert, 1);
    const size_t two = tx.Add(kInsert, 2);
    const size_t tenant = tx.Add(kTenantSetting);
    auto res = tx.SendAndCommit();
    ASSERT_TRUE(res.ok()) << res.status();
    ASSERT_EQ(res->size(), 3u);
    EXPECT_EQ((*res)[one][0].Int4(), 1);
    EXPECT_EQ((*res)[two][0].Int4(), 2);
    EXPECT_EQ((*res)[tenant][0].Text(), "t1");
  }
  {
    pqxx::nontransaction q(*conn);
    EXPECT_EQ(q.exec1("SELECT count(*) FROM piped")[0].as<int>(), 2);
  }
  EXPECT_EQ(Setting(*conn), "");
}

// A failing statement in a pipeline: its error is returned, nothing after it
// runs (not the COMMIT), the destructor rolls back, and the session serves
// the next caller.
TEST(Transaction, APipelinedErrorRollsEverythingBack) {
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  CreatePiped(*conn);
  {
    Transaction tx(*conn, "t1");
    tx.Add(kInsert, 1);
    tx.Add(kDivide, 0);
    tx.Add(kInsert, 1);
    auto res = tx.SendAndCommit();
    // A data exception in a statement pgbusd built is its own bug: INTERNAL.
    EXPECT_EQ(res.status().code(), absl::StatusCode::kInternal) << res.status();
    EXPECT_NE(res.status().message().find("division by zero"), std::string::npos)
        << res.status();
  }
  EXPECT_FALSE(conn->broken);
  {
    pqxx::nontransaction q(*conn);
    EXPECT_EQ(q.exec1("SELECT count(*) FROM piped")[0].as<int>(), 0);
  }
  EXPECT_EQ(Setting(*conn), "");
}

// Each C++ type binds as its Postgres type and reads back the same, NULLs
// included; a statement is prepared once per session and parameter types.
TEST(Transaction, ValuesRoundTripThroughTheirTypes) {
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  ArrayBuilder ids(kInt8);
  ids.Add(EncodeInt8(-5));
  ids.Add(EncodeInt8(1LL << 40));
  ArrayBuilder names(kText);
  names.Add("a,b");
  names.Add("");
  const std::string bytes("\0\xff\x01", 3);
  Transaction tx(*conn, NoTenant{});
  auto res = tx.RunAndCommit(kEcho, int64_t{1} << 40, int32_t{-7}, true, std::string("héllo"),
                             Bytea{bytes}, std::move(ids), std::move(names),
                             std::optional<int64_t>());
  ASSERT_TRUE(res.ok()) << res.status();
  RowReader row = (*res)[0];
  EXPECT_EQ(row.Int8(), int64_t{1} << 40);
  EXPECT_EQ(row.Int4(), -7);
  EXPECT_TRUE(row.Bool());
  EXPECT_EQ(row.Text(), "héllo");
  EXPECT_EQ(row.Bytes(), bytes);
  row.Skip();  // int8[]: no reader needed by pgbusd
  EXPECT_EQ(row.TextArray(), (std::vector<std::string>{"a,b", ""}));
  EXPECT_EQ(row.Maybe(&RowReader::Int8), std::nullopt);
  EXPECT_LT(absl::AbsDuration(row.Timestamp() - absl::Now()), absl::Minutes(1));

  auto first = conn->Prepared(kEcho, {kInt8});
  auto again = conn->Prepared(kEcho, {kInt8});
  auto other = conn->Prepared(kEcho, {kText});
  ASSERT_TRUE(first.ok() && again.ok() && other.ok());
  EXPECT_EQ(*first, *again);
  EXPECT_NE(*first, *other);
}

}  // namespace
}  // namespace pgbus::store::postgres
