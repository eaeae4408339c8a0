#include "pgbus/receiver.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/cord.h"
#include "absl/synchronization/mutex.h"

namespace pgbus {

namespace {

constexpr char kLeaseExpiredPayload[] = "type.pgbus.dev/lease-expired";
// ModifyAckDeadline takes at most this many ack ids a call.
constexpr size_t kMaxIdsPerCall = 10000;
// The most acks one Ack call carries (the server takes 10000; 1000 keeps a
// call's statement and answer short).
constexpr size_t kMaxAcksPerCall = 1000;

absl::Status LeaseExpiredError(absl::string_view why) {
  absl::Status st = absl::AbortedError(why);
  st.SetPayload(kLeaseExpiredPayload, absl::Cord("1"));
  return st;
}

absl::Status AlreadySettled() {
  return LeaseExpiredError("this message was acked or nacked already");
}

// What became of the i-th of the `n` ack ids of a call that answered
// `statuses` (an answer without one status per id settles none of them).
absl::Status Outcome(const absl::StatusOr<std::vector<v1::AckStatus>>& statuses, size_t i,
                     size_t n) {
  if (!statuses.ok()) return statuses.status();
  if (statuses->size() == n && (*statuses)[i] == v1::ACK_STATUS_OK) return absl::OkStatus();
  return LeaseExpiredError(
      "the lease had run out: the message was delivered again or settled already, and may be "
      "processed again");
}

std::future<absl::Status> Ready(absl::Status st) {
  std::promise<absl::Status> p;
  p.set_value(std::move(st));
  return p.get_future();
}

// The errors that opening the stream again cannot cure.
bool Permanent(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool IsLeaseExpired(const absl::Status& status) {
  return status.GetPayload(kLeaseExpiredPayload).has_value();
}

struct Received::Delivery {
  explicit Delivery(v1::ReceivedMessage m) : received(std::move(m)) {}

  const v1::ReceivedMessage received;
  std::atomic<bool> settled{false};
};

namespace internal {

// Shared by the Receiver's threads and every Received it handed out (which
// may be settled after the Receiver is gone).
//
// Threads: one reader (opens the stream, again after it ends, and queues
// what arrives), `settings.threads` handler threads (take from the queue),
// one leaser (extends the leases of unsettled messages), one acker (sends
// the queued acks, one Ack call at a time). One mutex guards everything
// below it; no call is made while holding it.
struct ReceiverState : std::enable_shared_from_this<ReceiverState> {
  ReceiverState(Client* c, std::string s, Receiver::Handler h, ReceiveSettings r)
      : client(c), subscription(std::move(s)), handler(std::move(h)), settings(r) {}

  void Read();
  void Work();
  void Lease();
  void SendAcks();
  // Queues an ack for the acker; after Stop, acks at once.
  std::future<absl::Status> QueueAck(const std::string& ack_id);
  void Forget(const std::string& ack_id) {
    absl::MutexLock lock(&mu);
    leased.erase(ack_id);
  }
  Received Wrap(v1::ReceivedMessage m) {
    return Received(shared_from_this(), std::make_shared<Received::Delivery>(std::move(m)));
  }

  Client* const client;
  const std::string subscription;
  const Receiver::Handler handler;
  const ReceiveSettings settings;

  absl::Mutex mu;
  std::deque<Received> queue ABSL_GUARDED_BY(mu);
  // Unsettled deliveries: ack id -> when received.
  absl::flat_hash_map<std::string, absl::Time> leased ABSL_GUARDED_BY(mu);
  grpc::ClientContext* stream ABSL_GUARDED_BY(mu) = nullptr;
  bool stopping ABSL_GUARDED_BY(mu) = false;      // the reader should end
  bool reader_done ABSL_GUARDED_BY(mu) = false;   // it has: nothing more is queued
  bool leaser_done ABSL_GUARDED_BY(mu) = false;   // the leaser should end
  std::optional<absl::Status> ended ABSL_GUARDED_BY(mu);  // a permanent error
  int reconnects ABSL_GUARDED_BY(mu) = 0;
  struct PendingAck {
    std::string ack_id;
    std::promise<absl::Status> done;
  };
  std::vector<PendingAck> acks ABSL_GUARDED_BY(mu);  // queued for the acker
  bool acker_done ABSL_GUARDED_BY(mu) = false;       // send what is queued, then end
  int64_t ack_calls ABSL_GUARDED_BY(mu) = 0;

  absl::Mutex stop_mu;  // one Stop at a time; the threads are joined once
  bool stopped ABSL_GUARDED_BY(stop_mu) = false;
  std::thread reader;
  std::thread leaser;
  std::thread acker;
  std::vector<std::thread> workers;
};

void ReceiverState::Read() {
  v1::SubscribeRequest request;
  request.set_subscription(subscription);
  request.set_max_outstanding_messages(settings.max_outstanding_messages);
  request.set_max_outstanding_bytes(settings.max_outstanding_bytes);
  request.mutable_ack_deadline()->set_seconds(absl::ToInt64Seconds(settings.ack_deadline));
  request.mutable_ack_deadline()->set_nanos(static_cast<int32_t>(
      absl::ToInt64Nanoseconds(settings.ack_deadline % absl::Seconds(1))));
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = absl::Milliseconds(100);
  for (;;) {
    grpc::ClientContext context;
    {
      absl::MutexLock lock(&mu);
      if (stopping) break;
      stream = &context;  // Stop cancels it (before the call starts, too)
    }
    auto reader = client->bus().Subscribe(&context, request);
    v1::SubscribeResponse response;
    while (reader->Read(&response)) {
      backoff = absl::Milliseconds(100);
      absl::Time now = absl::Now();
      absl::MutexLock lock(&mu);
      for (auto& m : *response.mutable_messages()) {
        leased[m.ack_id()] = now;
        queue.push_back(Wrap(std::move(m)));
      }
    }
    absl::Status st = FromGrpcStatus(reader->Finish());
    absl::MutexLock lock(&mu);
    stream = nullptr;
    if (stopping) break;
    if (Permanent(st)) {
      ended = st;
      break;
    }
    // The stream ended (a replica stopping): open it again after a backoff
    // with full jitter, unless stopped meanwhile.
    ++reconnects;
    std::uniform_int_distribution<int64_t> jitter(0, absl::ToInt64Microseconds(backoff) / 2);
    absl::Duration delay = backoff / 2 + absl::Microseconds(jitter(rng));
    mu.AwaitWithTimeout(absl::Condition(&stopping), delay);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
  absl::MutexLock lock(&mu);
  reader_done = true;
}

void ReceiverState::Work() {
  for (;;) {
    std::optional<Received> next;
    {
      absl::MutexLock lock(&mu);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return !queue.empty() || reader_done;
      };
      mu.Await(absl::Condition(&ready));
      if (queue.empty()) return;
      next.emplace(std::move(queue.front()));
      queue.pop_front();
    }
    handler(std::move(*next));
  }
}

void ReceiverState::Lease() {
  // A third of the deadline: two extensions may be late before a lease lapses.
  const absl::Duration interval =
      std::max(settings.ack_deadline / 3, absl::Milliseconds(200));
  absl::MutexLock lock(&mu);
  for (;;) {
    mu.AwaitWithTimeout(absl::Condition(&leaser_done), interval);
    if (leaser_done) return;
    absl::Time now = absl::Now();
    std::vector<std::string> ids;
    for (auto it = leased.begin(); it != leased.end();) {
      if (now - it->second < settings.max_extension) {
        ids.push_back(it->first);
        ++it;
      } else {
        leased.erase(it++);  // given up: its lease runs out
      }
    }
    mu.Unlock();
    for (size_t i = 0; i < ids.size(); i += kMaxIdsPerCall) {
      std::vector<std::string> part(ids.begin() + i,
                                    ids.begin() + std::min(ids.size(), i + kMaxIdsPerCall));
      // A failure is retried next round; a lost lease shows at Ack.
      (void)client->ModifyAckDeadline(subscription, part, settings.ack_deadline);
    }
    mu.Lock();
  }
}

void ReceiverState::SendAcks() {
  absl::MutexLock lock(&mu);
  for (;;) {
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return !acks.empty() || acker_done;
    };
    mu.Await(absl::Condition(&ready));
    if (acks.empty()) return;
    std::vector<PendingAck> batch;
    if (acks.size() <= kMaxAcksPerCall) {
      batch.swap(acks);
    } else {
      batch.assign(std::make_move_iterator(acks.begin()),
                   std::make_move_iterator(acks.begin() + kMaxAcksPerCall));
      acks.erase(acks.begin(), acks.begin() + kMaxAcksPerCall);
    }
    ++ack_calls;
    mu.Unlock();
    std::vector<std::string> ids;
    ids.reserve(batch.size());
    for (const PendingAck& a : batch) ids.push_back(a.ack_id);
    auto statuses = client->Ack(subscription, ids);
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i].done.set_value(Outcome(statuses, i, batch.size()));
    }
    mu.Lock();
  }
}

std::future<absl::Status> ReceiverState::QueueAck(const std::string& ack_id) {
  {
    absl::MutexLock lock(&mu);
    if (!acker_done) {
      acks.push_back(PendingAck{ack_id, {}});
      return acks.back().done.get_future();
    }
    ++ack_calls;
  }
  return Ready(Outcome(client->Ack(subscription, {ack_id}), 0, 1));
}

}  // namespace internal

