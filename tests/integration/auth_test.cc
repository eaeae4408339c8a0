// API keys and scopes, through a pgbusd with authentication on (no
// --dev-mode), keys issued by the operator's `pgbusd key issue`.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <condition_variable>
#include <mutex>

#include <grpcpp/generic/generic_stub.h>

#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/common/sha256.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;
using testing::RunPgbusd;
using testing::UniqueName;

const std::vector<std::string> kAuthOn = {"--dev-mode=false", "--auth-cache-ms", "0"};

absl::StatusCode CodeOf(const absl::Status& st) { return st.code(); }

grpc::Status ListTopics(Client& client, v1::ListTopicsResponse* resp) {
  grpc::ClientContext ctx;
  v1::ListTopicsRequest req;
  return client.admin().ListTopics(&ctx, req, resp);
}

// "pgbus_" + 16 hex digits + "_" + secret (which may itself contain "_").
std::string SecretOf(const std::string& token) { return token.substr(6 + 16 + 1); }
std::string KeyIdOf(const std::string& token) { return token.substr(6, 16); }

TEST(Auth, WithoutDevModeEveryCallNeedsAKey) {
  Pgbusd server(kAuthOn);
  auto anonymous = server.Connect();
  auto topic = anonymous->CreateTopic("t");
  EXPECT_EQ(CodeOf(topic.status()), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(absl::StrContains(topic.status().message(), "authorization: Bearer"))
      << topic.status();
  EXPECT_EQ(CodeOf(anonymous->Publish("t", "x").status()), absl::StatusCode::kUnauthenticated);
  auto sub = anonymous->Subscribe("s");
  EXPECT_EQ(CodeOf(sub->Next(absl::Seconds(10)).status()), absl::StatusCode::kUnauthenticated);
  std::istringstream in("data");
  EXPECT_EQ(CodeOf(anonymous->UploadPayload("t", in).status()),
            absl::StatusCode::kUnauthenticated);
  EXPECT_FALSE(absl::StrContains(server.Log(), "event=dev_mode")) << server.Log();

  // With a key, the same calls work.
  std::string tenant = UniqueName("tenant");
  auto client = server.Connect(testing::CreateTenantWithKey(tenant));
  ASSERT_TRUE(client->CreateTopic("t").ok());
  EXPECT_TRUE(client->Publish("t", "x").ok());
  EXPECT_EQ(testing::CountAsOwner(tenant, "SELECT 1 FROM pgbus.messages"), 1);
}

TEST(Auth, DevModeIsExplicitAndAnnounced) {
  Pgbusd dev;  // the harness passes --dev-mode
  EXPECT_TRUE(dev.Connect()->CreateTopic("t").ok());
  EXPECT_TRUE(absl::StrContains(dev.Log(), "level=warning event=dev_mode")) << dev.Log();
  EXPECT_TRUE(absl::StrContains(dev.Log(), "auth=OFF")) << dev.Log();
}

TEST(Auth, BadKeysAreUnauthenticatedAndNeverEchoed) {
  Pgbusd server(kAuthOn);
  std::string good = testing::CreateTenantWithKey(UniqueName("tenant"));
  std::string wrong_secret = good.substr(0, good.size() - 4) + (good.substr(good.size() - 4) == "AAAA" ? "BBBB" : "AAAA");
  std::string unknown_id = "pgbus_0123456789abcdef_" + SecretOf(good);
  for (const std::string& key : {std::string("nope"), wrong_secret, unknown_id,
                                 std::string("pgbus_") + std::string(500, 'x')}) {
    auto st = server.Connect(key)->CreateTopic("t").status();
    EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated) << key;
    EXPECT_FALSE(absl::StrContains(st.message(), SecretOf(good))) << st;
    EXPECT_FALSE(absl::StrContains(st.message(), "xxxxxxxx")) << st;
  }
  // A header that is not a bearer token.
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Basic dXNlcjpwYXNz");
  v1::ListTopicsRequest req;
  v1::ListTopicsResponse resp;
  grpc::Status st = server.Connect()->admin().ListTopics(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_FALSE(absl::StrContains(st.error_message(), "dXNlcjpwYXNz"));
}

TEST(Auth, KeysAreStoredOnlyAsTheirSha256) {
  std::string tenant = UniqueName("tenant");
  std::string token = testing::CreateTenantWithKey(tenant);
  ASSERT_EQ(token.rfind("pgbus_", 0), 0u) << token;
  // 32 random bytes, base64url without padding.
  EXPECT_EQ(SecretOf(token).size(), 43u);
  pqxx::connection conn(testing::OwnerDsn());
  pqxx::work txn(conn);
  pqxx::row row = txn.exec_params1(
      "SELECT encode(secret_sha256, 'hex'), row_to_json(k)::text FROM pgbus.api_keys k "
      "WHERE key_id = $1",
      KeyIdOf(token));
  std::string expected;
  for (unsigned char c : Sha256(SecretOf(token))) {
    static const char* hex = "0123456789abcdef";
    expected += hex[c >> 4];
    expected += hex[c & 15];
  }
  EXPECT_EQ(row[0].as<std::string>(), expected);
  EXPECT_FALSE(absl::StrContains(row[1].as<std::string>(), SecretOf(token)));
  // Two keys never share a secret or an id.
  std::string other = testing::IssueKey(tenant, "publish");
  EXPECT_NE(SecretOf(other), SecretOf(token));
  EXPECT_NE(KeyIdOf(other), KeyIdOf(token));
}

TEST(Auth, ARevokedKeyStopsWorking) {
  Pgbusd server(kAuthOn);
  std::string tenant = UniqueName("tenant");
  std::string token = testing::CreateTenantWithKey(tenant);
  auto client = server.Connect(token);
  ASSERT_TRUE(client->CreateTopic("t").ok());
  testing::CommandResult listed = RunPgbusd({"key", "list", tenant});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_TRUE(absl::StrContains(listed.out, KeyIdOf(token))) << listed.out;
  EXPECT_FALSE(absl::StrContains(listed.out, SecretOf(token)));

  testing::CommandResult revoked = RunPgbusd({"key", "revoke", KeyIdOf(token)});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.err;
  auto st = client->Publish("t", "x").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(absl::StrContains(st.message(), "revoked")) << st;
  EXPECT_EQ(RunPgbusd({"key", "revoke", "0000000000000000"}).exit_code, 1);
}

TEST(Auth, ScopesAndTopicPatternsArePermissionDenied) {
  Pgbusd server(kAuthOn);
  std::string tenant = UniqueName("tenant");
  auto admin = server.Connect(testing::CreateTenantWithKey(tenant));
  for (const char* t : {"orders.eu", "orders.eu.paid", "billing"}) {
    ASSERT_TRUE(admin->CreateTopic(t).ok());
    ASSERT_TRUE(admin->CreateSubscription(std::string(t) + "-sub", t).ok());
  }
  auto billing_id = admin->Publish("billing", "invoice");
  ASSERT_TRUE(billing_id.ok());

  // Publish only, on orders.* (one level).
  auto publisher = server.Connect(testing::IssueKey(tenant, "publish", "orders.*"));
  EXPECT_TRUE(publisher->Publish("orders.eu", "o1").ok());
  auto deeper = publisher->Publish("orders.eu.paid", "o2").status();
  EXPECT_EQ(deeper.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(deeper.message(), "orders.*")) << deeper;
  EXPECT_EQ(CodeOf(publisher->Publish("billing", "x").status()),
            absl::StatusCode::kPermissionDenied);
  auto no_sub = publisher->Subscribe("orders.eu-sub");
  auto ended = no_sub->Next(absl::Seconds(10)).status();
  EXPECT_EQ(ended.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(ended.message(), "subscribe scope")) << ended;
  EXPECT_EQ(CodeOf(publisher->CreateTopic("orders.us").status()),
            absl::StatusCode::kPermissionDenied);
  std::istringstream in("data");
  EXPECT_EQ(CodeOf(publisher->UploadPayload("billing", in).status()),
            absl::StatusCode::kPermissionDenied);

  // Subscribe only, on orders.> (any depth).
  auto consumer = server.Connect(testing::IssueKey(tenant, "subscribe", "orders.>"));
  auto sub = consumer->Subscribe("orders.eu-sub");
  auto got = testing::Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u);
  auto acked = consumer->Ack("orders.eu-sub", {got[0].ack_id()});
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ((*acked)[0], v1::ACK_STATUS_OK);
  auto billing = consumer->Subscribe("billing-sub");
  EXPECT_EQ(CodeOf(billing->Next(absl::Seconds(10)).status()),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CodeOf(consumer->Ack("billing-sub", {"1-1-00"}).status()),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CodeOf(consumer->RetrievePayload(*billing_id).status()),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CodeOf(consumer->Publish("orders.eu", "x").status()),
            absl::StatusCode::kPermissionDenied);

  // Admin on orders.> sees and manages only those topics.
  auto orders_admin = server.Connect(testing::IssueKey(tenant, "admin", "orders.>"));
  v1::ListTopicsResponse topics;
  ASSERT_TRUE(ListTopics(*orders_admin, &topics).ok());
  std::vector<std::string> names;
  for (const auto& t : topics.topics()) names.push_back(t.name());
  EXPECT_EQ(names, (std::vector<std::string>{"orders.eu", "orders.eu.paid"}));
  EXPECT_TRUE(orders_admin->CreateTopic("orders.us").ok());
  EXPECT_EQ(CodeOf(orders_admin->CreateSubscription("steal", "billing").status()),
            absl::StatusCode::kPermissionDenied);
  // A pattern subscription must stay inside the key's patterns.
  auto eu_admin = server.Connect(testing::IssueKey(tenant, "admin,subscribe", "orders.*"));
  EXPECT_EQ(CodeOf(eu_admin->CreateSubscription("too-deep", "orders.>").status()),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CodeOf(eu_admin->CreateSubscription("everything", ">").status()),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(eu_admin->CreateSubscription("one-level", "orders.*").ok());
  auto deep = orders_admin->CreateSubscription("deep", "orders.>");
  ASSERT_TRUE(deep.ok()) << deep.status();
  EXPECT_EQ(CodeOf(eu_admin->Subscribe("deep")->Next(absl::Seconds(10)).status()),
            absl::StatusCode::kPermissionDenied);
  // Nothing was stored by any refused call.
  EXPECT_EQ(testing::CountAsOwner(tenant, "SELECT 1 FROM pgbus.messages"), 2);
  EXPECT_EQ(testing::CountAsOwner(tenant, "SELECT 1 FROM pgbus.payloads"), 0);
  EXPECT_EQ(testing::CountAsOwner(tenant, "SELECT 1 FROM pgbus.subscriptions"), 5);
}

TEST(Auth, KeysOfOneTenantCannotReachAnother) {
  Pgbusd server(kAuthOn);
  std::string a_tenant = UniqueName("tenant"), b_tenant = UniqueName("tenant");
  auto a = server.Connect(testing::CreateTenantWithKey(a_tenant));
  auto b = server.Connect(testing::CreateTenantWithKey(b_tenant));
  ASSERT_TRUE(b->CreateTopic("shared-name").ok());
  ASSERT_TRUE(b->CreateSubscription("b-sub", "shared-name").ok());
  auto id = b->Publish("shared-name", "b's");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(CodeOf(a->Publish("shared-name", "x").status()), absl::StatusCode::kNotFound);
  EXPECT_EQ(CodeOf(a->Subscribe("b-sub")->Next(absl::Seconds(10)).status()),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(CodeOf(a->RetrievePayload(*id).status()), absl::StatusCode::kNotFound);
  EXPECT_EQ(testing::CountAsOwner(b_tenant, "SELECT 1 FROM pgbus.deliveries"), 1);
  EXPECT_EQ(testing::CountAsOwner(a_tenant, "SELECT 1 FROM pgbus.messages"), 0);
}

TEST(Auth, TheCliSendsTheKeyFromTheEnvironment) {
  Pgbusd server(kAuthOn);
  std::string token = testing::CreateTenantWithKey(UniqueName("tenant"));
  ASSERT_TRUE(server.Connect(token)->CreateTopic("from-cli").ok());
  auto run = [&](const std::string& env) {
    auto r = testing::RunShell(
        absl::StrCat(env, " ", PGBUS_CLI, " --server ", server.target(), " topics"));
    return std::make_pair(r.exit_code, r.out);
  };
  auto [denied, denied_out] = run("PGBUS_API_KEY=");
  EXPECT_EQ(denied, 1);
  EXPECT_TRUE(absl::StrContains(denied_out, "UNAUTHENTICATED")) << denied_out;
  auto [ok, listed] = run("PGBUS_API_KEY=" + token);
  EXPECT_EQ(ok, 0) << listed;
  EXPECT_TRUE(absl::StrContains(listed, "from-cli")) << listed;
}

TEST(Auth, OperatorCommandsCheckTheirInput) {
  std::string tenant = UniqueName("tenant");
  EXPECT_EQ(RunPgbusd({"tenant", "create", "bad name!"}).exit_code, 2);
  EXPECT_EQ(RunPgbusd({"key", "issue", "no-such-tenant-x", "--scopes", "publish"}).exit_code, 1);
  ASSERT_EQ(RunPgbusd({"tenant", "create", tenant}).exit_code, 0);
  EXPECT_EQ(RunPgbusd({"tenant", "create", tenant}).exit_code, 1);  // exists
  testing::CommandResult bad_scope = RunPgbusd({"key", "issue", tenant, "--scopes", "root"});
  EXPECT_EQ(bad_scope.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad_scope.err, "unknown scope")) << bad_scope.err;
  testing::CommandResult bad_pattern =
      RunPgbusd({"key", "issue", tenant, "--topics", "orders.>.eu"});
  EXPECT_EQ(bad_pattern.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad_pattern.err, "position 7")) << bad_pattern.err;
  testing::CommandResult set =
      RunPgbusd({"tenant", "set", tenant, "--max-streams", "3", "--max-stored-bytes", "none"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_TRUE(absl::StrContains(set.out, "max_streams: 3")) << set.out;
  EXPECT_TRUE(absl::StrContains(set.out, "max_stored_bytes: none")) << set.out;
}

}  // namespace
}  // namespace pgbus

