// Dead-letter topics: after max_delivery_attempts a message moves to the
// subscription's dead-letter topic with its history, and can be listed and
// re-driven.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;
using testing::Receive;
using testing::SubscriptionStats;

class DeadLetterTest : public ::testing::Test {
 protected:
  DeadLetterTest() : server_({"--poll-interval-ms", "100"}), client_(server_.Connect()) {
    EXPECT_TRUE(client_->CreateTopic("orders").ok());
    EXPECT_TRUE(client_->CreateTopic("orders-dlq").ok());
    EXPECT_TRUE(client_->CreateSubscription("dlq-reader", "orders-dlq").ok());
    EXPECT_TRUE(CreateSubscription("billing", "orders", 2, "orders-dlq").ok());
  }

  grpc::Status CreateSubscription(const std::string& name, const std::string& topic,
                                  int attempts, const std::string& dlq) {
    grpc::ClientContext ctx;
    v1::CreateSubscriptionRequest req;
    req.mutable_subscription()->set_name(name);
    req.mutable_subscription()->set_topic(topic);
    req.mutable_subscription()->set_max_delivery_attempts(attempts);
    req.mutable_subscription()->set_dead_letter_topic(dlq);
    req.mutable_subscription()->mutable_min_backoff()->set_seconds(0);
    v1::CreateSubscriptionResponse resp;
    return client_->admin().CreateSubscription(&ctx, req, &resp);
  }

  grpc::Status Nack(const std::string& sub, const std::string& ack_id, const std::string& reason) {
    grpc::ClientContext ctx;
    v1::ModifyAckDeadlineRequest req;
    req.set_subscription(sub);
    req.add_ack_ids(ack_id);
    req.set_reason(reason);
    v1::ModifyAckDeadlineResponse resp;
    return client_->bus().ModifyAckDeadline(&ctx, req, &resp);
  }

  v1::ListDeadLettersResponse List(const std::string& sub) {
    grpc::ClientContext ctx;
    v1::ListDeadLettersRequest req;
    req.set_subscription(sub);
    v1::ListDeadLettersResponse resp;
    EXPECT_TRUE(client_->admin().ListDeadLetters(&ctx, req, &resp).ok());
    return resp;
  }

  static v1::PublishMessage Msg(const std::string& payload) {
    v1::PublishMessage m;
    m.set_payload(payload);
    return m;
  }

  Pgbusd server_;
  std::unique_ptr<Client> client_;
};

TEST_F(DeadLetterTest, AfterMaxAttemptsTheMessageMovesWithItsHistory) {
  v1::PublishMessage m;
  m.set_payload("poison");
  m.set_correlation_id("order-7");
  (*m.mutable_attributes())["kind"] = "order";
  auto id = client_->Publish("orders", {m});
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(client_->Publish("orders", "fine").ok());
  auto sub = client_->Subscribe("billing");
  std::string reason;
  for (int attempt = 1; attempt <= 2; ++attempt) {
    // "fine" is acked when seen; "poison" is nacked each time.
    for (int seen = 0; seen < 2;) {
      auto got = Receive(*sub, 1, absl::Seconds(10));
      ASSERT_EQ(got.size(), 1u) << "attempt " << attempt;
      ++seen;
      if (got[0].message().payload() == "fine") {
        ASSERT_TRUE(client_->Ack("billing", {got[0].ack_id()}).ok());
        if (attempt == 1) continue;
      }
      if (got[0].message().payload() != "poison") continue;
      EXPECT_EQ(got[0].delivery_attempt(), attempt);
      reason = "cannot parse, try " + std::to_string(attempt);
      ASSERT_TRUE(Nack("billing", got[0].ack_id(), reason).ok());
      break;
    }
  }
  auto dlq = client_->Subscribe("dlq-reader");
  auto dead = Receive(*dlq, 1, absl::Seconds(10));
  ASSERT_EQ(dead.size(), 1u);
  const v1::Message& d = dead[0].message();
  EXPECT_EQ(d.payload(), "poison");
  EXPECT_EQ(d.correlation_id(), "order-7");
  EXPECT_EQ(d.attributes().at("kind"), "order");
  EXPECT_EQ(d.attributes().at("pgbus.dead_letter.subscription"), "billing");
  EXPECT_EQ(d.attributes().at("pgbus.dead_letter.topic"), "orders");
  EXPECT_EQ(d.attributes().at("pgbus.dead_letter.message_id"), (*id)[0]);
  EXPECT_EQ(d.attributes().at("pgbus.dead_letter.attempts"), "2");
  EXPECT_EQ(d.attributes().at("pgbus.dead_letter.reason"), reason);
  // It has left the source subscription for good.
  EXPECT_TRUE(Receive(*sub, 1, absl::Milliseconds(700)).empty());
  auto stats = SubscriptionStats(*client_, "billing");
  EXPECT_EQ(stats.pending() + stats.in_flight(), 0);
  EXPECT_EQ(stats.dead_lettered(), 1);
  EXPECT_EQ(stats.acked(), 1);      // "fine"
  EXPECT_EQ(stats.published(), 2);  // to "orders"
  auto listed = List("billing");
  ASSERT_EQ(listed.messages_size(), 1);
  EXPECT_EQ(listed.messages(0).id(), d.id());
}

