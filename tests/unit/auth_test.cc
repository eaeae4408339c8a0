#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "service/auth/api_key.h"
#include "service/auth/limiter.h"
#include "service/auth/principal.h"
#include "service/common/topic_pattern.h"

namespace pgbus {
namespace {

TEST(TopicPattern, Matches) {
  EXPECT_TRUE(TopicMatches("orders.*", "orders.eu"));
  EXPECT_FALSE(TopicMatches("orders.*", "orders.eu.paid"));
  EXPECT_FALSE(TopicMatches("orders.*", "orders"));
  EXPECT_TRUE(TopicMatches("orders.>", "orders.eu"));
  EXPECT_TRUE(TopicMatches("orders.>", "orders.eu.paid"));
  EXPECT_FALSE(TopicMatches("orders.>", "orders"));
  EXPECT_TRUE(TopicMatches(">", "anything.at.all"));
  EXPECT_TRUE(TopicMatches("*.eu", "orders.eu"));
  EXPECT_FALSE(TopicMatches("*.eu", "orders.us"));
  EXPECT_TRUE(TopicMatches("billing", "billing"));
  EXPECT_FALSE(TopicMatches("billing", "billing.x"));
  EXPECT_FALSE(TopicMatches("billing.x", "billing"));
  EXPECT_FALSE(TopicMatches("ord", "orders"));
}

TEST(TopicPattern, CoversAndRegex) {
  EXPECT_TRUE(PatternCovers(">", "orders.>"));
  EXPECT_TRUE(PatternCovers("orders.>", "orders.*"));
  EXPECT_TRUE(PatternCovers("orders.>", "orders.eu.>"));
  EXPECT_TRUE(PatternCovers("orders.*", "orders.eu"));
  EXPECT_TRUE(PatternCovers("orders.*", "orders.*"));
  EXPECT_FALSE(PatternCovers("orders.*", "orders.>"));  // reaches deeper
  EXPECT_FALSE(PatternCovers("orders.eu", "orders.*"));
  EXPECT_FALSE(PatternCovers("orders.>", "orders"));
  EXPECT_FALSE(PatternCovers("orders.*.paid", "orders.*.*"));
  EXPECT_TRUE(IsTopicPattern("a.*"));
  EXPECT_FALSE(IsTopicPattern("a.b-c"));
  EXPECT_EQ(TopicPatternRegex("orders.*.paid"), "^orders\\.[^.]+\\.paid$");
  EXPECT_EQ(TopicPatternRegex("orders.>"), "^orders\\..+$");
}

TEST(TopicPattern, InvalidPatternsNameThePosition) {
  for (auto [pattern, pos] : std::vector<std::pair<std::string, std::string>>{
           {"orders.>.eu", "position 7"},
           {"orders..eu", "position 7"},
           {"ord*rs", "position 3"},
           {"orders.", "position 7"},
           {"a b", "position 1"}}) {
    absl::Status st = ValidateTopicPattern("topics", pattern);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << pattern;
    EXPECT_TRUE(absl::StrContains(st.message(), pos)) << pattern << ": " << st;
  }
  EXPECT_TRUE(ValidateTopicPattern("topics", "orders.*.paid").ok());
  EXPECT_TRUE(ValidateTopicPattern("topics", ">").ok());
  EXPECT_FALSE(ValidateTopicPattern("topics", "").ok());
}

TEST(ApiKey, GeneratedKeysParseAndMatchOnlyTheirSecret) {
  auto a = auth::GenerateKey();
  auto b = auth::GenerateKey();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->token, b->token);
  auto parsed = auth::ParseKey(a->token);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->key_id, a->key_id);
  EXPECT_TRUE(auth::SecretMatches(parsed->secret, a->secret_sha256));
  EXPECT_FALSE(auth::SecretMatches(parsed->secret, b->secret_sha256));
  EXPECT_FALSE(auth::SecretMatches(parsed->secret, "short"));
  EXPECT_EQ(a->secret_sha256.size(), 32u);
}

TEST(ApiKey, MalformedKeysAreUnauthenticatedWithoutEcho) {
  auto key = auth::GenerateKey();
  ASSERT_TRUE(key.ok());
  // "pgbus_" + 16 hex + "_"; the secret itself may contain '_'.
  std::string secret = key->token.substr(6 + 16 + 1);
  for (const std::string& bad :
       {std::string(""), std::string("pgbus_"), key->token + "x", key->token.substr(1),
        "pgbus_ABCDEF0123456789_" + secret, "pgbus_0123456789abcdef-" + secret}) {
    auto st = auth::ParseKey(bad).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_FALSE(absl::StrContains(st.message(), secret));
  }
}

TEST(Principal, ScopesAndTopics) {
  auth::Principal p;
  p.identity = "key k";
  p.scopes = static_cast<int>(auth::Scope::kPublish);
  p.topics = {"orders.>"};
  EXPECT_TRUE(p.Check(auth::Scope::kPublish, "orders.eu").ok());
  EXPECT_EQ(p.Check(auth::Scope::kPublish, "billing").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p.Check(auth::Scope::kSubscribe, "orders.eu").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(p.AllTopics());
  p.topics = {">"};
  EXPECT_TRUE(p.AllTopics());
  EXPECT_TRUE(p.Check(auth::Scope::kPublish, "").ok());  // validation answers it
}

TEST(Limiter, PublishRateIsATokenBucket) {
  auth::Limiter limiter(10);
  auth::Principal p;
  p.tenant = "t";
  EXPECT_TRUE(limiter.AdmitPublish(p, 1000000).ok());  // no quota
  p.quotas.max_publish_rate = 10;
  EXPECT_EQ(limiter.AdmitPublish(p, 11).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(limiter.AdmitPublish(p, 10).ok());
  EXPECT_EQ(limiter.AdmitPublish(p, 5).code(), absl::StatusCode::kResourceExhausted);
  auth::Principal other = p;
  other.tenant = "u";
  EXPECT_TRUE(limiter.AdmitPublish(other, 10).ok());  // buckets are per tenant
}

TEST(Limiter, StreamsPerTenantAndPerServer) {
  auth::Limiter limiter(3);
  auth::Principal a, b;
  a.tenant = "a";
  a.quotas.max_streams = 2;
  b.tenant = "b";
  auto a1 = limiter.AcquireStream(a);
  auto a2 = limiter.AcquireStream(a);
  ASSERT_TRUE(a1.ok() && a2.ok());
  EXPECT_EQ(limiter.AcquireStream(a).status().code(), absl::StatusCode::kResourceExhausted);
  auto b1 = limiter.AcquireStream(b);
  ASSERT_TRUE(b1.ok());
  EXPECT_EQ(limiter.AcquireStream(b).status().code(), absl::StatusCode::kUnavailable);
  a1->reset();  // a stream ends
  EXPECT_TRUE(limiter.AcquireStream(a).ok());
}

}  // namespace
}  // namespace pgbus
