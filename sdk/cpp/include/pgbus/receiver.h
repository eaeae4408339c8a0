// The subscriber of the C++ client: a flow-controlled session that calls a
// handler per message, keeps the leases of messages being handled alive,
// reconnects when a replica ends the stream, and drains on Stop.
//
//   pgbus::Receiver receiver(client.get(), "billing",
//                            [](pgbus::Received m) { Process(m); m.Ack(); });
//   ...
//   receiver.Stop();   // or receiver.Wait() until a permanent error
//
// Thread safety: every method may be called from any thread; the handler
// runs on up to ReceiveSettings::threads threads at once.
#ifndef PGBUS_SDK_CPP_RECEIVER_H_
#define PGBUS_SDK_CPP_RECEIVER_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "pgbus/client.h"

namespace pgbus {

struct ReceiveSettings {
  // At most this many messages / payload bytes are leased and unsettled at
  // once (enforced by the server for the stream).
  int64_t max_outstanding_messages = 1000;
  int64_t max_outstanding_bytes = 100 << 20;
  // The lease of each delivery. While a message is unsettled its lease is
  // extended every ack_deadline / 3, for at most max_extension in all.
  absl::Duration ack_deadline = absl::Seconds(30);
  absl::Duration max_extension = absl::Minutes(60);
  // Handlers running at once.
  int threads = 8;
};

// Whether `status` (from Received::Ack or Nack) says the lease had run out:
// the message was delivered again or settled already, and may be processed
// again elsewhere. The status's code is ABORTED.
bool IsLeaseExpired(const absl::Status& status);

namespace internal {
struct ReceiverState;
}

// One delivery, a cheap copyable handle. Settle it with Ack or Nack, in the
// handler or later (from any thread); until then its lease is extended.
class Received {
 public:
  const v1::Message& message() const;
  const std::string& ack_id() const;
  int32_t delivery_attempt() const;
  // The payload: inline, or (an uploaded payload) retrieved in chunks and
  // checked against its SHA-256 (DATA_LOSS on a mismatch, never wrong bytes).
  absl::StatusOr<std::string> Data() const;
  // OK; an IsLeaseExpired status; or the call's error. Only the first Ack
  // or Nack of a message counts (the others are IsLeaseExpired). Waits for
  // the answer: AckAsync().get().
  absl::Status Ack() const;
  // Acks without waiting: the future gives what Ack would return. The acks
  // of a Receiver go in one Ack call at a time, and the next call carries
  // every ack queued meanwhile (up to 1000), so a handler that does not
  // wait lets the Receiver settle thousands of messages a second in few
  // calls; one that waits (Ack) holds its thread for a round trip. After
  // Stop, the ack is a call of its own, made before AckAsync returns.
  std::future<absl::Status> AckAsync() const;
  // Gives the message back for redelivery after the subscription's backoff;
  // `reason` is kept with it (and in a dead letter).
  absl::Status Nack(const std::string& reason = "") const;

 private:
  friend struct internal::ReceiverState;
  struct Delivery;
  Received(std::shared_ptr<internal::ReceiverState> state, std::shared_ptr<Delivery> delivery)
      : state_(std::move(state)), delivery_(std::move(delivery)) {}
  // Marks the message settled; false if it was already.
  bool FirstSettle() const;

  std::shared_ptr<internal::ReceiverState> state_;
  std::shared_ptr<Delivery> delivery_;
};

class Receiver {
 public:
  using Handler = std::function<void(Received)>;
  // Starts receiving at once on background threads. `client` must outlive
  // the Receiver and every Received it handed out.
  Receiver(Client* client, std::string subscription, Handler handler,
           ReceiveSettings settings = {});
  ~Receiver();  // Stop()s
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Stops receiving: messages received but not yet handed to a handler are
  // nacked, running handlers finish (their leases kept until then), and the
  // threads end. Returns the session's status (see Wait). Not from a
  // handler: it waits for the handlers.
  absl::Status Stop();
  // Waits until the session ends: OK after Stop, or the error that ended it
  // for good (NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED, INVALID_ARGUMENT,
  // FAILED_PRECONDITION, UNIMPLEMENTED). A stream that ends otherwise (a
  // replica stopping: UNAVAILABLE) is opened again with backoff (100 ms
  // doubling to 5 s, with jitter).
  absl::Status Wait();
  // Streams opened again after one ended.
  int reconnects() const;
  // Ack calls sent so far (each carries the acks queued while the one
  // before it was out).
  int64_t ack_calls() const;

 private:
  std::shared_ptr<internal::ReceiverState> state_;
};

}  // namespace pgbus

#endif  // PGBUS_SDK_CPP_RECEIVER_H_
