// pgbusd as a process: wake-ups, replicas, restarts, shutdown.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include <unistd.h>

#include "absl/time/clock.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;
using testing::Receive;
using testing::SubscriptionStats;

// The fallback poll is a minute here: a delivery within seconds can only
// come from a wake-up.
const std::vector<std::string> kSlowPoll = {"--poll-interval-ms", "60000"};

void WaitForStream(Client& client, const std::string& subscription) {
  for (int i = 0; i < 100 && SubscriptionStats(client, subscription).active_streams() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(SubscriptionStats(client, subscription).active_streams(), 1);
  absl::SleepFor(absl::Milliseconds(200));  // let its first (empty) claim finish
}

TEST(Server, PublishWakesASubscriberAtOnceNotAtThePoll) {
  Pgbusd server(kSlowPoll);
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  auto sub = client->Subscribe("s");
  WaitForStream(*client, "s");
  ASSERT_TRUE(client->Publish("t", "ping").ok());
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u) << "not woken by the publish";
  EXPECT_EQ(got[0].message().payload(), "ping");
}

TEST(Server, ReplicasShareASubscriptionAndWakeEachOtherThroughNotify) {
  std::string tenant = testing::UniqueName("tenant");
  Pgbusd a(kSlowPoll, tenant), b(kSlowPoll, tenant);
  auto ca = a.Connect(), cb = b.Connect();
  ASSERT_TRUE(ca->CreateTopic("t").ok());
  ASSERT_TRUE(cb->CreateSubscription("s", "t").ok());  // same tenant: same data
  auto sub = ca->Subscribe("s");
  WaitForStream(*ca, "s");
  ASSERT_TRUE(cb->Publish("t", "from b").ok());  // committed on the other replica
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u) << "replica a was not woken by b's NOTIFY";
  // Acks work on either replica.
  auto acked = cb->Ack("s", {got[0].ack_id()});
  ASSERT_TRUE(acked.ok());
  EXPECT_EQ((*acked)[0], v1::ACK_STATUS_OK);
}

TEST(Server, MessagesSurviveARestart) {
  std::string tenant = testing::UniqueName("tenant");
  std::string id;
  {
    Pgbusd first({}, tenant);
    auto client = first.Connect();
    ASSERT_TRUE(client->CreateTopic("t").ok());
    ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
    auto published = client->Publish("t", "durable");
    ASSERT_TRUE(published.ok());
    id = *published;
    EXPECT_EQ(first.Terminate(), 0);
  }
  Pgbusd second({}, tenant);
  auto client = second.Connect();
  auto sub = client->Subscribe("s");
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].message().id(), id);
  EXPECT_EQ(got[0].message().payload(), "durable");
  EXPECT_EQ(*client->RetrievePayload(id), "durable");
}

TEST(Server, SigtermEndsStreamsWithUnavailableAndExitsZero) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  auto sub = client->Subscribe("s");
  WaitForStream(*client, "s");
  EXPECT_EQ(server.Terminate(), 0);
  auto r = sub->Next(absl::Seconds(10));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(server.Log().find("event=stopped"), std::string::npos) << server.Log();
}

TEST(Server, RefusesToServeAnUnmigratedDatabase) {
  std::string dsn = testing::CreateEmptyDatabase("pgbus_empty", "pgbus_app");
  try {
    Pgbusd server({}, "", dsn);
    FAIL() << "pgbusd served an unmigrated database";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("pgbusd migrate"), std::string::npos) << e.what();
  }
}

// What the README promises: grpcurl works with no proto files at hand.
std::string Grpcurl(const std::string& args) {
  std::string cmd = std::string(PGBUS_GRPCURL) + " -plaintext " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

TEST(Server, GrpcurlSeesReflectionAndHealth) {
  Pgbusd server;
  std::string list = Grpcurl(server.target() + " list");
  for (const char* svc : {"pgbus.v1.BusService", "pgbus.v1.AdminService",
                          "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}) {
    EXPECT_NE(list.find(svc), std::string::npos) << list;
  }
  EXPECT_NE(Grpcurl(server.target() + " describe pgbus.v1.PublishMessage").find("idempotency_key"),
            std::string::npos);
  std::string health = Grpcurl(server.target() + " grpc.health.v1.Health/Check");
  EXPECT_NE(health.find("\"SERVING\""), std::string::npos) << health;
  std::string created = Grpcurl("-d '{\"topic\":{\"name\":\"from-grpcurl\"}}' " +
                                server.target() + " pgbus.v1.AdminService/CreateTopic");
  EXPECT_NE(created.find("\"from-grpcurl\""), std::string::npos) << created;
}

// grpc.health.v1 as Kubernetes probes it: the overall status (readiness)
// follows whether Postgres answers; "liveness" stays SERVING meanwhile.
// pgbusd runs as a role of its own here, which the test locks out.
std::string HealthStatus(const std::string& target, const std::string& service) {
  std::string out = Grpcurl("-d '{\"service\":\"" + service + "\"}' " + target +
                            " grpc.health.v1.Health/Check");
  for (const char* s : {"NOT_SERVING", "SERVING"}) {
    if (out.find(std::string("\"") + s + "\"") != std::string::npos) return s;
  }
  return out;
}

bool WaitForHealth(const std::string& target, const std::string& want) {
  for (absl::Time end = absl::Now() + absl::Seconds(20); absl::Now() < end;
       absl::SleepFor(absl::Milliseconds(100))) {
    if (HealthStatus(target, "") == want) return true;
  }
  return false;
}

TEST(Server, ReadinessFollowsPostgresAndLivenessDoesNot) {
  const std::string role = "pgbus_test_ready_" + std::to_string(getpid());
  pqxx::connection su(testing::SuperuserDsn());
  pqxx::nontransaction q(su);
  q.exec("DROP ROLE IF EXISTS " + role);
  q.exec("CREATE ROLE " + role + " LOGIN IN ROLE pgbus_app");
  std::string dsn = testing::AppDsn();
  dsn.replace(dsn.find("user=pgbus_app"), std::string("user=pgbus_app").size(), "user=" + role);
  {
    Pgbusd server({"--health-interval-ms", "200"}, "", dsn);
    EXPECT_EQ(HealthStatus(server.target(), ""), "SERVING");
    EXPECT_EQ(HealthStatus(server.target(), "liveness"), "SERVING");

    // Postgres stops answering pgbusd: its sessions end, new ones are refused.
    q.exec("ALTER ROLE " + role + " NOLOGIN");
    q.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = " +
           q.quote(role));
    EXPECT_TRUE(WaitForHealth(server.target(), "NOT_SERVING")) << server.Log();
    EXPECT_EQ(HealthStatus(server.target(), "liveness"), "SERVING");
    EXPECT_NE(server.Log().find("not_ready"), std::string::npos);

    q.exec("ALTER ROLE " + role + " LOGIN");
    EXPECT_TRUE(WaitForHealth(server.target(), "SERVING")) << server.Log();
    server.Kill();
  }
  q.exec("DROP ROLE " + role);
}

}  // namespace
}  // namespace pgbus
