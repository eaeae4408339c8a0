#include "service/bus/ack_id.h"

#include <gtest/gtest.h>

namespace pgbus::bus {
namespace {

TEST(AckId, RoundTripsEveryField) {
  model::LeaseKey key{1234567890123, 7, 0x7fffffffffffffffLL};
  auto decoded = DecodeAckId(EncodeAckId(key));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, key);
}

// The lease is always 16 hex digits, so ack ids of one message and attempt
// have one length (a lease with leading zero digits used to be shorter).
TEST(AckId, TheLeaseIsAlwaysSixteenHexDigits) {
  EXPECT_EQ(EncodeAckId({42, 3, 0x0123456789abcdefLL}), "42-3-0123456789abcdef");
  EXPECT_EQ(EncodeAckId({42, 3, 1}), "42-3-0000000000000001");
  EXPECT_EQ(*DecodeAckId("42-3-0000000000000001"), (model::LeaseKey{42, 3, 1}));
}

TEST(AckId, RejectsWhatItDidNotMake) {
  for (const char* bad : {"", "1", "1-2", "1-2-3-4", "x-1-ff", "1-x-ff", "1-1-zz", "0-1-ff",
                          "1-0-ff", "-1-1-ff", "1-1-", "1-1-11111111111111111"}) {
    auto decoded = DecodeAckId(bad);
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(MessageId, AcceptsPositiveDecimalOnly) {
  EXPECT_EQ(*DecodeMessageId("42"), 42);
  for (const char* bad : {"", "0", "-3", "abc", "1.5", "99999999999999999999"}) {
    EXPECT_EQ(DecodeMessageId(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace pgbus::bus
