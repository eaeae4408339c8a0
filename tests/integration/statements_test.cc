// Every statement of service/store/postgres/sql.h is prepared against the
// migrated schema, as the role that runs it: a typo, a dropped column, a
// function or type that does not exist fails here, not in a call in
// production (issue 13). (Privileges are checked when a statement runs, so
// the integration tests cover those.)
#include <gtest/gtest.h>
#include <libpq-fe.h>

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

// sql.h cannot grow a statement that the tests above do not prepare: every
// `inline constexpr char kX[]` is in kAll, except the NOTIFY channel.
TEST(Statements, TheRegistryListsEveryStatementOfSqlH) {
  std::ifstream in(PGBUS_SQL_H);
  ASSERT_TRUE(in) << PGBUS_SQL_H;
  std::stringstream text;
  text << in.rdbuf();
  const std::string source = text.str();
  std::set<std::string> declared;
  const std::regex constant(R"(inline constexpr char (k[A-Za-z0-9]+)\[\])");
  for (std::sregex_iterator it(source.begin(), source.end(), constant), end; it != end; ++it) {
    std::string name = (*it)[1];
    if (name == "kPublishChannel") continue;
    declared.insert(name);
  }
  std::set<std::string> registered;
  for (const sql::Statement& s : sql::kAll) registered.insert(s.name);
  EXPECT_GE(declared.size(), 50u) << "the regex no longer reads sql.h";
  EXPECT_EQ(declared, registered);
}

}  // namespace
}  // namespace pgbus
