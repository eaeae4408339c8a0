// Every statement of service/store/postgres/sql/ is prepared against the
// migrated schema, as the role that runs it: a typo, a dropped column, a
// function or type that does not exist fails here, not in a call in
// production (issue 13). (Privileges are checked when a statement runs, so
// the integration tests cover those.)
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "service/store/postgres/sql.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

namespace sql = store::postgres::sql;

std::string Dsn(sql::Role role) {
  return role == sql::Role::kOwner ? testing::OwnerDsn() : testing::AppDsn();
}

TEST(Statements, EveryStatementPreparesAsItsRole) {
  for (const sql::Statement& s : sql::kAll) {
    PGconn* conn = PQconnectdb(Dsn(s.role).c_str());
    ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
    PGresult* r = PQprepare(conn, "", s.text, 0, nullptr);
    EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK)
        << s.name << ": " << PQresultErrorMessage(r) << "\n" << s.text;
    PQclear(r);
    PQfinish(conn);
  }
}

// pgbusd's transactions rule out sequential, bitmap, hash and merge plans
// (sql/set_tenant.sql). Where a statement has no other plan, Postgres still
// uses the ruled-out one at a cost of 1e10, which also sends it through JIT
// compilation (jit_above_cost) on every execution.
TEST(Statements, EveryAppStatementHasAPlanThePinnedSettingsAllow) {
  PGconn* conn = PQconnectdb(testing::AppDsn().c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  auto run = [conn](const std::string& q) {
    PGresult* r = PQexec(conn, q.c_str());
    std::string out;
    for (int i = 0; i < PQntuples(r); ++i) absl::StrAppend(&out, PQgetvalue(r, i, 0), "\n");
    if (PQresultStatus(r) == PGRES_FATAL_ERROR) out = PQresultErrorMessage(r);
    PQclear(r);
    return out;
  };
  // The generic plan: what a session runs after the first executions.
  run("SET plan_cache_mode = force_generic_plan");
  int explained = 0;
  for (const sql::Statement& s : sql::kAll) {
    if (s.role != sql::Role::kApp) continue;
    PGresult* p = PQprepare(conn, "s", s.text, 0, nullptr);
    PQclear(p);
    PGresult* d = PQdescribePrepared(conn, "s");
    std::string nulls;
    for (int i = 0; i < PQnparams(d); ++i) absl::StrAppend(&nulls, i ? ", " : "", "NULL");
    PQclear(d);
    run("BEGIN");
    const char* tenant = "t";
    PQclear(PQexecParams(conn, sql::kSetTenant, 1, nullptr, &tenant, nullptr, nullptr, 0));
    std::string plan = run(absl::StrCat("EXPLAIN EXECUTE s", nulls.empty() ? "" : "(", nulls,
                                        nulls.empty() ? "" : ")"));
    run("ROLLBACK");
    run("DEALLOCATE s");
    if (std::string(s.name) == "kBegin" || std::string(s.name) == "kCommit") continue;
    EXPECT_NE(plan.find("cost="), std::string::npos) << s.name << ": " << plan;
    // disable_cost is 1e10: no cost of these statements comes near.
    EXPECT_FALSE(std::regex_search(plan, std::regex(R"((cost=|\.\.)\d{10,}\.)"))) << s.name << "\n" << plan;
    ++explained;
  }
  EXPECT_GE(explained, 40);
  PQfinish(conn);
}

// No statement file lies unused: each statement's constant is run by
// pgbusd's code (service/).
TEST(Statements, PgbusdRunsEveryStatement) {
  std::string code;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(PGBUS_SERVICE_DIR)) {
    const std::string ext = entry.path().extension().string();
    if (ext != ".cc" && ext != ".h") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    code += text.str();
  }
  ASSERT_NE(code.find("sql::kClaim"), std::string::npos) << "service/ was not read";
  for (const sql::Statement& s : sql::kAll) {
    const std::regex used(absl::StrCat(R"(\bsql::)", s.name, R"(\b)"));
    EXPECT_TRUE(std::regex_search(code, used)) << s.name << " is not run by pgbusd";
  }
}

}  // namespace
}  // namespace pgbus
