// The C++ client's batching Publisher and deadlines against a live pgbusd:
// the shared scenarios of sdk/conformance/scenarios.md that C++ lacked.
// The Receiver (lease-managing, reconnecting subscriber) below them.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pqxx/pqxx>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "pgbus/publisher.h"
#include "pgbus/receiver.h"
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

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::InterceptorBatchMethods;

// Runs `hook` at every interception point of every Publish call; the other
// calls pass untouched.
class OnPublish : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  using Hook = std::function<void(InterceptorBatchMethods*)>;
  explicit OnPublish(Hook hook) : hook_(std::move(hook)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    const bool publish = std::string(info->method()).find("/Publish") != std::string::npos;
    return new Call(publish ? &hook_ : nullptr);
  }

 private:
  class Call : public grpc::experimental::Interceptor {
   public:
    explicit Call(const Hook* hook) : hook_(hook) {}
    void Intercept(InterceptorBatchMethods* m) override {
      if (hook_ != nullptr) (*hook_)(m);
      m->Proceed();
    }

   private:
    const Hook* hook_;
  };
  const Hook hook_;
};

TEST(CppSdk, BatchesWithoutOrderingKeysArePipelinedAndKeyedOnesGoAlone) {
  Pgbusd server;
  // The Publish calls out at once, and the most seen.
  std::atomic<int> out{0};
  std::atomic<int> most{0};
  ClientOptions options;
  options.interceptors.push_back(std::make_shared<OnPublish>([&](InterceptorBatchMethods* m) {
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      int now = ++out;
      int prev = most.load();
      while (now > prev && !most.compare_exchange_weak(prev, now)) {
      }
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_STATUS)) --out;
  }));
  auto client = Client::Connect(server.target(), options);
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  PublishSettings settings;
  settings.max_messages = 10;
  {
    Publisher pub(client.get(), "t", settings);
    std::vector<std::future<absl::StatusOr<std::string>>> results;
    for (int i = 0; i < 2000; ++i) results.push_back(pub.Publish(Message("x")));
    for (auto& r : results) ASSERT_TRUE(r.get().ok());
  }
  EXPECT_GT(most.load(), 1) << "batches without ordering keys went one at a time";
  EXPECT_LE(most.load(), settings.max_outstanding_calls);
  // Every 5th message keyed, 10 a batch: every batch holds a key, so each
  // goes alone, and the key's order holds.
  most = 0;
  {
    Publisher pub(client.get(), "t", settings);
    for (int i = 0; i < 200; ++i) {
      pub.Publish(Message(absl::StrCat("m", i), i % 5 == 0 ? "k" : ""));
    }
  }
  EXPECT_EQ(most.load(), 1) << "a batch with an ordering key was not sent alone";
}

TEST(CppSdk, ARetriedPublishIsStoredOnce) {
  Pgbusd server;
  // Lets the first Publish reach the server and commit, then reports
  // UNAVAILABLE, as if its answer was lost.
  std::atomic<int> publishes{0};
  ClientOptions options;
  options.interceptors.push_back(std::make_shared<OnPublish>([&](InterceptorBatchMethods* m) {
    if (!m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_STATUS)) return;
    grpc::Status* st = m->GetRecvStatus();
    if (++publishes == 1 && st->ok()) {
      *st = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the answer was lost");
    }
  }));
  auto client = Client::Connect(server.target(), options);
  ASSERT_TRUE(client->CreateTopic("t").ok());
  Publisher pub(client.get(), "t");
  auto id = pub.Publish(Message("charge 42")).get();
  pub.Stop();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(publishes.load(), 2) << "the first answer lost, then one retry";
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
  // From a stream (a file, say): uploaded as it is read, then by handle.
  std::istringstream file(data);
  v1::PublishMessage streamed;
  streamed.set_correlation_id("from-a-stream");
  auto streamed_id = pub.Publish(streamed, file).get();
  pub.Stop();
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(streamed_id.ok()) << streamed_id.status();
  auto sub = client->Subscribe("s");
  auto got = Receive(*sub, 2, absl::Seconds(10));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].message().id(), *id);
  EXPECT_EQ(got[1].message().id(), *streamed_id);
  EXPECT_EQ(got[1].message().correlation_id(), "from-a-stream");
  for (const auto& m : got) {
    EXPECT_TRUE(m.message().payload_by_reference());
    auto back = client->RetrievePayload(m.message().id());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(*back == data);
  }
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

// What a Receiver's handler saw, for the tests to wait on.
class Seen {
 public:
  void Add(const Received& m) {
    absl::MutexLock lock(&mu_);
    messages_.push_back(m);
  }
  // Waits until `n` messages were seen (or 30 s); returns what was seen.
  std::vector<Received> AtLeast(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return messages_.size() >= n;
    };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(30));
    return messages_;
  }

 private:
  absl::Mutex mu_;
  std::vector<Received> messages_ ABSL_GUARDED_BY(mu_);
};

