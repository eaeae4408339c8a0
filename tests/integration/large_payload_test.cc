// A payload of 256 MiB through a real pgbusd (labelled slow; make test runs
// it): bit for bit, and pgbusd's peak memory grows by far less than the
// payload because it streams chunk by chunk both ways.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <sstream>

#include "absl/time/clock.h"
#include "service/common/sha256.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

constexpr int64_t kSize = 256LL << 20;
constexpr int64_t kMaxGrowthKiB = 64 << 10;  // 64 MiB

TEST(LargePayload, QuarterGibibyteRoundTripInBoundedMemory) {
  testing::Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("big").ok());
  const std::string data = testing::RandomBytes(kSize, 42);
  const int64_t rss_before = server.StatusKiB("VmRSS");
  ASSERT_GT(rss_before, 0);

  // While the upload streams, other calls are served: a small message is
  // published and received before the upload is over.
  ASSERT_TRUE(client->CreateTopic("small").ok());
  ASSERT_TRUE(client->CreateSubscription("small-sub", "small").ok());
  auto sub = client->Subscribe("small-sub");
  std::atomic<bool> upload_done{false};
  absl::StatusOr<v1::UploadPayloadResponse> up = absl::UnknownError("not run");
  std::thread uploader([&] {
    std::istringstream in(data);
    up = client->UploadPayload("big", in);
    upload_done = true;
  });
  absl::SleepFor(absl::Milliseconds(500));  // well into the upload
  bool small_before_upload_end = false;
  if (!upload_done) {
    auto published = client->Publish("small", "ping");
    auto got = testing::Receive(*sub, 1, absl::Seconds(30));
    small_before_upload_end = published.ok() && got.size() == 1 && !upload_done;
  }
  uploader.join();
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_TRUE(small_before_upload_end)
      << "a small publish/receive was not served while the upload ran";
  EXPECT_EQ(up->size(), kSize);
  EXPECT_EQ(up->sha256(), Sha256(data));
  v1::PublishMessage m;
  m.set_payload_handle(up->payload_handle());
  auto ids = client->Publish("big", {m});
  ASSERT_TRUE(ids.ok()) << ids.status();
  const int64_t peak_after_upload = server.StatusKiB("VmHWM");

  std::ostringstream out;
  auto n = client->RetrievePayloadTo((*ids)[0], out);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, kSize);
  EXPECT_TRUE(out.str() == data) << "bytes differ";
  const int64_t peak_after_retrieve = server.StatusKiB("VmHWM");

  EXPECT_LE(peak_after_upload - rss_before, kMaxGrowthKiB)
      << "upload raised pgbusd's peak RSS by " << (peak_after_upload - rss_before) / 1024
      << " MiB";
  EXPECT_LE(peak_after_retrieve - rss_before, kMaxGrowthKiB)
      << "retrieve raised pgbusd's peak RSS by " << (peak_after_retrieve - rss_before) / 1024
      << " MiB";
  std::printf("pgbusd peak RSS growth: upload %lld KiB, retrieve %lld KiB (payload %lld MiB)\n",
              static_cast<long long>(peak_after_upload - rss_before),
              static_cast<long long>(peak_after_retrieve - rss_before),
              static_cast<long long>(kSize >> 20));
}

}  // namespace
}  // namespace pgbus
