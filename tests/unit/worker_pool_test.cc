#include "service/common/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>

#include "absl/synchronization/notification.h"

namespace pgbus {
namespace {

TEST(WorkerPool, RunsEverySubmittedTask) {
  std::atomic<int> ran{0};
  {
    WorkerPool pool("t", 2, 1000);
    for (int i = 0; i < 500; ++i) ASSERT_TRUE(pool.Submit([&] { ran.fetch_add(1); }));
  }  // Stop() drains the queue
  EXPECT_EQ(ran.load(), 500);
}

TEST(WorkerPool, RefusesWorkBeyondTheQueueBound) {
  WorkerPool pool("t", 1, 2);
  absl::Notification release, started;
  ASSERT_TRUE(pool.Submit([&] {
    started.Notify();
    release.WaitForNotification();
  }));
  started.WaitForNotification();  // the only thread is busy
  EXPECT_TRUE(pool.Submit([] {}));
  EXPECT_TRUE(pool.Submit([] {}));
  EXPECT_FALSE(pool.Submit([] {}));  // queue full: shed, not buffered
  release.Notify();
}

TEST(WorkerPool, RefusesWorkAfterStop) {
  WorkerPool pool("t", 1, 10);
  pool.Stop();
  EXPECT_FALSE(pool.Submit([] {}));
}

}  // namespace
}  // namespace pgbus
