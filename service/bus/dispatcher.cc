#include "service/bus/dispatcher.h"

#include <openssl/rand.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "service/bus/ack_id.h"
#include "service/common/topic_pattern.h"
#include "service/obs/log.h"
#include "service/obs/metrics.h"

namespace pgbus::bus {
namespace {

// A random positive 63-bit token: leases of streams on every replica must
// not collide.
int64_t NewLeaseToken() {
  uint64_t v = 0;
  while (v == 0) {
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v) != 1) {
      v = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    }
    v &= 0x7fffffffffffffffULL;
  }
  return static_cast<int64_t>(v);
}

}  // namespace

Stream::Stream(Dispatcher* dispatcher, StreamOptions options, int64_t lease,
               std::shared_ptr<StreamSink> sink)
    : dispatcher_(dispatcher), options_(std::move(options)), lease_(lease), sink_(std::move(sink)) {}

void Stream::PruneExpired(absl::Time now) {
  for (auto it = outstanding_.begin(); it != outstanding_.end();) {
    if (it->second.expiry <= now) {
      outstanding_bytes_ -= it->second.bytes;
      it = outstanding_.erase(it);
    } else {
      ++it;
    }
  }
}

void Stream::Kick() {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kClosed) return;
    if (state_ != State::kIdle || offered_) {
      kicked_ = true;
      return;
    }
    PruneExpired(absl::Now());
    if (!CreditLeft().any()) {
      return;  // no credit: acks or lease expiry (seen at the next poll) kick again
    }
    state_ = State::kClaiming;
    kicked_ = false;
  }
  std::shared_ptr<Stream> self = shared_from_this();
  if (!dispatcher_->pool_->Submit([self] { self->ClaimOnce(); })) {
    // Overloaded: try again at the next poll.
    absl::MutexLock lock(&mu_);
    if (state_ == State::kClaiming) state_ = State::kIdle;
  }
}

void Stream::ClaimOnce() {
  Credit credit;
  bool idle;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kClosed) return;
    credit = CreditLeft();
    idle = outstanding_.empty();
  }
  int limit = static_cast<int>(std::min<int64_t>(credit.messages,
                                                 dispatcher_->options_.max_claim_batch));
  if (options_.dead_letters) {
    // Exhausted deliveries leave before the claim, so the claim does not
    // hand them out again. A failure (the tenant's storage quota, say)
    // only delays them: they are delivered again meanwhile.
    auto moved = dispatcher_->store_->DeadLetter(options_.tenant, options_.subscription,
                                                 dispatcher_->options_.max_claim_batch);
    if (!moved.ok()) {
      obs::Warn("dead_letter_failed", {{"subscription", options_.subscription},
                                       {"error", moved.status().ToString()}});
    } else if (moved->count > 0) {
      obs::CountDeadLettered(moved->count);
      dispatcher_->Wake({model::TopicKey{options_.tenant, moved->topic}});
    }
  }
  const absl::Time claim_started = absl::Now();
  auto claimed = dispatcher_->store_->Claim(options_.tenant, options_.subscription, lease_,
                                            std::max(limit, 1), std::max<int64_t>(credit.bytes, 0),
                                            /*first_may_exceed=*/idle, options_.ack_deadline);
  if (claimed.ok()) obs::CountClaim(static_cast<int>(claimed->size()), absl::Now() - claim_started);
  std::shared_ptr<StreamSink> sink;
  bool again = false;
  bool ended = false;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kClosed) {
      ended = true;
    } else if (!claimed.ok()) {
      state_ = State::kIdle;
      if (claimed.status().code() == absl::StatusCode::kNotFound) {
        state_ = State::kClosed;
        sink = sink_;
      } else {
        obs::Warn("claim_failed", {{"subscription", options_.subscription},
                                   {"error", claimed.status().ToString()}});
      }
    } else if (claimed->empty()) {
      state_ = State::kIdle;
      drained_ = true;
      again = kicked_;  // a publish may have landed after our snapshot
    } else {
      AddOutstanding(*claimed, claim_started);
      // Fewer than asked for: nothing else was ready at the claim's
      // snapshot, so once sent the stream waits for a wake (a publish, an
      // ack, the poll) instead of claiming again for nothing. At low rates
      // that empty claim was half of every message's claims.
      drained_ = claimed->size() < static_cast<size_t>(std::max(limit, 1));
      state_ = State::kSending;
      sink = sink_;
    }
  }
  if (ended) {
    // Ended while claiming: nobody got these; give them back now.
    if (claimed.ok()) Release(LeaseKeys(*claimed));
    return;
  }
  if (!claimed.ok()) {
    if (sink) sink->End(claimed.status());
    return;
  }
  if (again) {
    Kick();
    return;
  }
  if (claimed->empty()) return;
  SendBatch(sink, *std::move(claimed));
}