// A dead letter is a message published before: the dead-letter topic's
// size limit does not refuse it (it would stay exhausted and held forever).
TEST_F(DeadLetterTest, ADeadLetterLargerThanTheDeadLetterTopicsLimitStillMoves) {
  v1::Topic small;
  small.set_name("small-dlq");
  small.set_max_message_bytes(16);
  auto created = client_->CreateTopic(small);
  ASSERT_TRUE(created.ok()) << created.status();
  auto reading = client_->CreateSubscription("small-reader", "small-dlq");
  ASSERT_TRUE(reading.ok()) << reading.status();
  ASSERT_TRUE(CreateSubscription("strict", "orders", 2, "small-dlq").ok());
  const std::string payload(100, 'x');
  ASSERT_TRUE(client_->Publish("orders", payload).ok());
  // What the limit refuses from a publisher.
  auto refused = client_->Publish("small-dlq", payload);
  ASSERT_FALSE(refused.ok());
  auto sub = client_->Subscribe("strict");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto got = Receive(*sub, 1, absl::Seconds(10));
    ASSERT_EQ(got.size(), 1u) << "attempt " << attempt;
    ASSERT_TRUE(Nack("strict", got[0].ack_id(), "too big to handle").ok());
  }
  auto reader = client_->Subscribe("small-reader");
  auto dead = Receive(*reader, 1, absl::Seconds(10));
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].message().payload(), payload);
  EXPECT_EQ(dead[0].message().attributes().at("pgbus.dead_letter.reason"), "too big to handle");
  EXPECT_EQ(SubscriptionStats(*client_, "strict").dead_lettered(), 1);
}

TEST_F(DeadLetterTest, ADeadLetteredHeadReleasesItsOrderingKey) {
  std::vector<v1::PublishMessage> two(2);
  two[0].set_payload("first");
  two[0].set_ordering_key("customer-1");
  two[1].set_payload("second");
  two[1].set_ordering_key("customer-1");
  ASSERT_TRUE(client_->Publish("orders", two).ok());
  auto sub = client_->Subscribe("billing");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto got = Receive(*sub, 1, absl::Seconds(10));
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].message().payload(), "first");  // "second" waits behind it
    ASSERT_TRUE(Nack("billing", got[0].ack_id(), "no").ok());
  }
  auto next = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].message().payload(), "second");
}

TEST_F(DeadLetterTest, RedrivePublishesAgainToTheOriginalTopic) {
  ASSERT_TRUE(client_->Publish("orders", "retry later").ok());
  auto sub = client_->Subscribe("billing");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto got = Receive(*sub, 1, absl::Seconds(10));
    ASSERT_EQ(got.size(), 1u);
    ASSERT_TRUE(Nack("billing", got[0].ack_id(), "downstream down").ok());
  }
  for (int i = 0; i < 100 && List("billing").messages_size() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(List("billing").messages_size(), 1);

  grpc::ClientContext ctx;
  v1::RedriveDeadLettersRequest req;
  req.set_subscription("billing");
  v1::RedriveDeadLettersResponse resp;
  ASSERT_TRUE(client_->admin().RedriveDeadLetters(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.message_ids_size(), 1);
  auto again = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].message().payload(), "retry later");
  EXPECT_EQ(again[0].message().id(), resp.message_ids(0));
  EXPECT_EQ(again[0].delivery_attempt(), 1);
  EXPECT_EQ(again[0].message().attributes().count("pgbus.dead_letter.subscription"), 0u);
  EXPECT_EQ(List("billing").messages_size(), 0);
  EXPECT_EQ(SubscriptionStats(*client_, "billing").dead_lettered(), 1);  // a counter
  // The dead-letter topic's own subscription no longer holds it either.
  auto dlq = client_->Subscribe("dlq-reader");
  EXPECT_TRUE(Receive(*dlq, 1, absl::Milliseconds(700)).empty());
}

TEST_F(DeadLetterTest, RedriveTakesExactlyItsLimit) {
  // Three dead letters; limit 1 redrives one (a LIMIT ... SKIP LOCKED
  // subquery that the plan runs again would take more).
  ASSERT_TRUE(client_->Publish("orders", {Msg("a"), Msg("b"), Msg("c")}).ok());
  auto sub = client_->Subscribe("billing");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto got = Receive(*sub, 3, absl::Seconds(10));
    ASSERT_EQ(got.size(), 3u) << "attempt " << attempt;
    for (const auto& m : got) ASSERT_TRUE(Nack("billing", m.ack_id(), "").ok());
  }
  for (int i = 0; i < 100 && List("billing").messages_size() < 3; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(List("billing").messages_size(), 3);
  for (int limit : {1, 2}) {
    grpc::ClientContext ctx;
    v1::RedriveDeadLettersRequest req;
    req.set_subscription("billing");
    req.set_limit(limit);
    v1::RedriveDeadLettersResponse resp;
    ASSERT_TRUE(client_->admin().RedriveDeadLetters(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.message_ids_size(), limit);
  }
  EXPECT_EQ(List("billing").messages_size(), 0);
}

TEST_F(DeadLetterTest, SettingsAndReasonsAreChecked) {
  auto missing = CreateSubscription("x", "orders", 3, "no-such-topic");
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(absl::StrContains(missing.error_message(), "no-such-topic"));
  EXPECT_EQ(CreateSubscription("x", "orders", 3, "").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CreateSubscription("x", "orders", 0, "orders-dlq").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CreateSubscription("x", "orders", 3, "orders").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(client_->Publish("orders", "x").ok());
  auto sub = client_->Subscribe("billing");
  auto got = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(got.size(), 1u);
  auto too_long = Nack("billing", got[0].ack_id(), std::string(2000, 'r'));
  EXPECT_EQ(too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(too_long.error_message().size(), 200u);
  // Publishers cannot forge a dead letter.
  v1::PublishMessage forged;
  forged.set_payload("x");
  (*forged.mutable_attributes())["pgbus.dead_letter.subscription"] = "billing";
  EXPECT_EQ(client_->Publish("orders-dlq", {forged}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pgbus