TEST(CppSdkReceiver, NackRedeliversWithAttemptTwo) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  ASSERT_TRUE(client->Publish("t", "again").ok());
  Seen seen;
  std::atomic<int> nacks{0};
  ReceiveSettings one_thread;  // the redelivery is handled after the nack returned
  one_thread.threads = 1;
  Receiver receiver(client.get(), "s", [&](Received m) {
    absl::Status st = m.delivery_attempt() == 1 ? m.Nack("try later") : m.Ack();
    if (m.delivery_attempt() == 1 && st.ok()) ++nacks;
    EXPECT_TRUE(st.ok()) << st;
    seen.Add(m);
  }, one_thread);
  auto got = seen.AtLeast(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].delivery_attempt(), 1);
  EXPECT_EQ(got[1].delivery_attempt(), 2);
  EXPECT_EQ(got[1].message().id(), got[0].message().id());
  EXPECT_EQ(nacks.load(), 1);
  // Settled once: a second ack of the same delivery says so.
  EXPECT_TRUE(IsLeaseExpired(got[1].Ack()));
  EXPECT_TRUE(receiver.Stop().ok());
}

TEST(CppSdkReceiver, ASlowHandlerKeepsItsLease) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t", absl::Seconds(1)).ok());
  ASSERT_TRUE(client->Publish("t", "slow").ok());
  ReceiveSettings settings;
  settings.ack_deadline = absl::Seconds(1);
  Seen seen;
  std::atomic<int> acked{0};
  Receiver receiver(client.get(), "s", [&](Received m) {
    seen.Add(m);
    std::this_thread::sleep_for(std::chrono::seconds(3));  // three ack deadlines
    absl::Status st = m.Ack();
    // OK only while this delivery is still the message's latest: had the
    // lease lapsed and the message gone out again, the ack would say expired.
    EXPECT_TRUE(st.ok()) << st;
    if (st.ok()) ++acked;
  }, settings);
  ASSERT_EQ(seen.AtLeast(1).size(), 1u);
  // A later message is delivered after the slow one was acked: by then a
  // redelivery of the first would have come first.
  for (int i = 0; i < 100 && acked.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(client->Publish("t", "after").ok());
  auto got = seen.AtLeast(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].delivery_attempt(), 1);
  EXPECT_EQ(got[1].message().payload(), "after");
  EXPECT_EQ(acked.load(), 1);
  EXPECT_TRUE(receiver.Stop().ok());
}

TEST(CppSdkReceiver, FlowControlCapsOutstandingMessages) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->Publish("t", std::to_string(i)).ok());
  ReceiveSettings settings;
  settings.max_outstanding_messages = 3;
  settings.threads = 10;
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  Seen seen;
  Receiver receiver(client.get(), "s", [&](Received m) {
    int now = ++running;
    int prev = most.load();
    while (now > prev && !most.compare_exchange_weak(prev, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    --running;
    seen.Add(m);  // before the ack: the next message cannot come before it
    EXPECT_TRUE(m.Ack().ok());
  }, settings);
  auto got = seen.AtLeast(20);
  EXPECT_EQ(got.size(), 20u);
  std::set<std::string> ids;
  for (const auto& m : got) ids.insert(m.message().id());
  EXPECT_EQ(ids.size(), 20u);
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(most.load(), 2) << "handlers should have run side by side";
  EXPECT_TRUE(receiver.Stop().ok());
}

TEST(CppSdkReceiver, AcksThatDoNotWaitShareCalls) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  constexpr int kMessages = 500;
  {
    Publisher pub(client.get(), "t");
    for (int i = 0; i < kMessages; ++i) pub.Publish(Message(std::to_string(i)));
  }
  absl::Mutex mu;
  std::vector<std::future<absl::Status>> results;
  Seen seen;
  Receiver receiver(client.get(), "s", [&](Received m) {
    if (m.message().payload() != "0") {  // "0" is settled after Stop, below
      auto f = m.AckAsync();
      absl::MutexLock lock(&mu);
      results.push_back(std::move(f));
    }
    seen.Add(m);  // last: once all are seen, every ack is queued
  });
  auto got = seen.AtLeast(kMessages);
  ASSERT_EQ(got.size(), static_cast<size_t>(kMessages));
  std::vector<std::future<absl::Status>> answers;
  {
    absl::MutexLock lock(&mu);
    answers.swap(results);
  }
  ASSERT_EQ(answers.size(), static_cast<size_t>(kMessages - 1));
  for (auto& f : answers) {
    absl::Status st = f.get();
    EXPECT_TRUE(st.ok()) << st;
  }
  // One call at a time, each carrying what queued meanwhile: far fewer
  // calls than acks (one each would be 499).
  EXPECT_LE(receiver.ack_calls(), kMessages / 4) << "Ack calls for " << kMessages - 1 << " acks";
  // Settled once, whichever way.
  auto again = std::find_if(got.begin(), got.end(),
                            [](const Received& m) { return m.message().payload() == "1"; });
  ASSERT_NE(again, got.end());
  EXPECT_TRUE(IsLeaseExpired(again->AckAsync().get()));
  EXPECT_TRUE(receiver.Stop().ok());
  // After Stop an ack is a call of its own, and still lands.
  auto first = std::find_if(got.begin(), got.end(),
                            [](const Received& m) { return m.message().payload() == "0"; });
  ASSERT_NE(first, got.end());
  absl::Status st = first->AckAsync().get();
  EXPECT_TRUE(st.ok()) << st;
  auto stats = client->GetStats("s");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->pending() + stats->in_flight(), 0) << "every message acked";
}

