// Publish through a real pgbusd: durability, group commit, bad input.
#include <openssl/evp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/time/clock.h"

#include <pqxx/pqxx>

#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::CountAsOwner;
using testing::Pgbusd;

std::string Sha256(const std::string& data) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

v1::PublishMessage Msg(const std::string& payload) {
  v1::PublishMessage m;
  m.set_payload(payload);
  return m;
}

int64_t StoredMessages(const Pgbusd& server) {
  return CountAsOwner(server.tenant(), "SELECT 1 FROM pgbus.messages");
}

TEST(Publish, CommitsBeforeReturningAndStoresEveryField) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  // Every byte value, NUL included: the payload travels as binary.
  std::string payload;
  for (int i = 0; i < 512; ++i) payload.push_back(static_cast<char>(i % 256));
  v1::PublishMessage m = Msg(payload);
  (*m.mutable_attributes())["kind"] = "created";
  m.set_priority(7);
  m.set_correlation_id("order-42");
  m.set_ordering_key("customer-1");
  auto ids = client->Publish("t", {m, Msg("second")});
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), 2u);
  EXPECT_LT(std::stoll((*ids)[0]), std::stoll((*ids)[1]));  // ids in request order

  // Committed: a separate session sees the rows at once, bytes intact.
  pqxx::connection conn(testing::OwnerDsn());
  pqxx::work txn(conn);
  txn.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", server.tenant());
  pqxx::row row = txn.exec_params1(
      "SELECT encode(payload, 'hex'), size, encode(sha256, 'hex'), priority, correlation_id,"
      " ordering_key, attributes->>'kind' FROM pgbus.messages WHERE id = $1",
      std::stoll((*ids)[0]));
  std::string hex;
  for (unsigned char c : payload) {
    static const char* d = "0123456789abcdef";
    hex.push_back(d[c >> 4]);
    hex.push_back(d[c & 15]);
  }
  EXPECT_EQ(row[0].as<std::string>(), hex);
  EXPECT_EQ(row[1].as<int64_t>(), 512);
  std::string sha_hex;
  for (unsigned char c : Sha256(payload)) {
    static const char* d = "0123456789abcdef";
    sha_hex.push_back(d[c >> 4]);
    sha_hex.push_back(d[c & 15]);
  }
  EXPECT_EQ(row[2].as<std::string>(), sha_hex);
  EXPECT_EQ(row[3].as<int>(), 7);
  EXPECT_EQ(row[4].as<std::string>(), "order-42");
  EXPECT_EQ(row[5].as<std::string>(), "customer-1");
  EXPECT_EQ(row[6].as<std::string>(), "created");
}

TEST(Publish, ConcurrentPublishesShareTransactions) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  constexpr int kCallers = 64, kEach = 10;
  std::atomic<int> failures{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&] {
      while (!go) std::this_thread::yield();
      for (int j = 0; j < kEach; ++j) {
        if (!client->Publish("t", "x").ok()) failures++;
      }
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  ASSERT_EQ(StoredMessages(server), kCallers * kEach);
  // Postgres says how many transactions wrote the rows: group commit puts
  // many callers' messages in one.
  int64_t transactions =
      CountAsOwner(server.tenant(), "SELECT DISTINCT xmin::text FROM pgbus.messages");
  EXPECT_LT(transactions, kCallers * kEach / 4) << "publishes were not coalesced";
}

TEST(Publish, UnknownTopicIsNotFound) {
  Pgbusd server;
  auto client = server.Connect();
  auto r = client->Publish("nope", "x");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("nope"), absl::string_view::npos);
}

