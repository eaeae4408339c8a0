#include "service/bus/ack_id.h"

#include <gtest/gtest.h>

namespace pgbus::bus {
namespace {

TEST(AckId, RoundTripsEveryField) {
  store::LeaseKey key{1234567890123, 7, 0x7fffffffffffffffLL};
  auto decoded = DecodeAckId(EncodeAckId(key));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, key);
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
