// Feeds Subscribe streams. Each stream claims batches of its subscription's
// deliveries (FOR UPDATE SKIP LOCKED, so streams on every replica compete
// safely) on the worker pool, sends one batch at a time, and claims again
// when the batch is written (unless its claim took all that was ready),
// when a publish to its topic commits (on this replica directly, on others
// through NOTIFY), when acks return credit it had run out of (or settle a
// message with an ordering key, or nack one), and on a slow poll as the
// fallback. It never has more than its flow-control limits leased and
// unacked.
//
// An Ack or deadline change that reaches this replica settles the stream's
// credit at once (LeasesChanged). One that reaches another replica (a
// proxy or client balancing each call on its own) is found by the poll:
// leases a stream has held for two poll intervals without hearing of them
// are looked up (store::DeliveryStore::HeldLeases, read-only), and those no
// longer held return their credit; the others take their current deadline
// and are looked up again after half their age so far (two poll intervals
// at least), so a consumer that keeps its leases for long costs few
// lookups. Without that, such a stream stalled until the deadlines of
// leases already acked ran out.
//
// A group commit may lease its deliveries straight to idle streams of this
// replica (Offer, then Committed): a stream whose last claim took all that
// was ready, with credit left, offers it to the commit, and gets the
// deliveries the commit leased to it without a claim of its own (publish ->
// receive is then one transaction, not two). Delayed messages, uploaded
// payloads, messages held back by an earlier one of their ordering key, and
// those beyond the credit stay for a claim as before.
//
// Thread safety: every method may be called from any thread.
#ifndef PGBUS_SERVICE_BUS_DISPATCHER_H_
#define PGBUS_SERVICE_BUS_DISPATCHER_H_

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/common/worker_pool.h"
#include "service/store/store.h"

namespace pgbus::bus {

// Where a stream's messages go: the api layer's reactor.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Starts sending `batch`; at most one send is in flight, and the sink
  // calls Stream::OnSent() when it completes. False when the stream has
  // already ended (the batch is dropped; its leases run out).
  virtual bool Send(std::vector<model::Delivery> batch) = 0;
  // Ends the stream with `status` (once; later calls do nothing).
  virtual void End(const absl::Status& status) = 0;
};

struct StreamOptions {
  std::string tenant;
  std::string subscription;
  std::string topic;
  int64_t max_outstanding_messages = 1000;
  int64_t max_outstanding_bytes = 100 << 20;
  absl::Duration ack_deadline = absl::Seconds(30);
  // The subscription dead-letters (max_delivery_attempts > 0): each claim
  // first moves exhausted deliveries to the dead-letter topic.
  bool dead_letters = false;
};

class Dispatcher;

class Stream : public std::enable_shared_from_this<Stream> {
 public:
  Stream(Dispatcher* dispatcher, StreamOptions options, int64_t lease,
         std::shared_ptr<StreamSink> sink);

  // Starts claiming. Call once, after the sink can take a batch: Open()
  // returns a stream that has claimed nothing yet.
  void Start() { Kick(); }
  // The sink finished sending the last batch.
  void OnSent();
  // The stream is over (client gone or ended): no more claims or sends.
  void Close();
  int64_t lease() const { return lease_; }
  // Messages leased to this stream and not yet settled.
  int64_t outstanding();
  const StreamOptions& options() const { return options_; }

 private:
  friend class Dispatcher;
  enum class State { kIdle, kClaiming, kSending, kClosed };