namespace pgbus {
namespace {

// Bytes that are not a valid request (here: a topic name that is not UTF-8,
// and a truncated message) never reach pgbus's code: gRPC refuses them
// while decoding (gRPC 1.51's callback API answers UNIMPLEMENTED, without a
// message). Nothing is stored and the server keeps serving.
TEST(HostileInput, UndecodableRequestsStoreNothing) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  auto channel = grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  v1::PublishRequest req;
  req.set_topic("t");
  req.add_messages()->set_payload("x");
  std::string good = req.SerializeAsString();
  std::string bad_utf8 = good;
  bad_utf8.replace(bad_utf8.find('t'), 1, "\xff");  // field 1, length 1: the topic
  for (const std::string& body : {bad_utf8, good.substr(0, good.size() - 1)}) {
    grpc::ClientContext ctx;
    grpc::Slice slice(body);
    grpc::ByteBuffer request(&slice, 1), response;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    stub.UnaryCall(&ctx, "/pgbus.v1.BusService/Publish", grpc::StubOptions(), &request,
                   &response, [&](grpc::Status st) {
                     std::lock_guard<std::mutex> lock(mu);
                     status = st;
                     done = true;
                     cv.notify_one();
                   });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    EXPECT_FALSE(status.ok());
    EXPECT_NE(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  }
  EXPECT_EQ(testing::CountAsOwner(server.tenant(), "SELECT 1 FROM pgbus.messages"), 0);
  EXPECT_TRUE(client->Publish("t", "still serving").ok());
}

}  // namespace
}  // namespace pgbus