Stream::Credit Stream::CreditLeft() const {
  return Credit{options_.max_outstanding_messages - static_cast<int64_t>(outstanding_.size()),
                options_.max_outstanding_bytes - outstanding_bytes_};
}

void Stream::AddOutstanding(const std::vector<model::Delivery>& batch, absl::Time at) {
  for (const auto& d : batch) {
    outstanding_[{d.message.id, d.attempt}] = Outstanding{
        d.message.size, d.lease_expiry, at, at + Quiet(), !d.message.ordering_key.empty()};
    outstanding_bytes_ += d.message.size;
  }
}

void Stream::SendBatch(const std::shared_ptr<StreamSink>& sink,
                       std::vector<model::Delivery> batch) {
  std::vector<model::LeaseKey> keys = LeaseKeys(batch);
  for (model::Delivery& d : batch) d.ack_id = EncodeAckId({d.message.id, d.attempt, d.lease});
  if (!sink->Send(std::move(batch))) {
    // The stream ended before the batch went out: nobody got it.
    Close();
    GiveBack(std::move(keys));
  }
}

void Stream::GiveBack(std::vector<model::LeaseKey> keys) {
  std::shared_ptr<Stream> self = shared_from_this();
  // Not on the caller's thread (a committer's, for a hand-off); when the
  // pool refuses, the leases come back when their deadline passes.
  (void)dispatcher_->pool_->Submit([self, keys = std::move(keys)] { self->Release(keys); });
}

std::optional<model::LeaseOffer> Stream::Reserve() {
  absl::MutexLock lock(&mu_);
  // Only a stream that would not claim now: its last claim took all that
  // was ready, and nothing woke it since (a wake means more may be ready,
  // which a claim takes in claim order).
  if (offered_ || (state_ != State::kIdle && state_ != State::kSending) || !drained_ ||
      kicked_) {
    return std::nullopt;
  }
  PruneExpired(absl::Now());
  const Credit credit = CreditLeft();
  if (!credit.any()) return std::nullopt;
  offered_ = true;
  model::LeaseOffer offer;
  offer.tenant = options_.tenant;
  offer.subscription = options_.subscription;
  offer.lease = lease_;
  offer.ack_deadline = options_.ack_deadline;
  offer.max_messages =
      static_cast<int>(std::min<int64_t>(credit.messages, dispatcher_->options_.max_claim_batch));
  offer.max_bytes = credit.bytes;
  offer.first_may_exceed = outstanding_.empty();
  return offer;
}

void Stream::TakeHandOff(model::HandedOff handed) {
  std::shared_ptr<StreamSink> sink;
  bool again = false;
  bool ended = false;
  const int count = static_cast<int>(handed.deliveries.size());
  {
    absl::MutexLock lock(&mu_);
    offered_ = false;
    if (state_ == State::kClosed) {
      ended = true;
    } else {
      // Ready deliveries it could not take: claim them (after any send).
      if (!handed.complete) drained_ = false;
      if (!handed.deliveries.empty()) {
        AddOutstanding(handed.deliveries, absl::Now());
        if (state_ == State::kSending) {
          for (auto& d : handed.deliveries) queued_.push_back(std::move(d));
          handed.deliveries.clear();
        } else {
          state_ = State::kSending;
          sink = sink_;
        }
      } else if (state_ == State::kIdle) {
        again = !drained_ || kicked_;  // a wake while reserved, too
      }
    }
  }
  if (ended) {
    // Closed while the commit ran: nobody got these; give them back.
    if (!handed.deliveries.empty()) GiveBack(LeaseKeys(handed.deliveries));
    return;
  }
  if (count > 0) obs::CountHandedOff(count);
  if (again) Kick();
  if (sink) SendBatch(sink, std::move(handed.deliveries));
}

std::vector<model::LeaseKey> Stream::LeaseKeys(const std::vector<model::Delivery>& batch) const {
  std::vector<model::LeaseKey> keys;
  keys.reserve(batch.size());
  for (const auto& d : batch) keys.push_back({d.message.id, d.attempt, lease_});
  return keys;
}