const v1::Message& Received::message() const { return delivery_->received.message(); }

const std::string& Received::ack_id() const { return delivery_->received.ack_id(); }

int32_t Received::delivery_attempt() const { return delivery_->received.delivery_attempt(); }

absl::StatusOr<std::string> Received::Data() const {
  if (!message().payload_by_reference()) return message().payload();
  return state_->client->RetrievePayload(message().id());
}

bool Received::FirstSettle() const {
  if (delivery_->settled.exchange(true)) return false;
  state_->Forget(ack_id());
  return true;
}

absl::Status Received::Ack() const { return AckAsync().get(); }

std::future<absl::Status> Received::AckAsync() const {
  if (!FirstSettle()) return Ready(AlreadySettled());
  return state_->QueueAck(ack_id());
}

absl::Status Received::Nack(const std::string& reason) const {
  if (!FirstSettle()) return AlreadySettled();
  return Outcome(state_->client->ModifyAckDeadline(state_->subscription, {ack_id()},
                                                   absl::ZeroDuration(), reason),
                 0, 1);
}

Receiver::Receiver(Client* client, std::string subscription, Handler handler,
                   ReceiveSettings settings)
    : state_(std::make_shared<internal::ReceiverState>(client, std::move(subscription),
                                                       std::move(handler), settings)) {
  internal::ReceiverState* s = state_.get();
  s->reader = std::thread([s] { s->Read(); });
  s->leaser = std::thread([s] { s->Lease(); });
  s->acker = std::thread([s] { s->SendAcks(); });
  for (int i = 0; i < std::max(1, settings.threads); ++i) {
    s->workers.emplace_back([s] { s->Work(); });
  }
}

