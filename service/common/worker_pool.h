#ifndef PGBUS_SERVICE_COMMON_WORKER_POOL_H_
#define PGBUS_SERVICE_COMMON_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace pgbus {

// A fixed set of threads running blocking work (database calls) off the gRPC
// threads, with a bounded queue so that overload is refused, not buffered.
//
// Thread safety: all methods may be called from any thread.
class WorkerPool {
 public:
  WorkerPool(std::string name, int threads, size_t max_queued);
  ~WorkerPool();  // Stop()s.
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; false (and `task` is dropped) when the queue is full or
  // the pool is stopping.
  bool Submit(std::function<void()> task);
  // Tasks waiting for a thread.
  size_t QueueDepth();
  // Runs what is queued, then joins the threads. Idempotent.
  void Stop();

 private:
  void Run();

  const std::string name_;
  const size_t max_queued_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace pgbus

#endif  // PGBUS_SERVICE_COMMON_WORKER_POOL_H_