void Stream::Release(const std::vector<model::LeaseKey>& keys) {
  if (keys.empty()) return;
  auto released = dispatcher_->store_->ReleaseLeases(options_.tenant, options_.subscription,
                                                     options_.topic, keys);
  if (!released.ok()) {  // they come back when their deadline passes
    obs::Warn("release_failed", {{"subscription", options_.subscription},
                                 {"error", released.status().ToString()}});
    return;
  }
  // Other replicas hear of them by NOTIFY; this one's streams of the
  // subscription are told here.
  dispatcher_->WakeSubscription(options_.tenant, options_.subscription);
}

int64_t Stream::outstanding() {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(outstanding_.size());
}

int64_t Stream::ShutDown(const absl::Status& status) {
  std::shared_ptr<StreamSink> sink;
  std::vector<model::LeaseKey> held;
  {
    absl::MutexLock lock(&mu_);
    sink = sink_;
    state_ = State::kClosed;
    PruneExpired(absl::Now());
    for (const auto& [key, unused] : outstanding_) held.push_back({key.first, key.second, lease_});
    outstanding_.clear();
    outstanding_bytes_ = 0;
  }
  Release(held);
  if (sink) sink->End(status);
  return static_cast<int64_t>(held.size());
}

void Stream::OnSent() {
  bool again = false;
  std::vector<model::Delivery> next;
  std::shared_ptr<StreamSink> sink;
  {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kSending) return;
    if (!queued_.empty()) {
      next.swap(queued_);  // handed off meanwhile
      sink = sink_;
    } else {
      state_ = State::kIdle;
      // More may be waiting (the batch was full, or a wake came meanwhile):
      // claim until empty or out of credit.
      again = !drained_ || kicked_;
    }
  }
  if (sink) {
    SendBatch(sink, std::move(next));
  } else if (again) {
    Kick();
  }
}

void Stream::Close() {
  std::vector<model::Delivery> unsent;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kClosed && sink_ == nullptr) return;
    state_ = State::kClosed;
    sink_ = nullptr;
    unsent.swap(queued_);
  }
  dispatcher_->Remove(this);
  if (!unsent.empty()) GiveBack(LeaseKeys(unsent));  // handed off, never sent
}

void Stream::LeasesChanged(const std::vector<model::LeaseKey>& keys, const std::vector<bool>& ok,
                           std::optional<absl::Time> new_expiry, bool ready_again) {
  bool freed = false;
  {
    absl::MutexLock lock(&mu_);
    // Freed credit matters to a claim when the stream ran out of it, when
    // the message is ready again (a nack), or when settling it lets the
    // next message of its ordering key be claimed; otherwise a stream that
    // took all that was ready has nothing to claim (and stays free to take
    // the next group commit's deliveries directly).
    bool matters = ready_again || !CreditLeft().any() || !drained_;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys[i].lease != lease_) continue;
      auto it = outstanding_.find({keys[i].message_id, keys[i].attempt});
      if (it == outstanding_.end()) continue;
      if (ok[i] && new_expiry) {
        it->second.expiry = *new_expiry;
        it->second.next_check = absl::Now() + Quiet();
        continue;
      }
      // Acked, nacked, or no longer ours: either way it frees credit.
      matters |= it->second.keyed;
      outstanding_bytes_ -= it->second.bytes;
      outstanding_.erase(it);
      freed = true;
    }
    freed &= matters;
  }
  if (freed) Kick();
}

absl::Duration Stream::Quiet() const { return 2 * dispatcher_->options_.poll_interval; }

void Stream::CheckQuietLeases(absl::Time now) {
  std::vector<model::LeaseKey> keys;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kClosed || checking_) return;
    for (const auto& [key, o] : outstanding_) {
      if (o.next_check <= now) keys.push_back({key.first, key.second, lease_});
    }
    if (keys.empty()) return;
    checking_ = true;
  }
  std::shared_ptr<Stream> self = shared_from_this();
  if (!dispatcher_->pool_->Submit([self, keys] { self->ApplyHeldLeases(keys); })) {
    absl::MutexLock lock(&mu_);  // overloaded: at the next poll
    checking_ = false;
  }
}

