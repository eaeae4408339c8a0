// Tenant quotas and server limits: RESOURCE_EXHAUSTED naming the limit (or
// UNAVAILABLE for server overload), and nothing partly stored.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::CountAsOwner;
using testing::Pgbusd;
using testing::UniqueName;

const std::vector<std::string> kAuthOn = {"--dev-mode=false", "--auth-cache-ms", "0"};

// What the tenant's ledger says it stores, as pgbusd's role sees it.
int64_t StoredBytes(const std::string& tenant) {
  return testing::ScalarAsTenant(tenant,
                                 "SELECT coalesce(sum(bytes), 0) FROM pgbus.tenant_usage");
}

TEST(Quota, MaxMessageBytes) {
  Pgbusd server(kAuthOn);
  std::string tenant = UniqueName("tenant");
  auto client = server.Connect(
      testing::CreateTenantWithKey(tenant, {"--max-message-bytes", "1000"}));
  ASSERT_TRUE(client->CreateTopic("t").ok());
  EXPECT_TRUE(client->Publish("t", std::string(1000, 'a')).ok());
  std::vector<v1::PublishMessage> two(2);
  two[0].set_payload("small");
  two[1].set_payload(std::string(1001, 'b'));
  auto st = client->Publish("t", two).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(st.message(), "messages[1]")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "max_message_bytes=1000")) << st;
  // Uploads count too, and leave nothing behind.
  std::istringstream in(std::string(3000, 'c'));
  auto up = client->UploadPayload("t", in);
  EXPECT_EQ(up.status().code(), absl::StatusCode::kResourceExhausted) << up.status();
  EXPECT_EQ(CountAsOwner(tenant, "SELECT 1 FROM pgbus.messages"), 1);
  for (int i = 0; i < 100 && CountAsOwner(tenant, "SELECT 1 FROM pgbus.payloads") > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(CountAsOwner(tenant, "SELECT 1 FROM pgbus.payloads"), 0);
}

