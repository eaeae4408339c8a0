// Deletes expired messages (and their deliveries and payloads) in bounded
// batches, on a timer, through the worker pool. Every replica runs one;
// SKIP LOCKED in the store lets them share the work.
//
// Thread safety: construct, then Stop() or destroy from one thread.
#ifndef PGBUS_SERVICE_BUS_REAPER_H_
#define PGBUS_SERVICE_BUS_REAPER_H_

#include <atomic>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/common/worker_pool.h"
#include "service/store/store.h"

namespace pgbus::bus {

class Reaper {
 public:
  Reaper(store::MaintenanceStore* store, WorkerPool* pool, absl::Duration interval, int batch);
  ~Reaper();  // Stop()s.
  void Stop();
  // Messages deleted so far (tests, metrics).
  int64_t reaped() const { return reaped_.load(); }

 private:
  void Loop();
  void ReapOnce();

  store::MaintenanceStore* const store_;
  WorkerPool* const pool_;
  const absl::Duration interval_;
  const int batch_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // a pass is queued or running
  std::atomic<int64_t> reaped_{0};
  std::thread thread_;
};

}  // namespace pgbus::bus

#endif  // PGBUS_SERVICE_BUS_REAPER_H_
