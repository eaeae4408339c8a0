#include "service/bus/publisher.h"

#include <set>
#include <utility>

#include "absl/time/clock.h"
#include "service/obs/metrics.h"

namespace pgbus::bus {
namespace {
// Payload bytes in one group commit (one call may exceed it alone): bounds
// the memory of the statement that carries them.
constexpr int64_t kMaxBatchBytes = 8 << 20;
}  // namespace

Publisher::Publisher(store::PublishStore* store, int committers, int max_batch_messages,
                     Committed on_committed, size_t max_queued_calls)
    : store_(store),
      max_batch_messages_(max_batch_messages),
      on_committed_(std::move(on_committed)),
      max_queued_calls_(max_queued_calls) {
  for (int i = 0; i < committers; ++i) threads_.emplace_back([this] { Run(); });
}

Publisher::~Publisher() { Stop(); }

void Publisher::Publish(model::PublishItem item, Done done) {
  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    stopping = stopping_;
    if (!stopping_ && queue_.size() < max_queued_calls_) {
      queue_.push_back(Pending{std::move(item), std::move(done)});
      return;
    }
  }
  done(absl::UnavailableError(
      stopping ? "server is shutting down; retry on another replica"
               : "server overloaded: too many publishes are waiting for a commit; retry with "
                 "backoff"));
}

void Publisher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void Publisher::Run() {
  for (;;) {
    std::vector<Pending> batch;
    int messages = 0;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, drained
      // Take everything that queued while the last commit ran, up to the
      // batch limit (always at least one call).
      int64_t bytes = 0;
      while (!queue_.empty()) {
        int n = static_cast<int>(queue_.front().item.messages.size());
        int64_t b = 0;
        for (const auto& m : queue_.front().item.messages) b += m.payload.size();
        if (!batch.empty() &&
            (messages + n > max_batch_messages_ || bytes + b > kMaxBatchBytes)) {
          break;
        }
        messages += n;
        bytes += b;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    std::vector<const model::PublishItem*> items;
    items.reserve(batch.size());
    for (const Pending& p : batch) items.push_back(&p.item);
    const absl::Time started = absl::Now();
    auto results = store_->PublishBatch(items);
    obs::CountPublishCommit(messages, absl::Now() - started);
    transactions_.fetch_add(1);
    requests_.fetch_add(static_cast<int64_t>(batch.size()));
    std::set<model::TopicKey> committed;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (results[i].ok()) committed.insert({batch[i].item.tenant, batch[i].item.topic});
      batch[i].done(std::move(results[i]));
    }
    for (const auto& key : committed) on_committed_(key);
  }
}

}  // namespace pgbus::bus
