// Isolation is enforced by Postgres itself: connected as pgbusd's role,
// SQL that forgets (or forges) the tenant still sees only the tenant set in
// the transaction, and nothing when none is set.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include <iterator>
#include <set>
#include <string>

#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;

const char* const kTables[] = {"tenants",  "topics",         "subscriptions", "messages",
                               "deliveries", "payloads",     "payload_chunks", "idempotency_keys",
                               "api_keys", "tenant_usage",   "counters"};

class RlsTest : public ::testing::Test {
 protected:
  // Tenant B's data, put there through the API.
  RlsTest() : b_() {
    auto client = b_.Connect();
    EXPECT_TRUE(client->CreateTopic("secret").ok());
    EXPECT_TRUE(client->CreateSubscription("secret-sub", "secret").ok());
    pgbus::v1::PublishMessage m;
    m.set_payload("b's payload");
    m.set_idempotency_key("b-key");
    std::vector<pgbus::v1::PublishMessage> one = {m};
    EXPECT_TRUE(client->Publish("secret", one).ok());
    testing::IssueKey(b_.tenant(), "publish");  // a row in api_keys
  }
  int64_t Count(pqxx::work& txn, const std::string& table) {
    return txn.exec("SELECT count(*) FROM pgbus." + table)[0][0].as<int64_t>();
  }
  Pgbusd b_;
};

TEST_F(RlsTest, AppRoleOwnsNothingAndCannotBypass) {
  pqxx::connection conn(testing::AppDsn());
  pqxx::work txn(conn);
  pqxx::row role = txn.exec1(
      "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user");
  EXPECT_FALSE(role[0].as<bool>());
  EXPECT_FALSE(role[1].as<bool>());
  EXPECT_EQ(txn.exec1("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                      "c.relnamespace WHERE n.nspname = 'pgbus' AND "
                      "pg_get_userbyid(c.relowner) = current_user")[0]
                .as<int>(),
            0);
  for (const char* table : kTables) {
    pqxx::row rls = txn.exec_params1(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
        std::string("pgbus.") + table);
    EXPECT_TRUE(rls[0].as<bool>()) << table << ": RLS not enabled";
    EXPECT_TRUE(rls[1].as<bool>()) << table << ": RLS not forced";
  }
}

TEST_F(RlsTest, EveryTableWithTenantDataIsIsolated) {
  // From the catalog, so a table added later without isolation fails here.
  pqxx::connection conn(testing::AppDsn());
  pqxx::work txn(conn);
  pqxx::result missing = txn.exec(
      "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
      " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'"
      " WHERE n.nspname = 'pgbus' AND c.relkind = 'r' AND (NOT c.relrowsecurity"
      "  OR NOT c.relforcerowsecurity"
      "  OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))");
  for (const auto& row : missing) ADD_FAILURE() << row[0].as<std::string>() << " is not isolated";
  // And the cross-tenant tests below cover exactly the catalog's tables
  // with tenant data: a new one fails here until it is added to kTables.
  std::set<std::string> catalog, tested(std::begin(kTables), std::end(kTables));
  for (const auto& row : txn.exec(
           "SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
           " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgbus'"
           " AND c.relkind = 'r' AND a.attname = 'tenant_id'")) {
    catalog.insert(row[0].as<std::string>());
  }
  EXPECT_EQ(catalog, tested);
}

// The views over tenant tables (migration 0021) read as their caller, so
// the tables' policies bind the app role through them too; from the
// catalog, so a view added later without security_invoker fails here.
TEST_F(RlsTest, EveryViewReadsAsItsCaller) {
  pqxx::connection conn(testing::AppDsn());
  pqxx::work txn(conn);
  int views = 0;
  for (const auto& row : txn.exec(
           "SELECT c.relname, coalesce('security_invoker=true' = ANY (c.reloptions), false)"
           " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
           " WHERE n.nspname = 'pgbus' AND c.relkind = 'v'")) {
    ++views;
    EXPECT_TRUE(row[1].as<bool>()) << row[0].as<std::string>() << " is not security_invoker";
  }
  EXPECT_GE(views, 3);
  txn.exec("SELECT set_config('pgbus.tenant_id', 'tenant-a', true)");
  for (const char* view : {"topic_rows", "subscription_rows", "live_messages"}) {
    EXPECT_EQ(txn.exec_params("SELECT 1 FROM pgbus." + std::string(view) + " WHERE tenant_id = $1",
                              b_.tenant())
                  .size(),
              0u)
        << view;
  }
  txn.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", b_.tenant());
  EXPECT_EQ(txn.exec("SELECT 1 FROM pgbus.live_messages").size(), 1u);
}

TEST_F(RlsTest, NoTenantSetSeesNothing) {
  pqxx::connection conn(testing::AppDsn());
  pqxx::work txn(conn);
  for (const char* table : kTables) EXPECT_EQ(Count(txn, table), 0) << table;
}