  // Claims if idle and there is credit; otherwise remembers to look again.
  void Kick();
  void ClaimOnce();
  // Not claiming, drained (its last claim took all that was ready and
  // nothing woke it since) and with credit: reserved for a group commit
  // and its credit returned; otherwise nothing. Until TakeHandOff the
  // stream does not claim.
  std::optional<model::LeaseOffer> Reserve();
  // The group commit it was reserved for is over: sends what it leased
  // (after the batch being sent, if any).
  void TakeHandOff(model::HandedOff handed);
  // What the flow-control limits leave (negative when a first message
  // went over the byte limit).
  struct Credit {
    int64_t messages = 0;
    int64_t bytes = 0;
    bool any() const { return messages > 0 && bytes > 0; }
  };
  Credit CreditLeft() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts `batch` as outstanding (claimed at `at`).
  void AddOutstanding(const std::vector<model::Delivery>& batch, absl::Time at)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends a batch leased to this stream; gives it back if the stream ended.
  void SendBatch(const std::shared_ptr<StreamSink>& sink, std::vector<model::Delivery> batch);
  // Release() on the worker pool.
  void GiveBack(std::vector<model::LeaseKey> keys);
  // Drops leases that ran out; they are no longer this stream's.
  void PruneExpired(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<model::LeaseKey> LeaseKeys(const std::vector<model::Delivery>& batch) const;
  // Gives the leases back at once (store::DeliveryStore::ReleaseLeases); blocks.
  void Release(const std::vector<model::LeaseKey>& keys);
  // Server shutdown: closes the stream, gives back the leases it holds and
  // ends its sink with `status`. Returns how many leases went back. Blocks
  // on the store.
  int64_t ShutDown(const absl::Status& status);
  // Acked, nacked or extended leases (same replica).
  void LeasesChanged(const std::vector<model::LeaseKey>& keys, const std::vector<bool>& ok,
                     std::optional<absl::Time> new_expiry, bool ready_again);
  // The poll: looks up the leases due for a check at `now` (at most one
  // lookup in flight), on the worker pool.
  void CheckQuietLeases(absl::Time now);
  void ApplyHeldLeases(const std::vector<model::LeaseKey>& keys);
  // How long a lease goes unheard of before it is looked up: two polls.
  absl::Duration Quiet() const;

  struct Outstanding {
    int64_t bytes = 0;
    absl::Time expiry;
    absl::Time claimed;
    absl::Time next_check;  // when to look it up (CheckQuietLeases)
    bool keyed;  // has an ordering key: settling it may make the next one claimable
  };

  Dispatcher* const dispatcher_;
  const StreamOptions options_;
  const int64_t lease_;
  absl::Mutex mu_;
  std::shared_ptr<StreamSink> sink_ ABSL_GUARDED_BY(mu_);
  State state_ ABSL_GUARDED_BY(mu_) = State::kIdle;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;  // woken while busy: look again
  bool drained_ ABSL_GUARDED_BY(mu_) = false;  // the last claim took all that was ready
  bool checking_ ABSL_GUARDED_BY(mu_) = false;  // a HeldLeases lookup is in flight
  bool offered_ ABSL_GUARDED_BY(mu_) = false;  // reserved by a group commit (Reserve)
  // Handed off while a batch was being sent: sent next (OnSent).
  std::vector<model::Delivery> queued_ ABSL_GUARDED_BY(mu_);
  // (message id, attempt) -> lease details
  std::map<std::pair<int64_t, int32_t>, Outstanding> outstanding_ ABSL_GUARDED_BY(mu_);
  int64_t outstanding_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

class Dispatcher {
 public:
  struct Options {
    absl::Duration poll_interval = absl::Milliseconds(500);
    // Rows one claim takes at most (fewer when the stream's credit is
    // smaller). A claim's fixed cost (its round trip, the due-lease check,
    // the walk to the first ready row) spreads over more messages: the
    // consume figure of make bench (2 streams, 1,000 outstanding each) made
    // 30,000 msg/s at 100 a claim and 32,500-39,000 at 200-500 (2-core VM,
    // two runs each; 200 the steadiest).
    int max_claim_batch = 200;
  };
  Dispatcher(store::DeliveryStore* store, WorkerPool* pool, Options options);
  ~Dispatcher();  // Shutdown()s.

  // Registers a stream; Stream::Start() starts feeding it. UNAVAILABLE when
  // shutting down.
  absl::StatusOr<std::shared_ptr<Stream>> Open(StreamOptions options,
                                               std::shared_ptr<StreamSink> sink);
  // Publishes committed to these topics (empty: any topic may have changed).
  void Wake(const std::vector<model::TopicKey>& topics);
  // bus::Publisher's Offer: reserves the idle streams of the topics for a
  // group commit and returns their credit: one stream a subscription, the
  // one with the fewest messages outstanding (in rotation among equals),
  // so that the streams of a subscription share the work.
  std::vector<model::LeaseOffer> Offer(const std::vector<model::TopicKey>& topics);
  // bus::Publisher's Committed: hands each offer what the commit leased to
  // it, and wakes the streams of `topics` that may have more to claim.
  void Committed(const std::vector<model::TopicKey>& topics,
                 const std::vector<model::LeaseOffer>& offers,
                 std::vector<model::HandedOff> handed);
  // Deliveries of the subscription became ready again (leases given back).
  void WakeSubscription(const std::string& tenant, const std::string& subscription);
  // Leases settled by Ack / ModifyAckDeadline on this replica; returns
  // credit to the streams that hold them. `new_expiry` unset: lease ended;
  // `ready_again`: ended by a nack (the message may be claimable at once),
  // not an ack.
  void LeasesChanged(const std::vector<model::LeaseKey>& keys, const std::vector<bool>& ok,
                     std::optional<absl::Time> new_expiry, bool ready_again = false);
  // Streams open on this replica for the subscription.
  // Open streams and the messages leased to them, for metrics.
  struct Counts {
    int64_t streams = 0;
    int64_t outstanding = 0;
  };
  Counts Count();
  int64_t ActiveStreams(const std::string& tenant, const std::string& subscription);
  // Ends every stream with `status` and refuses new ones, first giving back
  // the leases each stream holds (blocks on the store: call it from a
  // thread that may wait, not a gRPC one).
  void Shutdown(const absl::Status& status);

 private:
  friend class Stream;
  void Remove(Stream* stream);
  void PollLoop();
  std::vector<std::shared_ptr<Stream>> Snapshot(const std::vector<model::TopicKey>* topics);
  // The open streams of one subscription.
  std::vector<std::shared_ptr<Stream>> StreamsOf(const std::string& tenant,
                                                 const std::string& subscription);

  store::DeliveryStore* const store_;
  WorkerPool* const pool_;
  const Options options_;
  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::map<int64_t, std::weak_ptr<Stream>> by_lease_ ABSL_GUARDED_BY(mu_);
  // Streams reserved by Offer until their group commit is Committed.
  std::map<int64_t, std::shared_ptr<Stream>> reserved_ ABSL_GUARDED_BY(mu_);
  std::thread poller_;
  // Turns of Offer: streams of a subscription equally loaded take the
  // offers in rotation.
  std::atomic<uint64_t> offer_turn_{0};
};

}  // namespace pgbus::bus

#endif  // PGBUS_SERVICE_BUS_DISPATCHER_H_