void Stream::ApplyHeldLeases(const std::vector<model::LeaseKey>& keys) {
  const absl::Time asked = absl::Now();
  auto held = dispatcher_->store_->HeldLeases(options_.tenant, options_.subscription, keys);
  int64_t still = 0, gone = 0;
  {
    absl::MutexLock lock(&mu_);
    checking_ = false;
    if (held.ok() && state_ != State::kClosed) {
      for (size_t i = 0; i < keys.size(); ++i) {
        // Settled on this replica meanwhile: already gone. (A key is never
        // claimed again under the same attempt.)
        auto it = outstanding_.find({keys[i].message_id, keys[i].attempt});
        if (it == outstanding_.end()) continue;
        if ((*held)[i]) {
          Outstanding& o = it->second;
          o.expiry = *(*held)[i];
          o.next_check = asked + std::max(Quiet(), (asked - o.claimed) / 2);
          ++still;
        } else {
          outstanding_bytes_ -= it->second.bytes;
          outstanding_.erase(it);
          ++gone;
        }
      }
    }
  }
  if (!held.ok()) {
    obs::Warn("lease_check_failed", {{"subscription", options_.subscription},
                                     {"error", held.status().ToString()}});
  }
  obs::CountLeaseLookups(still, gone);
  if (gone > 0) Kick();
}

Dispatcher::Dispatcher(store::DeliveryStore* store, WorkerPool* pool, Options options)
    : store_(store), pool_(pool), options_(options) {
  poller_ = std::thread([this] { PollLoop(); });
}

Dispatcher::~Dispatcher() {
  Shutdown(absl::UnavailableError("server is shutting down; reconnect"));
  if (poller_.joinable()) poller_.join();
}

absl::StatusOr<std::shared_ptr<Stream>> Dispatcher::Open(StreamOptions options,
                                                         std::shared_ptr<StreamSink> sink) {
  std::shared_ptr<Stream> stream;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      return absl::UnavailableError("server is shutting down; reconnect to another replica");
    }
    int64_t lease;
    do {
      lease = NewLeaseToken();
    } while (by_lease_.count(lease));
    stream = std::make_shared<Stream>(this, std::move(options), lease, std::move(sink));
    by_lease_[lease] = stream;
  }
  return stream;
}

void Dispatcher::Remove(Stream* stream) {
  absl::MutexLock lock(&mu_);
  by_lease_.erase(stream->lease());
}

std::vector<std::shared_ptr<Stream>> Dispatcher::Snapshot(
    const std::vector<model::TopicKey>* topics) {
  std::vector<std::shared_ptr<Stream>> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [lease, weak] : by_lease_) {
    std::shared_ptr<Stream> s = weak.lock();
    if (!s) continue;
    if (topics && !topics->empty()) {
      bool match = false;
      for (const auto& t : *topics) {
        // The stream's topic may be a pattern (a plain name matches only
        // itself).
        if (t.tenant == s->options().tenant && TopicMatches(s->options().topic, t.topic)) {
          match = true;
          break;
        }
      }
      if (!match) continue;
    }
    out.push_back(std::move(s));
  }
  return out;
}

void Dispatcher::Wake(const std::vector<model::TopicKey>& topics) {
  for (const auto& s : Snapshot(&topics)) s->Kick();
}

std::vector<model::LeaseOffer> Dispatcher::Offer(const std::vector<model::TopicKey>& topics) {
  std::vector<model::LeaseOffer> offers;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return offers;
  }
  // tenant, subscription -> its streams
  std::map<std::pair<std::string, std::string>, std::vector<std::shared_ptr<Stream>>> by_sub;
  for (auto& s : Snapshot(&topics)) {
    by_sub[{s->options().tenant, s->options().subscription}].push_back(std::move(s));
  }
  const uint64_t turn = offer_turn_.fetch_add(1);
  std::vector<std::shared_ptr<Stream>> reserved;
  for (auto& [unused, streams] : by_sub) {
    // One offer a subscription (its other streams claim as before): the
    // least loaded stream that can take one, equals in rotation.
    std::vector<std::tuple<int64_t, uint64_t, size_t>> order;  // outstanding, turn, index
    for (size_t i = 0; i < streams.size(); ++i) {
      order.emplace_back(streams[i]->outstanding(), (i + turn) % streams.size(), i);
    }
    std::sort(order.begin(), order.end());
    for (const auto& [outstanding, rotation, i] : order) {
      if (std::optional<model::LeaseOffer> o = streams[i]->Reserve()) {
        offers.push_back(*std::move(o));
        reserved.push_back(streams[i]);
        break;
      }
    }
  }
  absl::MutexLock lock(&mu_);
  for (auto& s : reserved) reserved_[s->lease()] = std::move(s);
  return offers;
}

