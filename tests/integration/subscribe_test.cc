// Subscribe / Ack / ModifyAckDeadline / Retrieve through a real pgbusd.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <set>

#include <pqxx/pqxx>

#include "absl/time/clock.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;
using testing::Receive;
using testing::SubscribeWithCredit;
using testing::SubscriptionStats;

v1::PublishMessage Msg(const std::string& payload, int priority = 0) {
  v1::PublishMessage m;
  m.set_payload(payload);
  m.set_priority(priority);
  return m;
}

std::vector<std::string> Payloads(const std::vector<v1::ReceivedMessage>& got) {
  std::vector<std::string> out;
  for (const auto& m : got) out.push_back(m.message().payload());
  return out;
}

std::vector<std::string> AckIds(const std::vector<v1::ReceivedMessage>& got) {
  std::vector<std::string> out;
  for (const auto& m : got) out.push_back(m.ack_id());
  return out;
}

class SubscribeTest : public ::testing::Test {
 protected:
  // A fast poll keeps lease-expiry tests short; wake-up tests use their own
  // server with a slow one.
  SubscribeTest() : server_({"--poll-interval-ms", "100"}), client_(server_.Connect()) {
    EXPECT_TRUE(client_->CreateTopic("t").ok());
  }
  Pgbusd server_;
  std::unique_ptr<Client> client_;
};

TEST_F(SubscribeTest, DeliversHighestPriorityFirstThenPublishOrder) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  ASSERT_TRUE(client_->Publish("t", {Msg("a", 0), Msg("b", 5), Msg("c", 0), Msg("d", 5),
                                     Msg("e", 10), Msg("f", -1)})
                  .ok());
  ASSERT_TRUE(client_->Publish("t", {Msg("g", 5)}).ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 7, absl::Seconds(10));
  EXPECT_EQ(Payloads(got), (std::vector<std::string>{"e", "b", "d", "g", "a", "c", "f"}));
  for (const auto& m : got) {
    EXPECT_EQ(m.delivery_attempt(), 1);
    EXPECT_EQ(m.message().topic(), "t");
    EXPECT_EQ(m.message().size(), 1);
    EXPECT_EQ(m.message().sha256().size(), 32u);
    EXPECT_FALSE(m.message().payload_by_reference());
  }
}

TEST_F(SubscribeTest, OnlyMessagesPublishedAfterTheSubscriptionExist) {
  ASSERT_TRUE(client_->Publish("t", "before").ok());
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  ASSERT_TRUE(client_->Publish("t", "after").ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 2, absl::Seconds(2));
  EXPECT_EQ(Payloads(got), (std::vector<std::string>{"after"}));
}

// GetStats's oldest unacked age is the oldest message still owed to the
// subscription, ready or leased: acking it makes the next one's the age.
TEST_F(SubscribeTest, StatsAgeIsTheOldestUnackedMessages) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t", absl::Seconds(30)).ok());
  ASSERT_TRUE(client_->Publish("t", "first").ok());
  absl::SleepFor(absl::Seconds(2));
  ASSERT_TRUE(client_->Publish("t", "second").ok());
  auto before = SubscriptionStats(*client_, "s");
  EXPECT_EQ(before.pending(), 2);
  EXPECT_GE(before.oldest_unacked_age_seconds(), 2.0);
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 2, absl::Seconds(10));
  ASSERT_EQ(got.size(), 2u);
  ASSERT_EQ(got[0].message().payload(), "first");
  auto leased = SubscriptionStats(*client_, "s");
  EXPECT_EQ(leased.in_flight(), 2);
  EXPECT_GE(leased.oldest_unacked_age_seconds(), before.oldest_unacked_age_seconds());
  ASSERT_TRUE(client_->Ack("s", {got[0].ack_id()}).ok());
  auto after = SubscriptionStats(*client_, "s");
  EXPECT_EQ(after.in_flight(), 1);
  // "second" was published 2 s after "first".
  EXPECT_LT(after.oldest_unacked_age_seconds(), leased.oldest_unacked_age_seconds());
  EXPECT_GT(after.oldest_unacked_age_seconds(), 0.0);
}

TEST_F(SubscribeTest, AckRemovesTheMessageForGood) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t", absl::Seconds(1)).ok());
  ASSERT_TRUE(client_->Publish("t", {Msg("one"), Msg("two")}).ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 2, absl::Seconds(10));
  ASSERT_EQ(got.size(), 2u);
  auto acked = client_->Ack("s", AckIds(got));
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(*acked, (std::vector<v1::AckStatus>{v1::ACK_STATUS_OK, v1::ACK_STATUS_OK}));
  // Past the 1 s deadline nothing comes back, and the stats agree.
  EXPECT_TRUE(Receive(*sub, 1, absl::Seconds(2)).empty());
  auto stats = SubscriptionStats(*client_, "s");
  EXPECT_EQ(stats.pending(), 0);
  EXPECT_EQ(stats.in_flight(), 0);
  EXPECT_EQ(stats.messages(), 2);  // still retained in the topic
  // A second ack of the same id is answered, per id, as expired.
  auto again = client_->Ack("s", {got[0].ack_id()});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[0], v1::ACK_STATUS_EXPIRED);
}