TEST(Quota, MaxStoredBytesIsEnforcedByPostgres) {
  Pgbusd server(kAuthOn);
  std::string tenant = UniqueName("tenant");
  auto client = server.Connect(
      testing::CreateTenantWithKey(tenant, {"--max-stored-bytes", "10000"}));
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->Publish("t", std::string(6000, 'a')).ok());
  EXPECT_EQ(StoredBytes(tenant), 6000);
  auto st = client->Publish("t", std::string(5000, 'b')).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(st.message(), "max_stored_bytes=10000")) << st;
  // A batch that fits only in part is refused as a whole.
  std::vector<v1::PublishMessage> batch(2);
  batch[0].set_payload(std::string(3000, 'c'));
  batch[1].set_payload(std::string(3000, 'd'));
  EXPECT_EQ(client->Publish("t", batch).status().code(), absl::StatusCode::kResourceExhausted);
  // Chunks of an upload count as well.
  std::istringstream in(std::string(5000, 'e'));
  EXPECT_EQ(client->UploadPayload("t", in).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(CountAsOwner(tenant, "SELECT 1 FROM pgbus.messages"), 1);
  EXPECT_EQ(StoredBytes(tenant), 6000);
  testing::CommandResult shown = testing::RunPgbusd({"tenant", "show", tenant});
  EXPECT_TRUE(absl::StrContains(shown.out, "stored_bytes: 6000")) << shown.out;

  // Raising the quota takes effect at once (it is read by the statement).
  ASSERT_EQ(testing::RunPgbusd({"tenant", "set", tenant, "--max-stored-bytes", "20000"})
                .exit_code,
            0);
  EXPECT_TRUE(client->Publish("t", batch).ok());
  EXPECT_EQ(StoredBytes(tenant), 12000);
  // Deleting the topic gives the bytes back.
  ASSERT_TRUE(testing::DeleteTopic(*client, "t").ok());
  EXPECT_EQ(StoredBytes(tenant), 0);
  // The reaper folds the ledger (here: to nothing, as the sum is 0).
  int64_t rows = -1;
  for (int i = 0; i < 100 && rows != 0; ++i) {
    rows = CountAsOwner(tenant, "SELECT 1 FROM pgbus.tenant_usage");
    if (rows != 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(rows, 0);
}

// An uploaded payload is stored once (its chunks), however it is published.
TEST(Quota, AnUploadCountsOnceAgainstStoredBytes) {
  Pgbusd server(kAuthOn);
  std::string tenant = UniqueName("tenant");
  constexpr int64_t kMiB = 1 << 20;
  auto client = server.Connect(testing::CreateTenantWithKey(
      tenant, {"--max-stored-bytes", std::to_string(3 * kMiB)}));
  ASSERT_TRUE(client->CreateTopic("t").ok());
  const std::string data = testing::RandomBytes(2 * kMiB, 7);
  auto id = client->PublishPayload("t", data, /*inline_limit=*/0);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(StoredBytes(tenant), 2 * kMiB);
  testing::CommandResult shown = testing::RunPgbusd({"tenant", "show", tenant});
  EXPECT_TRUE(absl::StrContains(shown.out, absl::StrCat("stored_bytes: ", 2 * kMiB)))
      << shown.out;
  // What is left of the quota is still usable.
  auto more = client->Publish("t", std::string(kMiB / 4, 'x'));
  EXPECT_TRUE(more.ok()) << more.status();
  // Deleting the topic gives back exactly what was counted.
  ASSERT_TRUE(testing::DeleteTopic(*client, "t").ok());
  EXPECT_EQ(StoredBytes(tenant), 0);
}

TEST(Quota, MaxPublishRate) {
  Pgbusd server(kAuthOn);
  std::string tenant = UniqueName("tenant");
  auto client = server.Connect(
      testing::CreateTenantWithKey(tenant, {"--max-publish-rate", "5"}));
  ASSERT_TRUE(client->CreateTopic("t").ok());
  std::vector<v1::PublishMessage> six(6);
  for (auto& m : six) m.set_payload("x");
  auto too_big = client->Publish("t", six).status();
  EXPECT_EQ(too_big.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(too_big.message(), "max_publish_rate=5")) << too_big;
  // 20 as fast as possible: the bucket holds 5 and refills at 5/s.
  int ok = 0, limited = 0;
  for (int i = 0; i < 20; ++i) {
    auto st = client->Publish("t", "x").status();
    if (st.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
      EXPECT_TRUE(absl::StrContains(st.message(), "max_publish_rate=5")) << st;
      ++limited;
    }
  }
  EXPECT_GE(ok, 5);
  EXPECT_GT(limited, 0);
  EXPECT_EQ(CountAsOwner(tenant, "SELECT 1 FROM pgbus.messages"), ok);
}

TEST(Quota, MaxStreamsOfATenant) {
  Pgbusd server(kAuthOn);
  std::string tenant = UniqueName("tenant");
  auto client = server.Connect(testing::CreateTenantWithKey(tenant, {"--max-streams", "1"}));
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  auto first = client->Subscribe("s");
  ASSERT_TRUE(client->Publish("t", "x").ok());
  ASSERT_EQ(testing::Receive(*first, 1, absl::Seconds(10)).size(), 1u);  // attached
  auto second = client->Subscribe("s");
  auto st = second->Next(absl::Seconds(10)).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(st.message(), "max_streams=1")) << st;
  // Closing the first frees its place.
  first->Cancel();
  first.reset();
  bool attached = false;
  for (int i = 0; i < 50 && !attached; ++i) {
    auto third = client->Subscribe("s");
    auto next = third->Next(absl::Seconds(1));
    attached = next.ok();  // no message, but no error either: it is attached
    if (!attached) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(attached);
}

TEST(Quota, ServerStreamLimitShedsWithUnavailable) {
  Pgbusd server({"--max-streams", "1"});
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  auto first = client->Subscribe("s");
  ASSERT_TRUE(client->Publish("t", "x").ok());
  ASSERT_EQ(testing::Receive(*first, 1, absl::Seconds(10)).size(), 1u);
  auto st = client->Subscribe("s")->Next(absl::Seconds(10)).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(st.message(), "max_streams=1")) << st;
}

// 2,000 Publish calls of 128 KiB at once (250 MiB of payload) against a
// server allowed 32 MiB for calls in flight: its memory stays within that
// plus a fixed overhead, and what does not fit is refused, not queued.
TEST(Quota, CallMemoryIsBoundedAndTheExcessShed) {
  constexpr int64_t kBudgetMiB = 32;
  Pgbusd server({"--max-call-memory-mb", std::to_string(kBudgetMiB)});
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->Publish("t", "warm-up").ok());
  const int64_t before_kib = server.StatusKiB("VmRSS");
  constexpr int kCalls = 2000;
  v1::PublishRequest req;
  req.set_topic("t");
  req.add_messages()->set_payload(testing::RandomBytes(128 * 1024, 3));
  std::vector<grpc::ClientContext> contexts(kCalls);
  std::vector<v1::PublishResponse> responses(kCalls);
  absl::Mutex mu;
  int done = 0, ok = 0, shed = 0;
  std::string first_shed;
  std::vector<std::string> other;
  for (int i = 0; i < kCalls; ++i) {
    contexts[i].set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    client->bus().async()->Publish(&contexts[i], &req, &responses[i], [&](grpc::Status st) {
      absl::MutexLock lock(&mu);
      ++done;
      if (st.ok()) {
        ++ok;
      } else if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                 st.error_code() == grpc::StatusCode::UNAVAILABLE) {
        if (++shed == 1) first_shed = st.error_message();
      } else {
        other.push_back(st.error_message());
      }
    });
  }
  int64_t peak_kib = 0;
  for (;;) {
    peak_kib = std::max(peak_kib, server.StatusKiB("VmRSS"));
    absl::MutexLock lock(&mu);
    if (mu.AwaitWithTimeout(absl::Condition(
                                +[](int* d) { return *d == kCalls; }, &done),
                            absl::Milliseconds(5))) {
      break;
    }
  }
  peak_kib = std::max(peak_kib, server.StatusKiB("VmHWM"));  // between samples too
  const int64_t grown_mib = (peak_kib - before_kib) / 1024;
  std::printf("call memory: ok %d shed %d, RSS before %lld MiB, peak +%lld MiB\n", ok, shed,
              static_cast<long long>(before_kib / 1024), static_cast<long long>(grown_mib));
  for (const auto& o : other) std::printf("  %s\n", o.c_str());
  EXPECT_EQ(ok + shed, kCalls) << "calls failed otherwise";
  EXPECT_GT(shed, 0) << "nothing was shed";
  EXPECT_TRUE(absl::StrContains(first_shed, "max_call_memory_mb=32")) << first_shed;
  EXPECT_GT(ok, 0);
  // The budget plus a fixed overhead: what gRPC holds for the calls open on
  // the connection (max_calls_per_connection, 100, x 128 KiB, read and
  // decoded), threads' stacks, allocator slack. (Before the budget was
  // real: +667 MiB.)
  EXPECT_LE(grown_mib, kBudgetMiB + 96);
}

TEST(Quota, QueuedWorkIsBoundedAndShedWithUnavailable) {
  Pgbusd server({"--workers", "1", "--max-queued-tasks", "1"});
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  // Many calls at once: one runs, one waits, the rest are refused at once.
  constexpr int kCalls = 200;
  std::atomic<int> ok{0}, shed{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < kCalls / 8; ++k) {
        grpc::ClientContext ctx;
        v1::GetTopicRequest req;
        req.set_name("t");
        v1::GetTopicResponse resp;
        grpc::Status st = client->admin().GetTopic(&ctx, req, &resp);
        if (st.ok()) {
          ++ok;
        } else if (st.error_code() == grpc::StatusCode::UNAVAILABLE &&
                   absl::StrContains(st.error_message(), "overloaded")) {
          ++shed;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(shed.load(), 0);
  EXPECT_EQ(other.load(), 0);
  // And it recovers.
  EXPECT_TRUE(client->CreateTopic("after").ok());
}

}  // namespace
}  // namespace pgbus