void Dispatcher::Committed(const std::vector<model::TopicKey>& topics,
                           const std::vector<model::LeaseOffer>& offers,
                           std::vector<model::HandedOff> handed) {
  std::set<int64_t> offered;
  // Subscriptions whose offer took all the commit made ready for them:
  // their other streams have nothing new to claim.
  std::set<std::pair<std::string, std::string>> served;
  std::vector<std::pair<std::shared_ptr<Stream>, size_t>> takers;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < offers.size(); ++i) {
      offered.insert(offers[i].lease);
      if (handed[i].complete) served.insert({offers[i].tenant, offers[i].subscription});
      auto it = reserved_.find(offers[i].lease);
      if (it == reserved_.end()) continue;
      takers.emplace_back(std::move(it->second), i);
      reserved_.erase(it);
    }
  }
  // A stream closed meanwhile gives back what was leased to it. The
  // offered streams claim by themselves if they must (TakeHandOff); the
  // others are woken, but for those of a subscription served in full.
  for (auto& [s, i] : takers) s->TakeHandOff(std::move(handed[i]));
  if (topics.empty()) return;
  for (const auto& s : Snapshot(&topics)) {
    if (offered.count(s->lease()) ||
        served.count({s->options().tenant, s->options().subscription})) {
      continue;
    }
    s->Kick();
  }
}

void Dispatcher::WakeSubscription(const std::string& tenant, const std::string& subscription) {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;  // every stream is ending
  }
  for (const auto& s : StreamsOf(tenant, subscription)) s->Kick();
}

void Dispatcher::LeasesChanged(const std::vector<model::LeaseKey>& keys,
                               const std::vector<bool>& ok,
                               std::optional<absl::Time> new_expiry, bool ready_again) {
  std::set<int64_t> leases;
  for (const auto& k : keys) leases.insert(k.lease);
  std::vector<std::shared_ptr<Stream>> streams;
  {
    absl::MutexLock lock(&mu_);
    for (int64_t lease : leases) {
      auto it = by_lease_.find(lease);
      if (it == by_lease_.end()) continue;
      if (auto s = it->second.lock()) streams.push_back(std::move(s));
    }
  }
  for (const auto& s : streams) s->LeasesChanged(keys, ok, new_expiry, ready_again);
}

Dispatcher::Counts Dispatcher::Count() {
  Counts c;
  for (const auto& s : Snapshot(nullptr)) {
    ++c.streams;
    c.outstanding += s->outstanding();
  }
  return c;
}

int64_t Dispatcher::ActiveStreams(const std::string& tenant, const std::string& subscription) {
  return static_cast<int64_t>(StreamsOf(tenant, subscription).size());
}

std::vector<std::shared_ptr<Stream>> Dispatcher::StreamsOf(const std::string& tenant,
                                                           const std::string& subscription) {
  std::vector<std::shared_ptr<Stream>> out;
  for (auto& s : Snapshot(nullptr)) {
    if (s->options().tenant == tenant && s->options().subscription == subscription) {
      out.push_back(std::move(s));
    }
  }
  return out;
}

void Dispatcher::Shutdown(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
  }
  // Each stream's unacked leases are given back before its end is sent, so
  // a client that reconnects to another replica finds its messages ready
  // rather than waiting out their ack deadlines. (An ack for one of them
  // still succeeds until the message is claimed again.) A claim still
  // running gives back what it gets (ClaimOnce).
  int64_t released = 0;
  for (const auto& s : Snapshot(nullptr)) released += s->ShutDown(status);
  if (released > 0) obs::Info("leases_released", {{"count", std::to_string(released)}});
}

void Dispatcher::PollLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutting_down_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), options_.poll_interval)) return;
    }
    // Fallback for publishes whose NOTIFY we missed, delayed messages that
    // came due, and leases that ran out; and leases settled on another
    // replica (see the top of dispatcher.h).
    const absl::Time now = absl::Now();
    for (const auto& s : Snapshot(nullptr)) {
      s->Kick();
      s->CheckQuietLeases(now);
    }
  }
}

}  // namespace pgbus::bus