TEST_F(SubscribeTest, RedeliversWhenTheAckDeadlinePasses) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t", absl::Seconds(1)).ok());
  ASSERT_TRUE(client_->Publish("t", "work").ok());
  auto sub = client_->Subscribe("s");
  auto first = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].delivery_attempt(), 1);
  auto second = Receive(*sub, 1, absl::Seconds(10));  // not acked: comes again
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].message().id(), first[0].message().id());
  EXPECT_EQ(second[0].delivery_attempt(), 2);
  EXPECT_NE(second[0].ack_id(), first[0].ack_id());
  // The first lease is gone: its ack id no longer counts; the new one does.
  auto acked = client_->Ack("s", {first[0].ack_id(), second[0].ack_id()});
  ASSERT_TRUE(acked.ok());
  EXPECT_EQ(*acked, (std::vector<v1::AckStatus>{v1::ACK_STATUS_EXPIRED, v1::ACK_STATUS_OK}));
}

// The other half of the contract: a lease that ran out while nobody claimed
// the message again can still be acked (OK: the message is done and will
// not be delivered again, and no one else holds it), as it can be extended.
TEST_F(SubscribeTest, ALateAckBeforeAnyRedeliveryIsOk) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t", absl::Seconds(1)).ok());
  ASSERT_TRUE(client_->Publish("t", {Msg("a"), Msg("b")}).ok());
  std::vector<v1::ReceivedMessage> got;
  {
    auto sub = client_->Subscribe("s");
    got = Receive(*sub, 2, absl::Seconds(10));
  }  // the stream ends: nothing claims the messages again
  ASSERT_EQ(got.size(), 2u);
  // Wait until both leases have run out (as Postgres's clock says).
  const std::string expired =
      "SELECT count(*) FROM pgbus.deliveries WHERE subscription = 's'"
      " AND (visible_at IS NULL OR visible_at <= now())";
  for (int i = 0; i < 100 && testing::ScalarAsTenant(server_.tenant(), expired) < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(testing::ScalarAsTenant(server_.tenant(), expired), 2);
  auto acked = client_->Ack("s", {got[0].ack_id()});
  ASSERT_TRUE(acked.ok());
  EXPECT_EQ((*acked)[0], v1::ACK_STATUS_OK);
  auto extended = client_->ModifyAckDeadline("s", {got[1].ack_id()}, absl::Seconds(60));
  ASSERT_TRUE(extended.ok());
  EXPECT_EQ((*extended)[0], v1::ACK_STATUS_OK);
  // The acked message is gone; the extended one is held again.
  auto sub = client_->Subscribe("s");
  EXPECT_TRUE(Receive(*sub, 1, absl::Seconds(2)).empty());
  EXPECT_EQ(testing::CountAsOwner(server_.tenant(), "SELECT 1 FROM pgbus.deliveries"), 1);
  EXPECT_EQ((*client_->Ack("s", {got[1].ack_id()}))[0], v1::ACK_STATUS_OK);
}

// An Ack that waits for a concurrent change of its row that keeps the lease
// (the SDKs extend the leases of messages whose handlers still run) acks
// the row in its new version: it is not reported as a lost lease.
TEST_F(SubscribeTest, AnAckWaitingForALeaseExtensionStillAcks) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t", absl::Seconds(30)).ok());
  ASSERT_TRUE(client_->Publish("t", "a").ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u);
  // An extension in progress, as pgbusd's role for the tenant: it holds the
  // row until it commits.
  pqxx::connection conn(testing::AppDsn());
  pqxx::work extension(conn);
  extension.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", server_.tenant());
  ASSERT_EQ(extension
                .exec("UPDATE pgbus.deliveries SET visible_at = visible_at + interval '1 minute'"
                      " WHERE subscription = 's'")
                .affected_rows(),
            1u);
  auto ack = std::async(std::launch::async,
                        [&] { return client_->Ack("s", {got[0].ack_id()}); });
  const bool waited =
      ack.wait_for(std::chrono::milliseconds(500)) == std::future_status::timeout;
  // Committed before any check fails: the pending Ack waits for this lock.
  extension.commit();
  EXPECT_TRUE(waited) << "the Ack did not wait for the row";
  auto acked = ack.get();
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ((*acked)[0], v1::ACK_STATUS_OK);
  EXPECT_EQ(testing::CountAsOwner(server_.tenant(), "SELECT 1 FROM pgbus.deliveries"), 0);
  EXPECT_EQ(SubscriptionStats(*client_, "s").in_flight(), 0);
}

