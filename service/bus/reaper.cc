#include "service/bus/reaper.h"

#include "service/obs/log.h"
#include "service/obs/metrics.h"

namespace pgbus::bus {

Reaper::Reaper(store::MaintenanceStore* store, WorkerPool* pool, absl::Duration interval, int batch)
    : store_(store), pool_(pool), interval_(interval), batch_(batch) {
  thread_ = std::thread([this] { Loop(); });
}

Reaper::~Reaper() { Stop(); }

void Reaper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  // Wait for a pass still on the pool.
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !running_; };
  mu_.Await(absl::Condition(&idle));
}

void Reaper::Loop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), interval_)) return;
      if (running_) continue;  // the last pass is still going
      running_ = true;
    }
    if (!pool_->Submit([this] { ReapOnce(); })) {
      absl::MutexLock lock(&mu_);
      running_ = false;  // overloaded: try at the next tick
    }
  }
}

void Reaper::ReapOnce() {
  auto analysed = store_->RefreshStatistics();
  if (!analysed.ok()) {
    obs::Warn("refresh_statistics_failed", {{"error", analysed.status().ToString()}});
  }
  // Batch after batch while they come back full, so a backlog drains, but
  // each batch is its own short transaction.
  for (int round = 0; round < 100; ++round) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    auto n = store_->ReapExpired(batch_);
    if (!n.ok()) {
      obs::Warn("reap_failed", {{"error", n.status().ToString()}});
      break;
    }
    reaped_ += *n;
    obs::CountReaped(*n);
    if (*n < batch_) break;
  }
  absl::MutexLock lock(&mu_);
  running_ = false;
}

}  // namespace pgbus::bus