TEST(CppSdkReceiver, ReconnectsAfterARestartAndMissesNothing) {
  auto first = std::make_unique<Pgbusd>();
  const std::string target = first->target();
  const std::string tenant = first->tenant();
  auto client = first->Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  Seen seen;
  Receiver receiver(client.get(), "s", [&](Received m) {
    // Acked before it counts as seen: the restart must not find it leased.
    EXPECT_TRUE(m.Ack().ok());
    seen.Add(m);
  });
  ASSERT_TRUE(client->Publish("t", "before").ok());
  ASSERT_EQ(seen.AtLeast(1).size(), 1u);
  ASSERT_EQ(first->Terminate(), 0);
  first.reset();
  // The same port, the same tenant.
  Pgbusd second({"--listen", target}, tenant);
  auto publisher = second.Connect();
  // Retried: channels to one address share gRPC's connection, which may
  // still be backing off after the refused attempts of the restart.
  absl::Status after = WithRetries(absl::Seconds(30), [&] {
    return publisher->Publish("t", "after").status();
  });
  ASSERT_TRUE(after.ok()) << after;
  auto got = seen.AtLeast(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].message().payload(), "before");
  EXPECT_EQ(got[1].message().payload(), "after");
  EXPECT_GE(receiver.reconnects(), 1);
  EXPECT_TRUE(receiver.Stop().ok());
}

TEST(CppSdkReceiver, AMissingSubscriptionEndsTheSession) {
  Pgbusd server;
  auto client = server.Connect();
  Receiver receiver(client.get(), "nowhere", [](Received) { ADD_FAILURE(); });
  absl::Status st = receiver.Wait();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_EQ(receiver.reconnects(), 0);
}

TEST(CppSdkReceiver, StopNacksWhatNoHandlerTookAndWaitsForRunningHandlers) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client->Publish("t", std::to_string(i)).ok());
  ReceiveSettings settings;
  settings.threads = 1;
  std::promise<void> started;
  std::atomic<bool> finished{false};
  std::atomic<int> calls{0};
  auto receiver = std::make_unique<Receiver>(client.get(), "s", [&](Received m) {
    if (++calls == 1) started.set_value();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    EXPECT_TRUE(m.Ack().ok());
    finished = true;
  }, settings);
  started.get_future().wait();
  EXPECT_TRUE(receiver->Stop().ok());
  EXPECT_TRUE(finished.load()) << "Stop returned before the running handler";
  EXPECT_EQ(calls.load(), 1) << "queued messages went to the handler after Stop";
  receiver.reset();
  // The four given back are ready again at once (a nack, not a lapsed lease).
  auto sub = client->Subscribe("s");
  auto back = testing::Receive(*sub, 4, absl::Seconds(10));
  EXPECT_EQ(back.size(), 4u);
}