TEST_F(SubscribeTest, ExtendedLeaseIsNotRedelivered) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t", absl::Seconds(1)).ok());
  ASSERT_TRUE(client_->Publish("t", "slow work").ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u);
  auto extended = client_->ModifyAckDeadline("s", {got[0].ack_id()}, absl::Seconds(30));
  ASSERT_TRUE(extended.ok());
  EXPECT_EQ((*extended)[0], v1::ACK_STATUS_OK);
  EXPECT_TRUE(Receive(*sub, 1, absl::Seconds(2)).empty()) << "redelivered despite extension";
  EXPECT_EQ(SubscriptionStats(*client_, "s").in_flight(), 1);
}

TEST_F(SubscribeTest, StatsCountPublishedAndAckedAcrossLedgerFolds) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  std::vector<v1::PublishMessage> three = {Msg("a"), Msg("b"), Msg("c")};
  ASSERT_TRUE(client_->Publish("t", three).ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 3, absl::Seconds(10));
  ASSERT_EQ(got.size(), 3u);
  // An id given twice in one call is acked (both answers OK) and counted
  // once.
  auto acked = client_->Ack("s", {got[0].ack_id(), got[1].ack_id(), got[0].ack_id()});
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(*acked, std::vector<v1::AckStatus>(3, v1::ACK_STATUS_OK));
  // Acking the same ids again counts nothing.
  ASSERT_TRUE(client_->Ack("s", {got[0].ack_id()}).ok());
  for (int round = 0; round < 2; ++round) {
    auto stats = SubscriptionStats(*client_, "s");
    EXPECT_EQ(stats.published(), 3);
    EXPECT_EQ(stats.acked(), 2);
    EXPECT_EQ(stats.in_flight(), 1);
    EXPECT_EQ(stats.dead_lettered(), 0);
    grpc::ClientContext ctx;
    v1::GetStatsRequest req;
    req.set_topic("t");
    v1::GetStatsResponse topic;
    ASSERT_TRUE(client_->admin().GetStats(&ctx, req, &topic).ok());
    EXPECT_EQ(topic.published(), 3);
    EXPECT_EQ(topic.messages(), 3);
    // The reaper folds the counter ledger (every second): same figures.
    absl::SleepFor(absl::Milliseconds(1500));
  }
  EXPECT_LE(testing::CountAsOwner(server_.tenant(), "SELECT 1 FROM pgbus.counters"), 2);
}

TEST_F(SubscribeTest, FiltersDecideWhichMessagesASubscriptionEverHolds) {
  auto create = [&](const std::string& name, const std::string& filter) {
    grpc::ClientContext ctx;
    v1::CreateSubscriptionRequest req;
    req.mutable_subscription()->set_name(name);
    req.mutable_subscription()->set_topic("t");
    req.mutable_subscription()->set_filter(filter);
    v1::CreateSubscriptionResponse resp;
    return client_->admin().CreateSubscription(&ctx, req, &resp);
  };
  ASSERT_TRUE(create("eu", R"(attributes.region = "eu" AND NOT attributes:test)").ok());
  ASSERT_TRUE(create("orders", R"(hasPrefix(attributes.kind, "order.") OR attributes.vip != "no")")
                  .ok());
  auto bad = create("bad", R"(attributes.region = "eu" AND)");
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("position 28"), std::string::npos) << bad.error_message();

  auto msg = [](const std::string& payload, std::map<std::string, std::string> attrs) {
    v1::PublishMessage m = Msg(payload);
    for (const auto& [k, v] : attrs) (*m.mutable_attributes())[k] = v;
    return m;
  };
  std::vector<v1::PublishMessage> batch = {
      msg("eu-order", {{"region", "eu"}, {"kind", "order.created"}, {"vip", "no"}}),
      msg("eu-test", {{"region", "eu"}, {"test", "1"}, {"vip", "no"}}),
      msg("us-order", {{"region", "us"}, {"kind", "order.paid"}, {"vip", "no"}}),
      msg("us-vip", {{"region", "us"}, {"kind", "refund"}}),  // vip absent: != holds
      msg("us-plain", {{"region", "us"}, {"kind", "refund"}, {"vip", "no"}})};
  ASSERT_TRUE(client_->Publish("t", batch).ok());
  // Filtered-out messages are never pending.
  EXPECT_EQ(SubscriptionStats(*client_, "eu").pending(), 1);
  EXPECT_EQ(SubscriptionStats(*client_, "orders").pending(), 3);
  auto sub = client_->Subscribe("eu");
  auto got = Receive(*sub, 2, absl::Seconds(2));
  EXPECT_EQ(Payloads(got), std::vector<std::string>{"eu-order"});
  auto orders = client_->Subscribe("orders");
  got = Receive(*orders, 4, absl::Seconds(2));
  std::vector<std::string> payloads = Payloads(got);
  std::sort(payloads.begin(), payloads.end());
  EXPECT_EQ(payloads, (std::vector<std::string>{"eu-order", "us-order", "us-vip"}));
  // Seek replays through the same filter.
  ASSERT_TRUE(client_->Ack("orders", AckIds(got)).ok());
  orders->Cancel();
  // Until the server has closed the stream, it may claim what the Seek
  // makes ready again (then in flight, not pending): seen once under load.
  for (int i = 0; i < 200 && SubscriptionStats(*client_, "orders").active_streams() > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(SubscriptionStats(*client_, "orders").active_streams(), 0);
  grpc::ClientContext ctx;
  v1::SeekRequest seek;
  seek.set_subscription("orders");
  seek.mutable_time()->set_seconds(0);
  v1::SeekResponse seeked;
  ASSERT_TRUE(client_->admin().Seek(&ctx, seek, &seeked).ok());
  EXPECT_EQ(SubscriptionStats(*client_, "orders").pending(), 3);
}

