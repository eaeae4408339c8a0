// The batching publisher of the C++ client: many Publish() calls, few
// Publish RPCs, with retries that cannot store a message twice.
//
// Thread safety: Publish, Flush and Stop may be called from any thread.
#ifndef PGBUS_SDK_CPP_PUBLISHER_H_
#define PGBUS_SDK_CPP_PUBLISHER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <istream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "pgbus/client.h"

namespace pgbus {

struct PublishSettings {
  int max_messages = 100;                           // per Publish call (the server takes 1000)
  int64_t max_bytes = 1 << 20;                      // inline payload bytes per call
  absl::Duration max_delay = absl::Milliseconds(10);  // how long a message waits for its batch
  int64_t inline_limit = 256 * 1024;                // larger payloads are uploaded
  absl::Duration retry_deadline = absl::Seconds(60);  // how long a batch is retried
  // Publish calls out at once. A batch holding an ordering key is sent
  // alone (after the calls before it are answered, before any after it).
  int max_outstanding_calls = 4;
};

// Batches the messages of one topic. Batches are formed in the order Publish
// was called and sent up to max_outstanding_calls at once; a batch that
// holds an ordering key is sent alone, once the calls before it are
// answered, and is retried whole before the next is sent: an ordering key
// keeps its order through batching and retries. A batch that fails with
// UNAVAILABLE or DEADLINE_EXCEEDED (its first attempt may have been stored
// with the answer lost) is retried with exponential backoff and jitter for
// retry_deadline; every message carries an idempotency key (generated when
// unset), so it is stored once and the retry answers the original ids.
class Publisher {
 public:
  Publisher(Client* client, std::string topic, PublishSettings settings = {});
  ~Publisher();  // Stop()s
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Queues `message`; the future gives its id once its batch is answered.
  // A payload above the inline limit is uploaded first, on the caller's
  // thread (with retries), and published by handle.
  std::future<absl::StatusOr<std::string>> Publish(v1::PublishMessage message);
  // `message` with its payload read from `payload` (a file, say): streamed
  // to UploadPayload on the caller's thread in 1 MiB requests, never held
  // whole (not retried: a stream cannot be read twice), then published by
  // handle in order with the others.
  std::future<absl::StatusOr<std::string>> Publish(v1::PublishMessage message,
                                                   std::istream& payload);
  // Waits until everything published so far has been answered.
  void Flush();
  // Flushes, then refuses further publishes (FAILED_PRECONDITION).
  void Stop();
  // Publish RPCs made so far (retries included).
  int64_t calls() const { return calls_.load(); }

 private:
  struct Pending {
    v1::PublishMessage message;
    std::promise<absl::StatusOr<std::string>> result;
  };
  void Run();
  // The next batch, marked in_flight_; `alone` says it holds an ordering
  // key (then nothing else is out). Empty once stopped and drained.
  std::deque<Pending> Take(bool* alone);
  // Queues `message`, published by the handle of `upload` when its payload
  // went ahead (whose failure fails the message); refused after Stop.
  std::future<absl::StatusOr<std::string>> Enqueue(
      v1::PublishMessage message,
      std::optional<absl::StatusOr<v1::UploadPayloadResponse>> upload);

  Client* const client_;
  const std::string topic_;
  const PublishSettings settings_;
  absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // A batch with an ordering key was taken: nothing more is taken until it
  // is answered.
  bool alone_ ABSL_GUARDED_BY(mu_) = false;
  int flushing_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> calls_{0};
  absl::Mutex stop_mu_;  // one Stop at a time joins the senders
  std::vector<std::thread> senders_;
};

// Calls `fn` until it succeeds, fails with a status other than UNAVAILABLE
// or DEADLINE_EXCEEDED, or `budget` has passed (then its last status),
// backing off exponentially (100 ms doubling to 5 s) with full jitter.
absl::Status WithRetries(absl::Duration budget, const std::function<absl::Status()>& fn);

}  // namespace pgbus

#endif  // PGBUS_SDK_CPP_PUBLISHER_H_