// Every admin call the proto has (sdk/conformance: admin calls cover the proto).
TEST(CppSdk, AdminCallsCoverTheProto) {
  Pgbusd server;
  auto client = server.Connect();
  v1::Topic orders;
  orders.set_name("orders");
  orders.mutable_retention()->set_seconds(3600);
  orders.mutable_dedup_window()->set_seconds(300);
  orders.set_max_message_bytes(4096);
  ASSERT_TRUE(client->CreateTopic(orders).ok());
  ASSERT_TRUE(client->CreateTopic("dead").ok());
  auto got = client->GetTopic("orders");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->retention().seconds(), 3600);
  EXPECT_EQ(got->dedup_window().seconds(), 300);
  EXPECT_EQ(got->max_message_bytes(), 4096);
  auto topics = client->ListTopics(1);
  ASSERT_TRUE(topics.ok()) << topics.status();
  std::set<std::string> names;
  for (const auto& t : *topics) names.insert(t.name());
  EXPECT_EQ(names, (std::set<std::string>{"dead", "orders"}));

  v1::Subscription billing;
  billing.set_name("billing");
  billing.set_topic("orders");
  billing.mutable_ack_deadline()->set_seconds(10);
  billing.set_max_delivery_attempts(2);
  billing.set_dead_letter_topic("dead");
  billing.mutable_min_backoff()->set_nanos(100'000'000);
  ASSERT_TRUE(client->CreateSubscription(billing).ok());
  auto sub = client->GetSubscription("billing");
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ(sub->ack_deadline().seconds(), 10);
  EXPECT_EQ(sub->max_delivery_attempts(), 2);
  EXPECT_EQ(sub->dead_letter_topic(), "dead");
  auto subs = client->ListSubscriptions("orders");
  ASSERT_TRUE(subs.ok()) << subs.status();
  ASSERT_EQ(subs->size(), 1u);
  EXPECT_EQ((*subs)[0].name(), "billing");
  v1::PublishMessage m = Message("x");
  m.set_correlation_id("c-1");
  auto ids = client->Publish("orders", {m});
  ASSERT_TRUE(ids.ok()) << ids.status();
  auto found = client->ListMessages("c-1");
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].id(), (*ids)[0]);

  // Seek: a subscription created after the publish has nothing, until it
  // is sought back before it.
  ASSERT_TRUE(client->CreateSubscription("replay", "orders").ok());
  EXPECT_EQ(client->GetStats("replay")->pending(), 0);
  ASSERT_TRUE(client->Seek("replay", absl::Now() - absl::Minutes(1)).ok());
  EXPECT_EQ(client->GetStats("replay")->pending(), 1);

  // Dead letters: nacked on both attempts allowed. The receiver stays open:
  // the move happens when the subscription is next claimed.
  std::vector<v1::Message> dead;
  {
    Receiver receiver(client.get(), "billing",
                      [](Received r) { (void)r.Nack("cannot bill"); });
    for (int i = 0; i < 400 && dead.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      auto letters = client->ListDeadLetters("billing");
      ASSERT_TRUE(letters.ok()) << letters.status();
      dead = *letters;
    }
  }
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].attributes().at("pgbus.dead_letter.message_id"), (*ids)[0]);
  auto redriven = client->RedriveDeadLetters("billing", {}, 10);
  ASSERT_TRUE(redriven.ok()) << redriven.status();
  EXPECT_EQ(redriven->size(), 1u);
  EXPECT_EQ(client->GetStats("billing")->dead_lettered(), 1);
  ASSERT_TRUE(client->DeleteSubscription("replay").ok());
  ASSERT_TRUE(client->DeleteTopic("dead").ok());
  EXPECT_EQ(client->GetTopic("dead").status().code(), absl::StatusCode::kNotFound);
}

// This process's connections to `port` (its sockets' peers, from
// /proc/self/fd; gRPC's sockets are IPv6 ones with mapped IPv4 addresses).
int ConnectionsTo(int port) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::atoi(entry.path().filename().c_str());
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) continue;
    int peer_port = -1;
    if (peer.ss_family == AF_INET) {
      peer_port = ntohs(reinterpret_cast<const sockaddr_in*>(&peer)->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      peer_port = ntohs(reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_port);
    }
    if (peer_port == port) ++n;
  }
  return n;
}

TEST(CppSdk, OwnConnectionIsNotShared) {
  Pgbusd server;
  const int port = std::stoi(server.target().substr(server.target().rfind(':') + 1));
  auto first = Client::Connect(server.target());
  ASSERT_TRUE(first->CreateTopic("t").ok());
  ASSERT_EQ(ConnectionsTo(port), 1);
  // Same target and settings: gRPC's shared connection.
  auto shared = Client::Connect(server.target());
  ASSERT_TRUE(shared->GetTopic("t").ok());
  EXPECT_EQ(ConnectionsTo(port), 1);
  ClientOptions options;
  options.own_connection = true;
  auto own = Client::Connect(server.target(), options);
  ASSERT_TRUE(own->GetTopic("t").ok());
  EXPECT_EQ(ConnectionsTo(port), 2);
}

// README's C++ quick start is sdk/cpp/examples/quickstart.cc, word for
// word; it is built, and run here against a live server.
TEST(CppSdk, ReadmeQuickStartRuns) {
  auto slurp = [](const char* path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  std::string source = slurp(PGBUS_CPP_QUICKSTART_SOURCE);
  ASSERT_FALSE(source.empty());
  EXPECT_TRUE(absl::StrContains(slurp(PGBUS_README), source))
      << "README.md must show sdk/cpp/examples/quickstart.cc as it is";
  Pgbusd server;
  auto run = testing::RunShell(
      absl::StrCat("PGBUS_SERVER=", server.target(), " timeout 60 ", PGBUS_CPP_QUICKSTART));
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "published ")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "received hello")) << run.out;
}

}  // namespace
}  // namespace pgbus
