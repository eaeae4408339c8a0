// pgbus C++ client: a small layer over the generated stubs
// (pgbus/v1/bus.grpc.pb.h, admin.grpc.pb.h), which stay available through
// bus() and admin() for everything this layer does not wrap.
//
// Errors are absl::Status with the server's gRPC code and message.
// Thread safety: Client is safe to share between threads; a Subscriber is
// used by one thread at a time.
#ifndef PGBUS_SDK_CPP_CLIENT_H_
#define PGBUS_SDK_CPP_CLIENT_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>

#include <deque>
#include <functional>
#include <istream>
#include <ostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "pgbus/v1/admin.grpc.pb.h"
#include "pgbus/v1/bus.grpc.pb.h"

namespace pgbus {

absl::Status FromGrpcStatus(const grpc::Status& status);

// A Subscribe stream read by a background thread into a queue.
class Subscriber {
 public:
  ~Subscriber();  // Cancel()s and joins.
  // The next message; nullopt when none arrived within `timeout`; the
  // stream's final status once it has ended.
  absl::StatusOr<std::optional<v1::ReceivedMessage>> Next(absl::Duration timeout);
  // Ends the stream from the client side.
  void Cancel();
  // The status the server ended the stream with, once it has ended.
  std::optional<absl::Status> Finished();

 private:
  friend class Client;
  Subscriber(v1::BusService::Stub* stub, v1::SubscribeRequest request);
  void ReadLoop(v1::BusService::Stub* stub, v1::SubscribeRequest request);

  grpc::ClientContext context_;
  absl::Mutex mu_;
  std::deque<v1::ReceivedMessage> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> finished_ ABSL_GUARDED_BY(mu_);
  std::thread reader_;
};

struct ClientOptions {
  // Sent as `authorization: Bearer <api_key>` on every call (none if empty).
  std::string api_key;
  // grpc::SslCredentials(...) for TLS / mutual TLS; plaintext when null.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // The name the server certificate must carry, when not the target's host.
  std::string ssl_target_name;
  // The deadline of every unary call this layer makes.
  absl::Duration timeout = absl::Seconds(30);
  // More client interceptors (gRPC's experimental API), after the key's.
  std::vector<std::shared_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  // A TCP connection of its own. By default gRPC gives every client of the
  // same target and settings in a process one shared connection, whose
  // frames each side handles one at a time; a subscriber beside a busy
  // publisher in the same process then waits behind the publishes.
  bool own_connection = false;
};

class Client {
 public:
  explicit Client(std::shared_ptr<grpc::Channel> channel,
                  absl::Duration timeout = absl::Seconds(30));
  // A plaintext channel to $PGBUS_SERVER (default localhost:50051) with the
  // key in $PGBUS_API_KEY (none when unset).
  static std::unique_ptr<Client> Connect();
  // A plaintext channel to `target` ("host:port") without a key.
  static std::unique_ptr<Client> Connect(const std::string& target);
  static std::unique_ptr<Client> Connect(const std::string& target,
                                         const ClientOptions& options);

  v1::BusService::Stub& bus() { return *bus_; }
  v1::AdminService::Stub& admin() { return *admin_; }

