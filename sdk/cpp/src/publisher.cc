#include "pgbus/publisher.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/time/clock.h"

namespace pgbus {
namespace {

std::string NewIdempotencyKey() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) {
    uint64_t t = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    std::memcpy(b, &t, sizeof t);
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(b), sizeof b));
}

bool Retryable(const absl::Status& st) {
  return st.code() == absl::StatusCode::kUnavailable ||
         st.code() == absl::StatusCode::kDeadlineExceeded;
}

}  // namespace

absl::Status WithRetries(absl::Duration budget, const std::function<absl::Status()>& fn) {
  const absl::Time give_up = absl::Now() + budget;
  absl::Duration delay = absl::Milliseconds(100);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  for (;;) {
    absl::Status st = fn();
    if (st.ok() || !Retryable(st) || absl::Now() >= give_up) return st;
    std::uniform_int_distribution<int64_t> jitter(1, absl::ToInt64Microseconds(delay));
    absl::SleepFor(std::min(absl::Microseconds(jitter(rng)),
                            std::max(give_up - absl::Now(), absl::ZeroDuration())));
    delay = std::min(delay * 2, absl::Seconds(5));
  }
}

Publisher::Publisher(Client* client, std::string topic, PublishSettings settings)
    : client_(client), topic_(std::move(topic)), settings_(settings) {
  for (int i = 0; i < std::max(1, settings_.max_outstanding_calls); ++i) {
    senders_.emplace_back([this] { Run(); });
  }
}

Publisher::~Publisher() { Stop(); }

std::future<absl::StatusOr<std::string>> Publisher::Publish(v1::PublishMessage message) {
  if (static_cast<int64_t>(message.payload().size()) <= settings_.inline_limit) {
    return Enqueue(std::move(message), std::nullopt);
  }
  absl::StatusOr<v1::UploadPayloadResponse> up;
  absl::Status st = WithRetries(settings_.retry_deadline, [&] {
    std::istringstream in(message.payload());
    up = client_->UploadPayload(topic_, in);  // SHA-256 checked by the server
    return up.status();
  });
  if (!st.ok()) up = st;
  return Enqueue(std::move(message), std::move(up));
}

std::future<absl::StatusOr<std::string>> Publisher::Publish(v1::PublishMessage message,
                                                            std::istream& payload) {
  // SHA-256 checked by the server.
  return Enqueue(std::move(message), client_->UploadPayload(topic_, payload));
}

std::future<absl::StatusOr<std::string>> Publisher::Enqueue(
    v1::PublishMessage message,
    std::optional<absl::StatusOr<v1::UploadPayloadResponse>> upload) {
  Pending p;
  auto future = p.result.get_future();
  if (upload) {
    if (!upload->ok()) {
      p.result.set_value(upload->status());
      return future;
    }
    message.clear_payload();
    message.set_payload_handle((*upload)->payload_handle());
  }
  if (message.idempotency_key().empty()) message.set_idempotency_key(NewIdempotencyKey());
  const int64_t bytes = static_cast<int64_t>(message.payload().size());
  p.message = std::move(message);
  absl::MutexLock lock(&mu_);
  if (stopped_) {
    p.result.set_value(absl::FailedPreconditionError("Publish after Stop()"));
    return future;
  }
  queue_.push_back(std::move(p));
  queued_bytes_ += bytes;
  return future;
}

void Publisher::Flush() {
  absl::MutexLock lock(&mu_);
  ++flushing_;
  // alone_: a batch with an ordering key, taken from the queue, may still
  // be waiting for the calls before it.
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.empty() && in_flight_ == 0 && !alone_;
  };
  mu_.Await(absl::Condition(&idle));
  --flushing_;
}

void Publisher::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }
  for (std::thread& t : senders_) {
    if (t.joinable()) t.join();
  }
}

std::deque<Publisher::Pending> Publisher::Take(bool* alone) {
  absl::MutexLock lock(&mu_);
  for (;;) {
    // Nothing is taken while a batch with an ordering key is out.
    auto any = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !alone_ && (!queue_.empty() || stopped_);
    };
    mu_.Await(absl::Condition(&any));
    if (queue_.empty()) return {};  // stopped and drained
    // Wait for a full batch, max_delay, a Flush or Stop.
    auto full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return static_cast<int>(queue_.size()) >= settings_.max_messages ||
             queued_bytes_ >= settings_.max_bytes || stopped_ || flushing_ > 0;
    };
    mu_.AwaitWithTimeout(absl::Condition(&full), settings_.max_delay);
    if (!alone_ && !queue_.empty()) break;  // else another sender took it meanwhile
  }
  std::deque<Pending> batch;
  int64_t bytes = 0;
  bool keyed = false;
  while (!queue_.empty() && static_cast<int>(batch.size()) < settings_.max_messages) {
    int64_t b = static_cast<int64_t>(queue_.front().message.payload().size());
    if (!batch.empty() && bytes + b > settings_.max_bytes) break;
    bytes += b;
    keyed = keyed || !queue_.front().message.ordering_key().empty();
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  queued_bytes_ -= bytes;
  if (keyed) {
    // Sent once every call before it is answered, and alone.
    alone_ = true;
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; };
    mu_.Await(absl::Condition(&idle));
  }
  ++in_flight_;
  *alone = keyed;
  return batch;
}

void Publisher::Run() {
  for (;;) {
    bool alone = false;
    std::deque<Pending> batch = Take(&alone);
    if (batch.empty()) return;
    std::vector<v1::PublishMessage> messages;
    messages.reserve(batch.size());
    absl::StatusOr<std::vector<std::string>> ids;
    absl::Status st = WithRetries(settings_.retry_deadline, [&] {
      messages.clear();
      for (const Pending& p : batch) messages.push_back(p.message);
      calls_.fetch_add(1);
      ids = client_->Publish(topic_, std::move(messages));
      return ids.status();
    });
    if (st.ok() && ids->size() != batch.size()) {
      st = absl::InternalError("the server answered a different number of ids");
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (st.ok()) {
        batch[i].result.set_value((*ids)[i]);
      } else {
        batch[i].result.set_value(st);
      }
    }
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (alone) alone_ = false;
  }
}

}  // namespace pgbus