TEST_F(RlsTest, AnotherTenantCannotReadWriteOrDeleteTheRows) {
  pqxx::connection conn(testing::AppDsn());
  {
    pqxx::work txn(conn);
    txn.exec("SELECT set_config('pgbus.tenant_id', 'tenant-a', true)");
    for (const char* table : kTables) {
      EXPECT_EQ(Count(txn, table), 0) << table;
      // Even naming B's tenant explicitly matches nothing.
      EXPECT_EQ(txn.exec_params("SELECT 1 FROM pgbus." + std::string(table) +
                                    " WHERE tenant_id = $1",
                                b_.tenant())
                    .size(),
                0u)
          << table;
      EXPECT_EQ(txn.exec_params("UPDATE pgbus." + std::string(table) +
                                    " SET tenant_id = tenant_id WHERE tenant_id = $1",
                                b_.tenant())
                    .affected_rows(),
                0u)
          << table;
      EXPECT_EQ(txn.exec_params("DELETE FROM pgbus." + std::string(table) + " WHERE tenant_id = $1",
                                b_.tenant())
                    .affected_rows(),
                0u)
          << table;
    }
    txn.commit();
  }
  // Writing a row into B's tenant is refused by the policy's WITH CHECK.
  pqxx::work txn(conn);
  txn.exec("SELECT set_config('pgbus.tenant_id', 'tenant-a', true)");
  try {
    txn.exec_params("INSERT INTO pgbus.tenants (tenant_id) VALUES ($1)", b_.tenant() + "-x");
    FAIL() << "inserted a row for another tenant";
  } catch (const pqxx::insufficient_privilege& e) {  // SQLSTATE 42501
    EXPECT_NE(std::string(e.what()).find("row-level security"), std::string::npos) << e.what();
  }
  // And B still has everything.
  EXPECT_EQ(testing::CountAsOwner(b_.tenant(), "SELECT 1 FROM pgbus.messages"), 1);
  EXPECT_EQ(testing::CountAsOwner(b_.tenant(), "SELECT 1 FROM pgbus.deliveries"), 1);
}

TEST_F(RlsTest, TenantSettingDoesNotOutliveTheTransaction) {
  pqxx::connection conn(testing::AppDsn());
  {
    pqxx::work txn(conn);
    txn.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", b_.tenant());
    EXPECT_EQ(Count(txn, "messages"), 1);
    txn.commit();
  }
  pqxx::work next(conn);  // the same pooled session, the next request
  EXPECT_EQ(Count(next, "messages"), 0);
}

TEST_F(RlsTest, ATenantSeesOnlyItsOwnThroughTheApi) {
  Pgbusd a;
  auto client = a.Connect();
  EXPECT_EQ(client->Publish("secret", "x").status().code(), absl::StatusCode::kNotFound);
  auto sub = client->Subscribe("secret-sub");
  EXPECT_EQ(sub->Next(absl::Seconds(10)).status().code(), absl::StatusCode::kNotFound);
  // B's message id is 'in hand' but not A's to read.
  pqxx::connection conn(testing::AppDsn());
  pqxx::work txn(conn);
  txn.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", b_.tenant());
  std::string id = txn.exec1("SELECT id FROM pgbus.messages")[0].as<std::string>();
  EXPECT_EQ(client->RetrievePayload(id).status().code(), absl::StatusCode::kNotFound);
  // Nor to seek, ack or count, even with B's ack id in hand.
  {
    grpc::ClientContext ctx;
    v1::SeekRequest req;
    req.set_subscription("secret-sub");
    req.mutable_time()->set_seconds(0);
    v1::SeekResponse resp;
    EXPECT_EQ(client->admin().Seek(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    auto b_client = b_.Connect();
    auto b_sub = b_client->Subscribe("secret-sub");
    auto got = testing::Receive(*b_sub, 1, absl::Seconds(10));
    ASSERT_EQ(got.size(), 1u);
    b_sub->Cancel();
    auto acked = client->Ack("secret-sub", {got[0].ack_id()});
    if (acked.ok()) {
      EXPECT_EQ((*acked)[0], v1::ACK_STATUS_EXPIRED);
    } else {
      EXPECT_EQ(acked.status().code(), absl::StatusCode::kNotFound) << acked.status();
    }
  }
  {
    grpc::ClientContext ctx;
    v1::GetStatsRequest req;
    req.set_subscription("secret-sub");
    v1::GetStatsResponse resp;
    EXPECT_EQ(client->admin().GetStats(&ctx, req, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // B's message is still there, unacked.
  EXPECT_EQ(testing::CountAsOwner(b_.tenant(), "SELECT 1 FROM pgbus.deliveries"), 1);
  // Topics are per tenant: A may use the same name.
  EXPECT_TRUE(client->CreateTopic("secret").ok());
}

}  // namespace
}  // namespace pgbus