TEST(Publish, BadInputIsRejectedAndStoresNothing) {
  Pgbusd server({"--inline-payload-limit", "4096"});
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  struct Case {
    const char* desc;
    std::vector<v1::PublishMessage> messages;
    absl::StatusCode code;
    const char* mention;
  };
  std::vector<v1::PublishMessage> too_many(1001, Msg("x"));
  v1::PublishMessage big = Msg(std::string(4097, 'x'));
  v1::PublishMessage bad_sha = Msg("payload");
  bad_sha.set_sha256(Sha256("other"));
  v1::PublishMessage short_sha = Msg("payload");
  short_sha.set_sha256("abc");
  v1::PublishMessage neg_ttl = Msg("x");
  neg_ttl.mutable_ttl()->set_seconds(-5);
  v1::PublishMessage reserved = Msg("x");
  (*reserved.mutable_attributes())["pgbus.internal"] = "1";
  v1::PublishMessage priority = Msg("x");
  priority.set_priority(5000);
  v1::PublishMessage nul_attr = Msg("x");
  (*nul_attr.mutable_attributes())["k"] = std::string("a\0b", 3);
  Case cases[] = {
      {"NUL in an attribute", {nul_attr}, absl::StatusCode::kInvalidArgument, "NUL"},
      {"no messages", {}, absl::StatusCode::kInvalidArgument, "messages"},
      {"too many messages", too_many, absl::StatusCode::kInvalidArgument, "at most 1000"},
      {"payload over the inline limit", {Msg("ok"), big}, absl::StatusCode::kInvalidArgument,
       "messages[1].payload"},
      {"checksum mismatch", {Msg("ok"), bad_sha}, absl::StatusCode::kDataLoss,
       "messages[1].sha256"},
      {"checksum of the wrong size", {short_sha}, absl::StatusCode::kInvalidArgument,
       "messages[0].sha256"},
      {"negative ttl", {neg_ttl}, absl::StatusCode::kInvalidArgument, "messages[0].ttl"},
      {"reserved attribute", {reserved}, absl::StatusCode::kInvalidArgument, "pgbus."},
      {"priority out of range", {priority}, absl::StatusCode::kInvalidArgument, "priority"},
  };
  for (auto& c : cases) {
    auto r = client->Publish("t", c.messages);
    EXPECT_EQ(r.status().code(), c.code) << c.desc << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.mention), absl::string_view::npos)
        << c.desc << ": " << r.status();
  }
  EXPECT_EQ(StoredMessages(server), 0) << "a rejected publish stored something";

  // The limits themselves are accepted; a matching checksum is accepted.
  v1::PublishMessage exact = Msg(std::string(4096, 'x'));
  exact.set_sha256(Sha256(exact.payload()));
  auto ok = client->Publish("t", {exact, Msg("")});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(StoredMessages(server), 2);
}

TEST(Publish, TopicSizeLimitFailsOnlyTheCallThatBreaksIt) {
  Pgbusd server;
  auto client = server.Connect();
  v1::Topic small;
  small.set_name("small");
  small.set_max_message_bytes(100);
  auto created = client->CreateTopic(small);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->max_message_bytes(), 100);
  // Concurrent calls share group commits; the oversize one must fail alone.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, exhausted{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      auto r = client->Publish("small", {Msg("fits"), Msg(std::string(i == 7 ? 101 : 100, 'x'))});
      if (r.ok()) ok++;
      if (r.status().code() == absl::StatusCode::kResourceExhausted) {
        exhausted++;
        EXPECT_NE(r.status().message().find("max_message_bytes"), absl::string_view::npos)
            << r.status();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 15);
  EXPECT_EQ(exhausted.load(), 1);
  EXPECT_EQ(StoredMessages(server), 30) << "the rejected call stored part of itself";
}

v1::PublishMessage Keyed(const std::string& payload, const std::string& key) {
  v1::PublishMessage m = Msg(payload);
  m.set_idempotency_key(key);
  return m;
}

