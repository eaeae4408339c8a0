// Group commit: Publish calls that arrive while a transaction is committing
// queue up and are committed together in the next one, so N concurrent
// callers cost far fewer than N commits (and fsyncs). Each call still gets
// its own result, and a caller is answered only after its commit. One
// committer takes whatever is queued; the others start only when the queue
// is busy (see Run).
//
// Thread safety: Publish() from any thread; callbacks run on a committer
// thread and must not block.
#ifndef PGBUS_SERVICE_BUS_PUBLISHER_H_
#define PGBUS_SERVICE_BUS_PUBLISHER_H_

#include <atomic>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "service/store/store.h"

namespace pgbus::bus {

class Publisher {
 public:
  using Done = std::function<void(absl::StatusOr<std::vector<int64_t>>)>;
  // Before each group commit: idle local streams of the batch's topics
  // offer their credit (bus::Dispatcher::Offer).
  using Offer =
      std::function<std::vector<model::LeaseOffer>(const std::vector<model::TopicKey>&)>;
  // After it, with the topics it stored messages to and what it leased to
  // each offer (nothing when it failed): to hand the deliveries to their
  // streams and wake the others without waiting for NOTIFY to come back.
  using Committed =
      std::function<void(const std::vector<model::TopicKey>& topics,
                         const std::vector<model::LeaseOffer>& offers,
                         std::vector<model::HandedOff> handed)>;

  // At most `max_queued_calls` calls wait for a commit; beyond that Publish
  // answers UNAVAILABLE at once, so overload sheds load instead of queueing
  // without end. (Their bytes are bounded before they get here, by the
  // server's max_call_memory_mb: see api::BusService::Publish.) `offer` may
  // be empty (no offers).
  Publisher(store::PublishStore* store, int committers, int max_batch_messages, Offer offer,
            Committed on_committed, size_t max_queued_calls = 10000);
  ~Publisher();  // Stop()s.

  // Queues the item. `done` gets the message ids once committed, or the
  // error. UNAVAILABLE when stopping or when the queue is full.
  void Publish(model::PublishItem item, Done done);
  // Commits what is queued, then joins the committers.
  void Stop();

  // Counters, for tests and metrics.
  int64_t transactions() const { return transactions_.load(); }
  int64_t requests() const { return requests_.load(); }

 private:
  struct Pending {
    model::PublishItem item;
    int64_t bytes;  // of its payloads
    Done done;
  };
  void Run(int index);  // committer `index`, from 0

  store::PublishStore* const store_;
  const int max_batch_messages_;
  const int busy_messages_;  // queued, from which other committers commit too
  const Offer offer_;
  const Committed on_committed_;
  const size_t max_queued_calls_;
  absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_messages_ ABSL_GUARDED_BY(mu_) = 0;  // in queue_
  int64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;     // their payloads
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  std::atomic<int64_t> transactions_{0};
  std::atomic<int64_t> requests_{0};
};

}  // namespace pgbus::bus

#endif  // PGBUS_SERVICE_BUS_PUBLISHER_H_