  absl::StatusOr<v1::Topic> CreateTopic(const std::string& name);
  // With settings (retention, message_ttl, dedup_window, max_message_bytes).
  absl::StatusOr<v1::Topic> CreateTopic(const v1::Topic& topic);
  absl::StatusOr<v1::Subscription> CreateSubscription(const std::string& name,
                                                      const std::string& topic,
                                                      absl::Duration ack_deadline = absl::ZeroDuration());
  // With every setting of the proto (dead letters, backoff, filter, ...).
  absl::StatusOr<v1::Subscription> CreateSubscription(const v1::Subscription& subscription);
  absl::StatusOr<v1::Topic> GetTopic(const std::string& name);
  // Every topic, read page_size at a time (0: the server's default).
  absl::StatusOr<std::vector<v1::Topic>> ListTopics(int32_t page_size = 0);
  absl::Status DeleteTopic(const std::string& name);
  absl::StatusOr<v1::Subscription> GetSubscription(const std::string& name);
  // The subscriptions of `topic` (every one when empty).
  absl::StatusOr<std::vector<v1::Subscription>> ListSubscriptions(const std::string& topic = "",
                                                                  int32_t page_size = 0);
  absl::Status DeleteSubscription(const std::string& name);
  // Replays (or skips) a subscription to the messages published since `time`.
  absl::Status Seek(const std::string& subscription, absl::Time time);
  // Backlog, in flight, oldest unacked age and counters of a subscription
  // (or, with `topic`, of a topic).
  absl::StatusOr<v1::GetStatsResponse> GetStats(const std::string& subscription,
                                                const std::string& topic = "");
  // The messages with a correlation id.
  absl::StatusOr<std::vector<v1::Message>> ListMessages(const std::string& correlation_id,
                                                        int32_t page_size = 0);
  // The dead letters of a subscription (with the pgbus.dead_letter.* attributes).
  absl::StatusOr<std::vector<v1::Message>> ListDeadLetters(const std::string& subscription,
                                                           int32_t page_size = 0);
  // Publishes dead letters to their original topic again (these ids, or the
  // oldest `limit`); returns the new ids.
  absl::StatusOr<std::vector<std::string>> RedriveDeadLetters(
      const std::string& subscription, const std::vector<std::string>& message_ids = {},
      int32_t limit = 0);
  // Publishes and returns the ids in order.
  absl::StatusOr<std::vector<std::string>> Publish(const std::string& topic,
                                                   std::vector<v1::PublishMessage> messages);
  absl::StatusOr<std::string> Publish(const std::string& topic, const std::string& payload);
  // One status per ack id.
  absl::StatusOr<std::vector<v1::AckStatus>> Ack(const std::string& subscription,
                                                 const std::vector<std::string>& ack_ids);
  absl::StatusOr<std::vector<v1::AckStatus>> ModifyAckDeadline(
      const std::string& subscription, const std::vector<std::string>& ack_ids,
      absl::Duration deadline, const std::string& reason = "");
  // Progress callbacks get (bytes done, total bytes; -1 when unknown).
  using Progress = std::function<void(int64_t, int64_t)>;

  // Streams `in` to UploadPayload in 1 MiB requests; memory does not grow
  // with the payload. Returns the handle, size and server SHA-256.
  absl::StatusOr<v1::UploadPayloadResponse> UploadPayload(const std::string& topic,
                                                          std::istream& in,
                                                          bool compressed = false,
                                                          const Progress& progress = {});
  // Publishes a payload of any size: inline up to `inline_limit`, otherwise
  // uploaded first and published by handle. Returns the message id.
  absl::StatusOr<std::string> PublishPayload(const std::string& topic, const std::string& data,
                                             int64_t inline_limit = 256 * 1024);
  // Streams a message's payload to `out` in ranged Retrieve calls and
  // checks the whole against the message's SHA-256 (DATA_LOSS on a
  // mismatch). Returns the byte count.
  absl::StatusOr<int64_t> RetrievePayloadTo(const std::string& message_id, std::ostream& out,
                                            const Progress& progress = {});
  // The whole payload in memory (small payloads), checked as above.
  absl::StatusOr<std::string> RetrievePayload(const std::string& message_id);
  std::unique_ptr<Subscriber> Subscribe(v1::SubscribeRequest request);
  std::unique_ptr<Subscriber> Subscribe(const std::string& subscription);

 private:
  // A context whose deadline is the client's timeout from now.
  std::unique_ptr<grpc::ClientContext> Context() const;

  std::shared_ptr<grpc::Channel> channel_;
  absl::Duration timeout_;
  std::unique_ptr<v1::BusService::Stub> bus_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

}  // namespace pgbus

#endif  // PGBUS_SDK_CPP_CLIENT_H_