TEST_F(SubscribeTest, TopicPatternsCoverTopicsCreatedLater) {
  ASSERT_TRUE(client_->CreateTopic("orders.eu").ok());
  auto any_depth = client_->CreateSubscription("all-orders", "orders.>");
  ASSERT_TRUE(any_depth.ok()) << any_depth.status();
  EXPECT_EQ(any_depth->topic(), "orders.>");
  ASSERT_TRUE(client_->CreateSubscription("regional", "orders.*").ok());
  EXPECT_EQ(client_->CreateSubscription("bad", "orders.>.x").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto all = client_->Subscribe("all-orders");
  auto regional = client_->Subscribe("regional");
  // Topics created after the subscriptions count too.
  for (const char* t : {"orders.us", "orders.eu.paid", "billing", "ordersx"}) {
    ASSERT_TRUE(client_->CreateTopic(t).ok());
  }
  for (const char* t : {"orders.eu", "orders.us", "orders.eu.paid", "billing", "ordersx"}) {
    ASSERT_TRUE(client_->Publish(t, t).ok());
  }
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(Payloads(Receive(*all, 3, absl::Seconds(10)))),
            (std::vector<std::string>{"orders.eu", "orders.eu.paid", "orders.us"}));
  EXPECT_EQ(sorted(Payloads(Receive(*regional, 2, absl::Seconds(10)))),
            (std::vector<std::string>{"orders.eu", "orders.us"}));
  // And nothing else (billing, ordersx, or a deeper topic for orders.*).
  EXPECT_TRUE(Receive(*all, 1, absl::Milliseconds(500)).empty());
  EXPECT_TRUE(Receive(*regional, 1, absl::Milliseconds(300)).empty());
  EXPECT_EQ(SubscriptionStats(*client_, "all-orders").published(), 3);
  // Deleting one matching topic leaves the pattern subscription alone.
  ASSERT_TRUE(testing::DeleteTopic(*client_, "orders.us").ok());
  EXPECT_TRUE(client_->Publish("orders.eu", "again").ok());
  EXPECT_EQ(Payloads(Receive(*regional, 1, absl::Seconds(10))),
            std::vector<std::string>{"again"});
}

TEST_F(SubscribeTest, NackBackoffDoublesFromMinToMax) {
  grpc::ClientContext ctx;
  v1::CreateSubscriptionRequest req;
  req.mutable_subscription()->set_name("s");
  req.mutable_subscription()->set_topic("t");
  req.mutable_subscription()->mutable_min_backoff()->set_seconds(1);
  req.mutable_subscription()->mutable_max_backoff()->set_seconds(2);
  v1::CreateSubscriptionResponse resp;
  ASSERT_TRUE(client_->admin().CreateSubscription(&ctx, req, &resp).ok());
  ASSERT_TRUE(client_->Publish("t", "flaky").ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u);
  // Backoff after attempt n: min * 2^(n-1), at most max: 1 s, 2 s, 2 s.
  for (absl::Duration expected : {absl::Seconds(1), absl::Seconds(2), absl::Seconds(2)}) {
    absl::Time nacked = absl::Now();
    ASSERT_TRUE(client_->ModifyAckDeadline("s", {got[0].ack_id()}, absl::ZeroDuration()).ok());
    EXPECT_TRUE(Receive(*sub, 1, expected - absl::Milliseconds(200)).empty())
        << "redelivered before the backoff of " << expected;
    got = Receive(*sub, 1, absl::Seconds(10));
    ASSERT_EQ(got.size(), 1u);
    // Not the uncapped 4 s on the third nack (the poll is 100 ms here).
    EXPECT_LT(absl::Now() - nacked, expected + absl::Milliseconds(1500)) << expected;
  }
  EXPECT_EQ(got[0].delivery_attempt(), 4);
}

TEST_F(SubscribeTest, AStalledConsumerHoldsUpNoOtherSubscription) {
  ASSERT_TRUE(client_->CreateSubscription("stalled", "t").ok());
  ASSERT_TRUE(client_->CreateSubscription("busy", "t").ok());
  // It takes one message and never acks.
  auto stalled = SubscribeWithCredit(*client_, "stalled", 1);
  std::vector<v1::PublishMessage> batch;
  for (int i = 0; i < 200; ++i) batch.push_back(Msg(std::to_string(i)));
  ASSERT_TRUE(client_->Publish("t", batch).ok());
  auto busy = client_->Subscribe("busy");
  EXPECT_EQ(Receive(*busy, 200, absl::Seconds(10)).size(), 200u);
  EXPECT_EQ(Receive(*stalled, 2, absl::Milliseconds(500)).size(), 1u);
  EXPECT_EQ(SubscriptionStats(*client_, "stalled").in_flight(), 1);
}

