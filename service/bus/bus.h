// The pgbus domain: topics, subscriptions, publishing, leases. api/ calls
// it; it calls the store. No gRPC types and no SQL here.
//
// Blocking methods (everything but Publish and Subscribe) do database work
// on the calling thread: call them from the worker pool, never from a gRPC
// thread. Errors are INVALID_ARGUMENT for a bad request (naming the field),
// NOT_FOUND, ALREADY_EXISTS, DATA_LOSS for a checksum mismatch,
// UNIMPLEMENTED for parts of the v1 contract this server does not serve
// yet, and the store's codes (UNAVAILABLE, ABORTED, ...).
//
// Thread safety: every method may be called from any thread.
#ifndef PGBUS_SERVICE_BUS_BUS_H_
#define PGBUS_SERVICE_BUS_BUS_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "service/bus/dispatcher.h"
#include "service/bus/publisher.h"
#include "service/bus/upload.h"
#include "service/store/store.h"

namespace pgbus::bus {

struct BusOptions {
  int64_t inline_payload_limit = 256 * 1024;
  int64_t max_payload_bytes = int64_t{2} << 30;
  int publish_committers = 2;
  int publish_max_batch = 1000;
  // Publish calls waiting for a commit before UNAVAILABLE.
  int max_queued_publishes = 10000;
  absl::Duration poll_interval = absl::Milliseconds(500);
};

struct Page {
  std::string token;  // opaque; empty: the first page
  int size = 0;       // 0: default
};

// The caller's tenant quotas that bus/ enforces itself (the others are the
// schema's: stored bytes, or auth's: publish rate, streams).
struct TenantLimits {
  std::optional<int64_t> max_message_bytes;  // per payload; none: no limit of its own
};

// One page of a listing and the token of the next (empty: the last page).
template <typename T>
struct PageOf {
  std::vector<T> items;
  std::string next_page_token;
};

// A topic's or subscription's counters, and its streams on this replica.
struct Stats {
  model::StatsRecord counts;
  int64_t active_streams = 0;
};

struct SubscribeParams {
  std::string subscription;
  int64_t max_outstanding_messages = 0;  // 0: default
  int64_t max_outstanding_bytes = 0;     // 0: default
  std::optional<absl::Duration> ack_deadline;
};

// One Ack/ModifyAckDeadline outcome per ack id, in request order.
using LeaseResults = std::vector<bool>;

// Starts UploadPayload's uploads: all that its reactor needs of the bus
// (tests/unit/upload_reactor_test.cc gives it uploads over a fake store).
class Uploads {
 public:
  virtual ~Uploads() = default;
  // Starts an upload (blocking). NOT_FOUND for an unknown topic; Append
  // refuses bytes past the tenant's max_message_bytes.
  virtual absl::StatusOr<std::unique_ptr<Upload>> BeginUpload(const std::string& tenant,
                                                              const std::string& topic,
                                                              bool compressed,
                                                              const TenantLimits& limits) = 0;
};

class Bus : public Uploads {
 public:
  Bus(store::Store* store, WorkerPool* pool, BusOptions options);
  ~Bus();

  absl::StatusOr<model::TopicRecord> CreateTopic(const std::string& tenant,
                                                 model::TopicRecord topic);
  absl::StatusOr<model::TopicRecord> GetTopic(const std::string& tenant, const std::string& name);
  absl::StatusOr<PageOf<model::TopicRecord>> ListTopics(
      const std::string& tenant, const Page& page);
  absl::Status DeleteTopic(const std::string& tenant, const std::string& name);

  absl::StatusOr<model::SubscriptionRecord> CreateSubscription(const std::string& tenant,
                                                               model::SubscriptionRecord sub);
  absl::StatusOr<model::SubscriptionRecord> GetSubscription(const std::string& tenant,
                                                            const std::string& name);
  absl::StatusOr<PageOf<model::SubscriptionRecord>>
  ListSubscriptions(const std::string& tenant, const std::string& topic, const Page& page);
  absl::Status DeleteSubscription(const std::string& tenant, const std::string& name);

  // Validates, checksums and queues for group commit. `done` runs once, on
  // a committer thread (or inline for a rejected request), with the ids.
  // Client checksums that do not match the payload fail with DATA_LOSS; a
  // payload over the tenant's max_message_bytes, RESOURCE_EXHAUSTED.
  void Publish(const std::string& tenant, const std::string& topic,
               std::vector<model::NewMessage> messages, const TenantLimits& limits,
               Publisher::Done done);

  // Opens a stream on the subscription (blocking: checks it exists). It
  // claims nothing until the caller, once its sink can take a batch, calls
  // Stream::Start().
  absl::StatusOr<std::shared_ptr<Stream>> Subscribe(const std::string& tenant,
                                                    const SubscribeParams& params,
                                                    std::shared_ptr<StreamSink> sink);

  absl::StatusOr<LeaseResults> Ack(const std::string& tenant, const std::string& subscription,
                                   const std::vector<std::string>& ack_ids);
  // `deadline` zero: nack, with `reason` (at most 1024 bytes) kept for a
  // dead letter.
  absl::StatusOr<LeaseResults> ModifyAckDeadline(const std::string& tenant,
                                                 const std::string& subscription,
                                                 const std::vector<std::string>& ack_ids,
                                                 absl::Duration deadline,
                                                 const std::string& reason = "");

  // OUT_OF_RANGE for an offset past the end; INVALID_ARGUMENT for negative
  // offsets or lengths.
  absl::StatusOr<model::RetrieveResult> Retrieve(const std::string& tenant,
                                                 const std::string& message_id, int64_t offset,
                                                 int64_t length);

  absl::Status Seek(const std::string& tenant, const std::string& subscription, absl::Time time);
  // Exactly one of topic / subscription.
  absl::StatusOr<Stats> GetStats(const std::string& tenant,
                                                                   const std::string& topic,
                                                                   const std::string& subscription);
  // A page of the subscription's dead letters, oldest first.
  absl::StatusOr<PageOf<model::MessageRecord>> ListDeadLetters(
      const std::string& tenant, const std::string& subscription, const Page& page);
  // Publishes dead letters again to their original topics; returns the new
  // ids. `message_ids` empty: the oldest `limit` (0: 1000).
  absl::StatusOr<std::vector<int64_t>> RedriveDeadLetters(
      const std::string& tenant, const std::string& subscription,
      const std::vector<std::string>& message_ids, int limit);
  absl::StatusOr<PageOf<model::MessageRecord>> ListMessages(
      const std::string& tenant, const std::string& correlation_id, const Page& page);

  // Publishes committed to these topics, on this or another replica
  // (empty: any topic).
  void Wake(const std::vector<model::TopicKey>& topics) { dispatcher_->Wake(topics); }

  // Open streams and their unsettled messages, for metrics.
  Dispatcher::Counts StreamCounts() { return dispatcher_->Count(); }

  // Ends streams with UNAVAILABLE and commits queued publishes.
  void Shutdown();

  absl::StatusOr<std::unique_ptr<Upload>> BeginUpload(const std::string& tenant,
                                                      const std::string& topic, bool compressed,
                                                      const TenantLimits& limits) override;


 private:
  absl::StatusOr<std::vector<model::LeaseKey>> DecodeAckIds(const std::vector<std::string>& ids);

  store::Store* const store_;
  const BusOptions options_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<Publisher> publisher_;
};

}  // namespace pgbus::bus

#endif  // PGBUS_SERVICE_BUS_BUS_H_
