#include "service/bus/validation.h"

#include <gtest/gtest.h>

#include <string>

namespace pgbus::bus {
namespace {

struct NameCase {
  const char* desc;
  std::string name;
  bool ok;
};

TEST(ValidateName, AcceptsAndRejectsByTheDocumentedRule) {
  const NameCase cases[] = {
      {.desc = "simple", .name = "orders", .ok = true},
      {.desc = "levels and punctuation", .name = "orders.eu_west-1", .ok = true},
      {.desc = "leading digit", .name = "1orders", .ok = true},
      {.desc = "longest allowed", .name = std::string(200, 'a'), .ok = true},
      {.desc = "empty", .name = "", .ok = false},
      {.desc = "too long", .name = std::string(201, 'a'), .ok = false},
      {.desc = "leading dot", .name = ".orders", .ok = false},
      {.desc = "leading dash", .name = "-orders", .ok = false},
      {.desc = "space", .name = "my orders", .ok = false},
      {.desc = "slash", .name = "a/b", .ok = false},
      {.desc = "tab (NOTIFY separator)", .name = "a\tb", .ok = false},
      {.desc = "non-ASCII", .name = "caf\xc3\xa9", .ok = false},
  };
  for (const auto& c : cases) {
    absl::Status st = ValidateName("topic.name", c.name);
    EXPECT_EQ(st.ok(), c.ok) << c.desc << ": " << st;
    if (!c.ok) {
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.desc;
      EXPECT_NE(st.message().find("topic.name"), absl::string_view::npos) << c.desc;
    }
  }
}

TEST(ValidateMessage, RejectsEachBrokenRuleNamingTheField) {
  struct Case {
    const char* desc;
    void (*mutate)(model::NewMessage&);
    absl::StatusCode code;
    const char* field;
  };
  const Case cases[] = {
      {"payload over the limit", [](model::NewMessage& m) { m.payload = std::string(101, 'x'); },
       absl::StatusCode::kInvalidArgument, "messages[3].payload"},
      {"priority too high", [](model::NewMessage& m) { m.priority = 1001; },
       absl::StatusCode::kInvalidArgument, "messages[3].priority"},
      {"priority too low", [](model::NewMessage& m) { m.priority = -1001; },
       absl::StatusCode::kInvalidArgument, "messages[3].priority"},
      {"reserved attribute", [](model::NewMessage& m) { m.attributes["pgbus.x"] = "1"; },
       absl::StatusCode::kInvalidArgument, "messages[3].attributes"},
      {"empty attribute key", [](model::NewMessage& m) { m.attributes[""] = "1"; },
       absl::StatusCode::kInvalidArgument, "messages[3].attributes"},
      {"long attribute value",
       [](model::NewMessage& m) { m.attributes["k"] = std::string(1025, 'v'); },
       absl::StatusCode::kInvalidArgument, "messages[3].attributes"},
      {"long correlation id",
       [](model::NewMessage& m) { m.correlation_id = std::string(257, 'c'); },
       absl::StatusCode::kInvalidArgument, "messages[3].correlation_id"},
      {"zero ttl", [](model::NewMessage& m) { m.ttl = absl::ZeroDuration(); },
       absl::StatusCode::kInvalidArgument, "messages[3].ttl"},
      {"negative ttl", [](model::NewMessage& m) { m.ttl = absl::Seconds(-1); },
       absl::StatusCode::kInvalidArgument, "messages[3].ttl"},
      {"NUL in an attribute value",
       [](model::NewMessage& m) { m.attributes["k"] = std::string("a\0b", 3); },
       absl::StatusCode::kInvalidArgument, "messages[3].attributes"},
      {"NUL in a correlation id",
       [](model::NewMessage& m) { m.correlation_id = std::string("a\0b", 3); },
       absl::StatusCode::kInvalidArgument, "messages[3].correlation_id"},
      {"long idempotency key",
       [](model::NewMessage& m) { m.idempotency_key = std::string(257, 'k'); },
       absl::StatusCode::kInvalidArgument, "messages[3].idempotency_key"},
  };
  for (const auto& c : cases) {
    model::NewMessage m;
    m.payload = "ok";
    c.mutate(m);
    absl::Status st = ValidateMessage(3, m, /*max_payload=*/100);
    EXPECT_EQ(st.code(), c.code) << c.desc << ": " << st;
    EXPECT_NE(st.message().find(c.field), absl::string_view::npos) << c.desc << ": " << st;
  }
  model::NewMessage fine;
  fine.payload = std::string(100, 'x');
  fine.attributes["k"] = "v";
  fine.priority = -1000;
  EXPECT_TRUE(ValidateMessage(0, fine, 100).ok());
}

TEST(ValidateSubscription, BoundsAckDeadlineAndBackoff) {
  model::SubscriptionRecord s;
  s.name = "s";
  s.topic = "t";
  EXPECT_TRUE(ValidateSubscription(s).ok());
  s.ack_deadline = absl::Milliseconds(500);
  EXPECT_EQ(ValidateSubscription(s).code(), absl::StatusCode::kInvalidArgument);
  s.ack_deadline = absl::Seconds(10);
  s.min_backoff = absl::Seconds(20);
  s.max_backoff = absl::Seconds(10);
  EXPECT_EQ(ValidateSubscription(s).code(), absl::StatusCode::kInvalidArgument);
  s.min_backoff = absl::Seconds(1);
  s.filter = "a = b";
  EXPECT_EQ(ValidateSubscription(s).code(), absl::StatusCode::kInvalidArgument);
  s.filter = "attributes.a = \"b\"";
  EXPECT_TRUE(ValidateSubscription(s).ok());
  s.filter = "";
  s.topic = "orders.*";
  EXPECT_TRUE(ValidateSubscription(s).ok());
  s.topic = "orders.>";
  EXPECT_TRUE(ValidateSubscription(s).ok());
  s.topic = "orders.>.x";
  EXPECT_EQ(ValidateSubscription(s).code(), absl::StatusCode::kInvalidArgument);
  s.topic = "orders.>";
  s.max_delivery_attempts = 5;
  s.dead_letter_topic = "orders.dlq";  // matched by the pattern: would loop
  EXPECT_EQ(ValidateSubscription(s).code(), absl::StatusCode::kInvalidArgument);
  s.max_delivery_attempts = 0;
  s.dead_letter_topic = "";
  s.topic = "orders";
  s.max_delivery_attempts = 5;
  EXPECT_EQ(ValidateSubscription(s).code(), absl::StatusCode::kInvalidArgument);  // no topic
  s.dead_letter_topic = "orders";
  EXPECT_EQ(ValidateSubscription(s).code(), absl::StatusCode::kInvalidArgument);  // itself
  s.dead_letter_topic = "orders-dlq";
  EXPECT_TRUE(ValidateSubscription(s).ok());
  s.max_delivery_attempts = 1;
  EXPECT_EQ(ValidateSubscription(s).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pgbus::bus