TEST_F(SubscribeTest, NackRedeliversWithoutWaitingForTheDeadline) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t", absl::Seconds(600)).ok());
  ASSERT_TRUE(client_->Publish("t", "retry me").ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u);
  auto nacked = client_->ModifyAckDeadline("s", {got[0].ack_id()}, absl::ZeroDuration());
  ASSERT_TRUE(nacked.ok());
  EXPECT_EQ((*nacked)[0], v1::ACK_STATUS_OK);
  auto again = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].delivery_attempt(), 2);
  // A nacked lease cannot be acked any more.
  EXPECT_EQ((*client_->Ack("s", {got[0].ack_id()}))[0], v1::ACK_STATUS_EXPIRED);
}

TEST_F(SubscribeTest, NeverMoreOutstandingThanTheStreamAllows) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  ASSERT_TRUE(client_->Publish("t", {Msg("1"), Msg("2"), Msg("3"), Msg("4"), Msg("5")}).ok());
  auto sub = SubscribeWithCredit(*client_, "s", 2);
  auto got = Receive(*sub, 5, absl::Seconds(2));
  ASSERT_EQ(got.size(), 2u) << "flow control let more than 2 through";
  ASSERT_TRUE(client_->Ack("s", {got[0].ack_id()}).ok());
  auto more = Receive(*sub, 5, absl::Seconds(2));
  EXPECT_EQ(more.size(), 1u) << "one ack frees exactly one slot";
}

TEST_F(SubscribeTest, ByteLimitStillLetsOneMessageThrough) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  ASSERT_TRUE(client_->Publish("t", {Msg(std::string(1000, 'a')), Msg(std::string(1000, 'b'))})
                  .ok());
  v1::SubscribeRequest req;
  req.set_subscription("s");
  req.set_max_outstanding_bytes(10);
  auto sub = client_->Subscribe(req);
  auto got = Receive(*sub, 2, absl::Seconds(2));
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(client_->Ack("s", {got[0].ack_id()}).ok());
  EXPECT_EQ(Receive(*sub, 1, absl::Seconds(5)).size(), 1u);
}

// The byte budget is a ceiling: only a stream with nothing outstanding may
// go over it, by one message.
TEST_F(SubscribeTest, ByteLimitIsNeverExceededWhileSomethingIsOutstanding) {
  for (int size : {100000, 150000}) {
    SCOPED_TRACE(size);
    std::string name = "s" + std::to_string(size);
    ASSERT_TRUE(client_->CreateSubscription(name, "t").ok());
    std::vector<v1::PublishMessage> batch;
    for (int i = 0; i < 5; ++i) batch.push_back(Msg(std::string(size, 'a' + i)));
    ASSERT_TRUE(client_->Publish("t", batch).ok());
    v1::SubscribeRequest req;
    req.set_subscription(name);
    req.set_max_outstanding_bytes(250000);
    auto sub = client_->Subscribe(req);
    auto got = Receive(*sub, 5, absl::Seconds(2));
    ASSERT_EQ(got.size(), static_cast<size_t>(250000 / size))
        << "more than 250,000 bytes outstanding";
    // Freeing one message's bytes lets exactly one more through.
    ASSERT_TRUE(client_->Ack(name, {got[0].ack_id()}).ok());
    EXPECT_EQ(Receive(*sub, 5, absl::Seconds(2)).size(), 1u);
  }
}

TEST_F(SubscribeTest, StreamsOfOneSubscriptionShareTheWork) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  auto a = client_->Subscribe("s");
  auto b = client_->Subscribe("s");
  std::vector<v1::PublishMessage> batch;
  for (int i = 0; i < 40; ++i) batch.push_back(Msg(std::to_string(i)));
  ASSERT_TRUE(client_->Publish("t", batch).ok());
  std::multiset<std::string> seen;
  absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (seen.size() < 40 && absl::Now() < deadline) {
    for (Subscriber* s : {a.get(), b.get()}) {
      auto got = Receive(*s, 40, absl::Milliseconds(100));
      for (const auto& m : got) seen.insert(m.message().payload());
      if (!got.empty()) {
        ASSERT_TRUE(client_->Ack("s", AckIds(got)).ok());
      }
    }
  }
  ASSERT_EQ(seen.size(), 40u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 40u) << "a duplicate";
}