Receiver::~Receiver() { (void)Stop(); }

absl::Status Receiver::Stop() {
  internal::ReceiverState* s = state_.get();
  absl::MutexLock stop_lock(&s->stop_mu);
  if (!s->stopped) {
    s->stopped = true;
    {
      absl::MutexLock lock(&s->mu);
      s->stopping = true;
      if (s->stream != nullptr) s->stream->TryCancel();
    }
    s->reader.join();
    // Received but never handed to a handler: given back now rather than
    // when their leases run out.
    std::deque<Received> left;
    {
      absl::MutexLock lock(&s->mu);
      left.swap(s->queue);
    }
    for (const Received& r : left) (void)r.Nack("subscriber stopped");
    for (std::thread& t : s->workers) t.join();
    // Leases were kept until the running handlers returned; the acks they
    // queued are sent before Stop returns.
    {
      absl::MutexLock lock(&s->mu);
      s->leaser_done = true;
      s->acker_done = true;
    }
    s->leaser.join();
    s->acker.join();
  }
  absl::MutexLock lock(&s->mu);
  return s->ended.value_or(absl::OkStatus());
}

absl::Status Receiver::Wait() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->mu.Await(absl::Condition(&state_->reader_done));
  }
  return Stop();
}

int Receiver::reconnects() const {
  absl::MutexLock lock(&state_->mu);
  return state_->reconnects;
}

int64_t Receiver::ack_calls() const {
  absl::MutexLock lock(&state_->mu);
  return state_->ack_calls;
}

}  // namespace pgbus