TEST(Publish, RepeatedIdempotencyKeyReturnsTheOriginalAndStoresNothing) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateTopic("u").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  auto first = client->Publish("t", {Keyed("order 1", "k1")});
  ASSERT_TRUE(first.ok()) << first.status();
  // Again, alone and mixed with new messages (and a repeat inside the call).
  auto again = client->Publish("t", {Keyed("order 1 retry", "k1")});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
  auto mixed = client->Publish("t", {Msg("plain"), Keyed("x", "k1"), Keyed("y", "k2"),
                                     Keyed("y again", "k2")});
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ((*mixed)[1], (*first)[0]);
  EXPECT_EQ((*mixed)[3], (*mixed)[2]);
  EXPECT_NE((*mixed)[2], (*first)[0]);
  EXPECT_EQ(StoredMessages(server), 3);  // order 1, plain, y
  EXPECT_EQ(testing::CountAsOwner(server.tenant(), "SELECT 1 FROM pgbus.deliveries"), 3);
  // Keys are per topic.
  auto other = client->Publish("u", {Keyed("elsewhere", "k1")});
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*other, *first);
}

// At-least-once at the edge: a publish can commit and its answer be lost
// (here the replica is killed -9 after the commit, before the answer
// reached the caller, who sees UNAVAILABLE). Retried with the same
// idempotency key, on another replica, it returns the id stored the first
// time and stores nothing more.
TEST(Publish, ARetryAfterTheAnswerWasLostReturnsTheOriginalId) {
  Pgbusd first;
  ASSERT_TRUE(first.Connect()->CreateTopic("t").ok());
  testing::Relay relay(first.target());
  auto via = Client::Connect(relay.target());
  ASSERT_TRUE(via->Publish("t", {Msg("warm-up")}).ok());  // the connection is up
  relay.DropAnswers();
  absl::StatusOr<std::vector<std::string>> lost;
  std::thread caller([&] { lost = via->Publish("t", {Keyed("charge 42", "charge-42")}); });
  const std::string stored =
      "SELECT 1 FROM pgbus.messages WHERE idempotency_key = 'charge-42'";
  for (int i = 0; i < 400 && CountAsOwner(first.tenant(), stored) == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(25));
  }
  ASSERT_EQ(CountAsOwner(first.tenant(), stored), 1) << "the publish never committed";
  first.Kill();
  relay.Cut();
  caller.join();
  ASSERT_FALSE(lost.ok()) << "the answer got through";
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable) << lost.status();

  Pgbusd second({}, first.tenant());
  auto retried = second.Connect()->Publish("t", {Keyed("charge 42", "charge-42")});
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(std::to_string(testing::ScalarAsTenant(
                first.tenant(),
                "SELECT id FROM pgbus.messages WHERE idempotency_key = 'charge-42'")),
            (*retried)[0]);
  EXPECT_EQ(CountAsOwner(first.tenant(), stored), 1);
}

TEST(Publish, ConcurrentDuplicatesStoreOneMessage) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  constexpr int kCallers = 16;
  std::vector<std::string> ids(kCallers);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      auto r = client->Publish("t", {Keyed("payment", "pay-42")});
      ids[i] = r.ok() ? (*r)[0] : r.status().ToString();
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  for (const auto& id : ids) EXPECT_EQ(id, ids[0]);
  EXPECT_EQ(StoredMessages(server), 1);
}

TEST(Publish, IdempotencyKeyCanBeReusedAfterTheWindow) {
  Pgbusd server;
  auto client = server.Connect();
  v1::Topic topic;
  topic.set_name("t");
  topic.mutable_dedup_window()->set_seconds(1);
  ASSERT_TRUE(client->CreateTopic(topic).ok());
  auto first = client->Publish("t", {Keyed("a", "k")});
  ASSERT_TRUE(first.ok());
  absl::SleepFor(absl::Milliseconds(1500));
  auto later = client->Publish("t", {Keyed("b", "k")});
  ASSERT_TRUE(later.ok());
  EXPECT_NE(*later, *first);
  EXPECT_EQ(StoredMessages(server), 2);
}

}  // namespace
}  // namespace pgbus