TEST_F(SubscribeTest, EverySubscriptionGetsEveryMessage) {
  ASSERT_TRUE(client_->CreateSubscription("s1", "t").ok());
  ASSERT_TRUE(client_->CreateSubscription("s2", "t").ok());
  ASSERT_TRUE(client_->Publish("t", {Msg("x"), Msg("y")}).ok());
  auto s1 = client_->Subscribe("s1");
  auto s2 = client_->Subscribe("s2");
  EXPECT_EQ(Payloads(Receive(*s1, 2, absl::Seconds(10))), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(Payloads(Receive(*s2, 2, absl::Seconds(10))), (std::vector<std::string>{"x", "y"}));
}

TEST_F(SubscribeTest, ExpiredMessagesAreNeverDeliveredOrRetrieved) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  v1::PublishMessage brief = Msg("brief");
  brief.mutable_ttl()->set_seconds(1);
  auto ids = client_->Publish("t", {brief, Msg("lasting")});
  ASSERT_TRUE(ids.ok());
  absl::SleepFor(absl::Milliseconds(1500));
  auto sub = client_->Subscribe("s");
  EXPECT_EQ(Payloads(Receive(*sub, 2, absl::Seconds(2))), (std::vector<std::string>{"lasting"}));
  EXPECT_EQ(client_->RetrievePayload((*ids)[0]).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SubscribeTest, DelayedMessagesWaitForDeliverAt) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  v1::PublishMessage later = Msg("later");
  later.mutable_deliver_at()->set_seconds(absl::ToUnixSeconds(absl::Now() + absl::Seconds(3)));
  ASSERT_TRUE(client_->Publish("t", {later, Msg("now")}).ok());
  auto sub = client_->Subscribe("s");
  EXPECT_EQ(Payloads(Receive(*sub, 2, absl::Seconds(1))), (std::vector<std::string>{"now"}));
  EXPECT_EQ(Payloads(Receive(*sub, 1, absl::Seconds(10))), (std::vector<std::string>{"later"}));
}

