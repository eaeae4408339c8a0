// Group commit's batching logic against a recording store. (That the
// batches really share Postgres transactions is checked against Postgres in
// publish_test: ConcurrentPublishesShareTransactions.)
#include "service/bus/publisher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace pgbus::bus {
namespace {

// Stores nothing: records batch sizes and hands out ids. The first batch
// blocks until released, so that calls pile up behind it.
class RecordingStore : public store::PublishStore {
 public:
  absl::Notification release_first;
  absl::Mutex mu;
  std::vector<size_t> batch_sizes ABSL_GUARDED_BY(mu);
  std::atomic<int64_t> next_id{1};

  std::vector<absl::StatusOr<std::vector<int64_t>>> PublishBatch(
      const std::vector<const model::PublishItem*>& items, const std::vector<model::LeaseOffer>&,
      std::vector<model::HandedOff>*) override {
    bool first;
    {
      absl::MutexLock lock(&mu);
      first = batch_sizes.empty();
      batch_sizes.push_back(items.size());
    }
    if (first) release_first.WaitForNotification();
    std::vector<absl::StatusOr<std::vector<int64_t>>> out;
    for (const auto* item : items) {
      if (item->topic == "missing") {
        out.push_back(absl::NotFoundError("topic not found"));
        continue;
      }
      std::vector<int64_t> ids;
      for (size_t i = 0; i < item->messages.size(); ++i) ids.push_back(next_id++);
      out.push_back(ids);
    }
    return out;
  }
};

void Ignore(const std::vector<model::TopicKey>&, const std::vector<model::LeaseOffer>&,
            std::vector<model::HandedOff>) {}

model::PublishItem Item(const std::string& topic, int messages) {
  model::PublishItem item{"tenant", topic, {}};
  item.messages.resize(messages);
  return item;
}

TEST(Publisher, CoalescesCallsQueuedDuringACommit) {
  RecordingStore store;
  std::atomic<int> woken{0};
  Publisher publisher(&store, /*committers=*/1, /*max_batch_messages=*/1000,
                      nullptr,
                      [&](const std::vector<model::TopicKey>& topics,
                          const std::vector<model::LeaseOffer>&,
                          std::vector<model::HandedOff>) { woken += topics.size(); });
  std::atomic<int> done{0};
  std::vector<absl::StatusOr<std::vector<int64_t>>> results(21);
  for (int i = 0; i < 21; ++i) {
    publisher.Publish(Item("t", 1), [&, i](absl::StatusOr<std::vector<int64_t>> r) {
      results[i] = std::move(r);
      done++;
    });
    if (i == 0) {
      // Wait until the first call is inside its (blocked) commit.
      while (true) {
        absl::MutexLock lock(&store.mu);
        if (!store.batch_sizes.empty()) break;
      }
    }
  }
  store.release_first.Notify();
  publisher.Stop();
  ASSERT_EQ(done.load(), 21);
  absl::MutexLock lock(&store.mu);
  // One commit for the first call, one for the 20 that queued behind it.
  EXPECT_EQ(store.batch_sizes, (std::vector<size_t>{1, 20}));
  EXPECT_EQ(publisher.transactions(), 2);
  EXPECT_EQ(publisher.requests(), 21);
  for (const auto& r : results) EXPECT_TRUE(r.ok());
  EXPECT_EQ(woken.load(), 2);  // one wake per committed topic per batch
}

TEST(Publisher, RespectsTheBatchLimitAndAnswersEachCallAlone) {
  RecordingStore store;
  store.release_first.Notify();
  Publisher publisher(&store, 1, /*max_batch_messages=*/5, nullptr, Ignore);
  absl::Notification hold;
  std::vector<absl::StatusOr<std::vector<int64_t>>> results(4);
  std::atomic<int> done{0};
  const char* topics[] = {"a", "missing", "b", "c"};
  for (int i = 0; i < 4; ++i) {
    publisher.Publish(Item(topics[i], 3), [&, i](absl::StatusOr<std::vector<int64_t>> r) {
      results[i] = std::move(r);
      done++;
    });
  }
  publisher.Stop();
  ASSERT_EQ(done.load(), 4);
  EXPECT_TRUE(results[0].ok());
  EXPECT_EQ(results[1].status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(results[2]->size(), 3u);
  absl::MutexLock lock(&store.mu);
  for (size_t n : store.batch_sizes) EXPECT_LE(n * 3, 6u);  // 3-message items, limit 5: 1 each
}

// A second committer leaves the commits to the first until the queue is
// busy (100 messages, but at most a batch: here 5); then it commits beside it.
TEST(Publisher, OtherCommittersWaitForABusyQueue) {
  RecordingStore store;
  Publisher publisher(&store, /*committers=*/2, /*max_batch_messages=*/5,
                      nullptr, Ignore);
  std::atomic<int> done{0};
  auto publish = [&] {
    publisher.Publish(Item("t", 1), [&](absl::StatusOr<std::vector<int64_t>> r) {
      EXPECT_TRUE(r.ok());
      done++;
    });
  };
  auto batches = [&] {
    absl::MutexLock lock(&store.mu);
    return store.batch_sizes;
  };
  publish();
  while (batches().empty()) absl::SleepFor(absl::Milliseconds(1));  // in the blocked commit
  for (int i = 0; i < 4; ++i) publish();
  // Four messages of a batch of five wait for the first committer: the
  // second one (which took them at once before) has not started a commit.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(batches(), (std::vector<size_t>{1}));
  publish();  // the fifth: busy
  for (absl::Time end = absl::Now() + absl::Seconds(10);
       batches().size() < 2 && absl::Now() < end;) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(batches(), (std::vector<size_t>{1, 5}));  // while the first still commits
  store.release_first.Notify();
  publisher.Stop();
  EXPECT_EQ(done.load(), 6);
}

TEST(Publisher, RefusesAfterStop) {
  RecordingStore store;
  store.release_first.Notify();
  Publisher publisher(&store, 1, 10, nullptr, Ignore);
  publisher.Stop();
  absl::Status got;
  publisher.Publish(Item("t", 1), [&](absl::StatusOr<std::vector<int64_t>> r) { got = r.status(); });
  EXPECT_EQ(got.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace pgbus::bus
