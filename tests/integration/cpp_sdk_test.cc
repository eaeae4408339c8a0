// The C++ client's batching Publisher and deadlines against a live pgbusd:
// the shared scenarios of sdk/conformance/scenarios.md that C++ lacked.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include <future>
#include <set>
#include <string>
#include <vector>

#include "pgbus/publisher.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;
using testing::Receive;

int64_t StoredMessages(const Pgbusd& server) {
  pqxx::connection c(testing::OwnerDsn());
  pqxx::work w(c);
  w.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", server.tenant());
  return w.exec1("SELECT count(*) FROM pgbus.messages")[0].as<int64_t>();
}

v1::PublishMessage Message(const std::string& payload, const std::string& ordering_key = "") {
  v1::PublishMessage m;
  m.set_payload(payload);
  m.set_ordering_key(ordering_key);
  return m;
}

TEST(CppSdk, BatchingMakesFarFewerCalls) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  PublishSettings settings;
  settings.max_delay = absl::Milliseconds(50);
  Publisher pub(client.get(), "t", settings);
  std::vector<std::future<absl::StatusOr<std::string>>> results;
  for (int i = 0; i < 1000; ++i) results.push_back(pub.Publish(Message(std::to_string(i))));
  pub.Flush();
  std::set<std::string> ids;
  for (auto& r : results) {
    auto id = r.get();
    ASSERT_TRUE(id.ok()) << id.status();
    ids.insert(*id);
  }
  pub.Stop();
  EXPECT_EQ(ids.size(), 1000u);
  EXPECT_EQ(StoredMessages(server), 1000);
  EXPECT_LE(pub.calls(), 50) << "Publish calls for 1000 messages";
}

TEST(CppSdk, OrderingKeyKeepsItsOrderThroughBatches) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  PublishSettings settings;
  settings.max_messages = 7;
  Publisher pub(client.get(), "t", settings);
  for (int i = 0; i < 50; ++i) pub.Publish(Message(std::to_string(i), "k"));
  pub.Stop();
  auto sub = client->Subscribe("s");
  std::vector<std::string> got;
  while (got.size() < 50) {
    auto batch = Receive(*sub, 1, absl::Seconds(10));
    ASSERT_EQ(batch.size(), 1u) << "received " << got.size() << " of 50";
    got.push_back(batch[0].message().payload());
    ASSERT_TRUE(client->Ack("s", {batch[0].ack_id()}).ok());
  }
  for (int i = 0; i < 50; ++i) EXPECT_EQ(got[i], std::to_string(i)) << "out of order at " << i;
}

// Lets the first Publish reach the server and commit, then reports
// UNAVAILABLE, as if its answer was lost.
class LoseFirstPublishAnswer : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  std::atomic<int> publishes{0};
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new Lose(this, std::string(info->method()).find("/Publish") != std::string::npos);
  }

 private:
  class Lose : public grpc::experimental::Interceptor {
   public:
    Lose(LoseFirstPublishAnswer* owner, bool publish) : owner_(owner), publish_(publish) {}
    void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
      if (publish_ && m->QueryInterceptionHookPoint(
                          grpc::experimental::InterceptionHookPoints::POST_RECV_STATUS)) {
        grpc::Status* st = m->GetRecvStatus();
        if (++owner_->publishes == 1 && st->ok()) {
          *st = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the answer was lost");
        }
      }
      m->Proceed();
    }

   private:
    LoseFirstPublishAnswer* owner_;
    bool publish_;
  };
};

TEST(CppSdk, ARetriedPublishIsStoredOnce) {
  Pgbusd server;
  auto lose = std::make_shared<LoseFirstPublishAnswer>();
  ClientOptions options;
  options.interceptors.push_back(lose);
  auto client = Client::Connect(server.target(), options);
  ASSERT_TRUE(client->CreateTopic("t").ok());
  Publisher pub(client.get(), "t");
  auto id = pub.Publish(Message("charge 42")).get();
  pub.Stop();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(lose->publishes.load(), 2) << "the first answer lost, then one retry";
  EXPECT_EQ(StoredMessages(server), 1);
}

TEST(CppSdk, LargePayloadsGoByReferenceThroughThePublisher) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 % 251);
  Publisher pub(client.get(), "t");
  auto id = pub.Publish(Message(data)).get();
  pub.Stop();
  ASSERT_TRUE(id.ok()) << id.status();
  auto sub = client->Subscribe("s");
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].message().id(), *id);
  EXPECT_TRUE(got[0].message().payload_by_reference());
  auto back = client->RetrievePayload(*id);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == data);
}

TEST(CppSdk, EveryUnaryCallHasADeadline) {
  Pgbusd server;
  ClientOptions options;
  options.timeout = absl::Microseconds(1);
  auto client = Client::Connect(server.target(), options);
  EXPECT_EQ(client->CreateTopic("t").status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(client->Publish("t", "x").status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(CppSdk, PublishAfterStopIsRefused) {
  Pgbusd server;
  auto client = server.Connect();
  Publisher pub(client.get(), "t");
  pub.Stop();
  EXPECT_EQ(pub.Publish(Message("late")).get().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace pgbus