TEST_F(SubscribeTest, BadRequestsAreAnsweredClearly) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  v1::SubscribeRequest negative;
  negative.set_subscription("s");
  negative.set_max_outstanding_messages(-1);
  auto sub = client_->Subscribe(negative);
  auto r = sub->Next(absl::Seconds(10));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("max_outstanding_messages"), absl::string_view::npos);

  auto missing = client_->Subscribe("no-such-subscription");
  EXPECT_EQ(missing->Next(absl::Seconds(10)).status().code(), absl::StatusCode::kNotFound);

  EXPECT_EQ(client_->Ack("s", {"not-an-ack-id"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Ack("s", {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Ack("nope", {"1-1-ff"}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->ModifyAckDeadline("s", {"1-1-ff"}, absl::Minutes(11)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SubscribeTest, DeletingTheSubscriptionEndsItsStreams) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  auto sub = client_->Subscribe("s");
  absl::SleepFor(absl::Milliseconds(300));
  grpc::ClientContext ctx;
  v1::DeleteSubscriptionRequest req;
  req.set_name("s");
  v1::DeleteSubscriptionResponse resp;
  ASSERT_TRUE(client_->admin().DeleteSubscription(&ctx, req, &resp).ok());
  EXPECT_EQ(sub->Next(absl::Seconds(10)).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SubscribeTest, RetrieveReturnsTheBytesAndAnyRange) {
  std::string payload;
  for (int i = 0; i < 3000; ++i) payload.push_back(static_cast<char>((i * 7) % 256));
  auto id = client_->Publish("t", payload);
  ASSERT_TRUE(id.ok());
  auto whole = client_->RetrievePayload(*id);  // also checks the SHA-256
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(*whole, payload);

  auto range = [&](int64_t offset, int64_t length) {
    grpc::ClientContext ctx;
    v1::RetrieveRequest req;
    req.set_message_id(*id);
    req.set_offset(offset);
    req.set_length(length);
    v1::RetrieveResponse resp;
    grpc::Status st = client_->bus().Retrieve(&ctx, req, &resp);
    return std::make_pair(st, resp);
  };
  auto [st, resp] = range(1000, 200);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(resp.data(), payload.substr(1000, 200));
  EXPECT_EQ(resp.offset(), 1000);
  EXPECT_EQ(resp.message().size(), 3000);
  EXPECT_TRUE(resp.message().payload().empty());
  EXPECT_EQ(range(2900, 500).second.data(), payload.substr(2900));  // clipped at the end
  EXPECT_TRUE(range(3000, 0).second.data().empty());
  EXPECT_EQ(range(3001, 0).first.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(range(-1, 0).first.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  EXPECT_EQ(client_->RetrievePayload("999999999").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->RetrievePayload("abc").status().code(), absl::StatusCode::kInvalidArgument);
}

v1::PublishMessage Keyed(const std::string& payload, const std::string& key) {
  v1::PublishMessage m = Msg(payload);
  m.set_ordering_key(key);
  return m;
}

TEST_F(SubscribeTest, OrderingKeyHoldsLaterMessagesUntilTheEarlierIsAcked) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  ASSERT_TRUE(client_->Publish("t", {Keyed("a1", "k1"), Keyed("a2", "k1"), Msg("x"),
                                     Keyed("b1", "k2"), Keyed("a3", "k1")})
                  .ok());
  // Two competing streams: neither may get a2 while a1 is unacked.
  auto s1 = client_->Subscribe("s");
  auto s2 = client_->Subscribe("s");
  std::map<std::string, std::string> ack;  // payload -> ack id
  auto collect = [&](absl::Duration d) {
    std::vector<std::string> got;
    for (Subscriber* sub : {s1.get(), s2.get()}) {
      for (const auto& m : Receive(*sub, 10, d)) {
        got.push_back(m.message().payload());
        ack[m.message().payload()] = m.ack_id();
      }
    }
    std::sort(got.begin(), got.end());
    return got;
  };
  EXPECT_EQ(collect(absl::Seconds(2)), (std::vector<std::string>{"a1", "b1", "x"}));
  ASSERT_TRUE(client_->Ack("s", {ack["a1"], ack["b1"], ack["x"]}).ok());
  EXPECT_EQ(collect(absl::Seconds(2)), (std::vector<std::string>{"a2"}));
  ASSERT_TRUE(client_->Ack("s", {ack["a2"]}).ok());
  EXPECT_EQ(collect(absl::Seconds(2)), (std::vector<std::string>{"a3"}));
}

TEST_F(SubscribeTest, ANackedOrderingHeadIsRedeliveredBeforeItsSuccessor) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t", absl::Seconds(600)).ok());
  ASSERT_TRUE(client_->Publish("t", {Keyed("first", "k"), Keyed("second", "k")}).ok());
  auto sub = client_->Subscribe("s");
  auto got = Receive(*sub, 2, absl::Seconds(2));
  ASSERT_EQ(Payloads(got), (std::vector<std::string>{"first"}));
  ASSERT_TRUE(client_->ModifyAckDeadline("s", {got[0].ack_id()}, absl::ZeroDuration()).ok());
  auto again = Receive(*sub, 2, absl::Seconds(2));
  ASSERT_EQ(Payloads(again), (std::vector<std::string>{"first"}));
  EXPECT_EQ(again[0].delivery_attempt(), 2);
  ASSERT_TRUE(client_->Ack("s", {again[0].ack_id()}).ok());
  EXPECT_EQ(Payloads(Receive(*sub, 1, absl::Seconds(5))), (std::vector<std::string>{"second"}));
}

TEST_F(SubscribeTest, SeekReplaysAckedMessagesPublishedSinceTheTime) {
  ASSERT_TRUE(client_->CreateSubscription("s", "t").ok());
  ASSERT_TRUE(client_->Publish("t", "old").ok());
  absl::SleepFor(absl::Milliseconds(50));
  absl::Time since = absl::Now();
  absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE(client_->Publish("t", {Msg("new1"), Msg("new2")}).ok());
  auto sub = client_->Subscribe("s");
  auto first = Receive(*sub, 3, absl::Seconds(10));
  ASSERT_EQ(first.size(), 3u);
  ASSERT_TRUE(client_->Ack("s", AckIds(first)).ok());

  grpc::ClientContext ctx;
  v1::SeekRequest req;
  req.set_subscription("s");
  req.mutable_time()->set_seconds(absl::ToUnixSeconds(since));
  req.mutable_time()->set_nanos(
      static_cast<int32_t>(absl::ToInt64Nanoseconds(since - absl::FromUnixSeconds(absl::ToUnixSeconds(since)))));
  v1::SeekResponse resp;
  ASSERT_TRUE(client_->admin().Seek(&ctx, req, &resp).ok());
  EXPECT_EQ(Payloads(Receive(*sub, 3, absl::Seconds(3))),
            (std::vector<std::string>{"new1", "new2"}));

  grpc::ClientContext bad_ctx;
  req.set_subscription("nope");
  EXPECT_EQ(client_->admin().Seek(&bad_ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SubscribeTest, ListMessagesFindsACorrelationInPublishOrder) {
  ASSERT_TRUE(client_->CreateTopic("other").ok());
  auto with = [](const std::string& payload, const std::string& correlation) {
    v1::PublishMessage m = Msg(payload);
    m.set_correlation_id(correlation);
    return m;
  };
  ASSERT_TRUE(client_->Publish("t", {with("a", "order-1"), with("x", "order-2")}).ok());
  ASSERT_TRUE(client_->Publish("other", {with("b", "order-1")}).ok());
  ASSERT_TRUE(client_->Publish("t", {with("c", "order-1")}).ok());
  std::vector<std::string> topics, ids;
  std::string token;
  do {
    grpc::ClientContext ctx;
    v1::ListMessagesRequest req;
    req.set_correlation_id("order-1");
    req.set_page_size(2);
    req.set_page_token(token);
    v1::ListMessagesResponse resp;
    ASSERT_TRUE(client_->admin().ListMessages(&ctx, req, &resp).ok());
    for (const auto& m : resp.messages()) {
      topics.push_back(m.topic());
      ids.push_back(m.id());
      EXPECT_TRUE(m.payload().empty());  // metadata only
      EXPECT_TRUE(m.payload_by_reference());
    }
    token = resp.next_page_token();
  } while (!token.empty());
  EXPECT_EQ(topics, (std::vector<std::string>{"t", "other", "t"}));
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end(), [](const std::string& a, const std::string& b) {
    return std::stoll(a) < std::stoll(b);
  }));
  EXPECT_EQ(*client_->RetrievePayload(ids[1]), "b");
}

// Acks that reach another replica than the stream's (a proxy that balances
// each call) return the stream's credit too: its replica finds, at its
// poll, that the leases are gone. Before, the stream stalled until their
// deadline (10 minutes here). Leases still held keep their credit.
TEST(Replicas, AcksThroughAnotherReplicaReturnTheStreamsCredit) {
  Pgbusd a({"--poll-interval-ms", "100"});
  Pgbusd b({}, a.tenant());
  auto ca = a.Connect();
  auto cb = b.Connect();
  ASSERT_TRUE(ca->CreateTopic("t").ok());
  ASSERT_TRUE(ca->CreateSubscription("s", "t", absl::Minutes(10)).ok());
  std::vector<v1::PublishMessage> batch;
  for (int i = 0; i < 12; ++i) batch.push_back(Msg(std::to_string(i)));
  ASSERT_TRUE(ca->Publish("t", batch).ok());
  auto sub = SubscribeWithCredit(*ca, "s", 4);
  auto first = Receive(*sub, 5, absl::Seconds(2));
  ASSERT_EQ(first.size(), 4u);

  // Three acked through b, one extended there: three more come, no more.
  std::vector<std::string> three = AckIds(first);
  three.pop_back();
  auto acked = cb->Ack("s", three);
  ASSERT_TRUE(acked.ok()) << acked.status();
  for (auto st : *acked) EXPECT_EQ(st, v1::ACK_STATUS_OK);
  auto extended = cb->ModifyAckDeadline("s", {first[3].ack_id()}, absl::Minutes(9));
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ((*extended)[0], v1::ACK_STATUS_OK);
  auto second = Receive(*sub, 3, absl::Seconds(20));
  ASSERT_EQ(second.size(), 3u) << "credit of leases acked through another replica";
  for (const auto& m : second) EXPECT_EQ(m.delivery_attempt(), 1);
  // Several polls later the four held leases still hold all the credit.
  EXPECT_TRUE(Receive(*sub, 1, absl::Seconds(1)).empty()) << "a held lease lost its credit";
  EXPECT_EQ(SubscriptionStats(*ca, "s").in_flight(), 4);

  // A nack through b frees its credit too (the message comes back later).
  auto nacked = cb->ModifyAckDeadline("s", {second[0].ack_id()}, absl::ZeroDuration());
  ASSERT_TRUE(nacked.ok()) << nacked.status();
  EXPECT_EQ(Receive(*sub, 1, absl::Seconds(20)).size(), 1u);
  EXPECT_TRUE(Receive(*sub, 1, absl::Seconds(1)).empty());
}

// A replica that is stopped (SIGTERM, as in a rolling update) gives back
// the leases of the streams it ends: another replica delivers those
// messages at once, not after their ack deadline (5 minutes here).
TEST(Shutdown, AStoppingReplicaGivesBackItsLeasesAtOnce) {
  Pgbusd a;
  Pgbusd b({}, a.tenant());
  auto ca = a.Connect();
  auto cb = b.Connect();
  ASSERT_TRUE(ca->CreateTopic("t").ok());
  ASSERT_TRUE(ca->CreateSubscription("s", "t", absl::Minutes(5)).ok());
  ASSERT_TRUE(ca->Publish("t", {Msg("1"), Msg("2"), Msg("3")}).ok());
  auto on_a = ca->Subscribe("s");
  auto first = Receive(*on_a, 3, absl::Seconds(10));
  ASSERT_EQ(first.size(), 3u);
  auto on_b = cb->Subscribe("s");
  EXPECT_TRUE(Receive(*on_b, 1, absl::Seconds(1)).empty()) << "leased to a, yet delivered to b";

  EXPECT_EQ(a.Terminate(), 0);
  auto ended = on_a->Next(absl::Seconds(10));
  EXPECT_EQ(ended.status().code(), absl::StatusCode::kUnavailable) << ended.status();
  auto again = Receive(*on_b, 3, absl::Seconds(20));
  ASSERT_EQ(again.size(), 3u) << "the leases were not given back";
  for (const auto& m : again) EXPECT_EQ(m.delivery_attempt(), 2) << "the attempt count changed";
  auto acked = cb->Ack("s", AckIds(again));
  ASSERT_TRUE(acked.ok());
  for (auto st : *acked) EXPECT_EQ(st, v1::ACK_STATUS_OK);
}

}  // namespace
}  // namespace pgbus
