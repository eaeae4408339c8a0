// The storage contract of pgbus, in role interfaces (what admin calls,
// publishing, delivery, payloads, maintenance and notifications each need),
// so that a part of bus/ and its test fakes see only their role; Store is
// all of them. bus/ programs against these; store/postgres/ implements
// Store. Every call is scoped to one tenant: an
// implementation must make rows of other tenants invisible (Postgres does it
// with row-level security).
//
// Errors, common to every method: UNAVAILABLE when the database cannot be
// reached (retry the call), ABORTED on a serialization failure or deadlock
// (retry the transaction), DEADLINE_EXCEEDED when a statement timed out,
// INTERNAL for anything else. Method comments list the other codes.
//
// Thread safety: implementations are safe to call from many threads.
#ifndef PGBUS_SERVICE_STORE_STORE_H_
#define PGBUS_SERVICE_STORE_STORE_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "service/model/model.h"

namespace pgbus::store {

// The model's records, by their short names in the storage layer.
using model::ApiKeyRecord;
using model::Attributes;
using model::Delivery;
using model::HandedOff;
using model::LeaseKey;
using model::LeaseOffer;
using model::MessageRecord;
using model::NewMessage;
using model::PublishItem;
using model::RetrieveResult;
using model::StatsRecord;
using model::SubscriptionRecord;
using model::TenantRecord;
using model::TopicKey;
using model::TopicRecord;

// Topics, subscriptions, replay, stats, dead letters and lookups by
// correlation id: the admin surface.
class AdminStore {
 public:
  virtual ~AdminStore() = default;

  // Creates the tenant if it does not exist.
  virtual absl::Status EnsureTenant(const std::string& tenant) = 0;

  // ALREADY_EXISTS when a topic of that name exists.
  virtual absl::StatusOr<TopicRecord> CreateTopic(const std::string& tenant,
                                                  const TopicRecord& topic) = 0;
  // NOT_FOUND when there is no such topic.
  virtual absl::StatusOr<TopicRecord> GetTopic(const std::string& tenant,
                                               const std::string& name) = 0;
  // At most `limit` topics with names after `after`, in name order.
  virtual absl::StatusOr<std::vector<TopicRecord>> ListTopics(
      const std::string& tenant, const std::string& after, int limit) = 0;
  // Deletes the topic, its messages and its subscriptions. NOT_FOUND when
  // there is no such topic.
  virtual absl::Status DeleteTopic(const std::string& tenant, const std::string& name) = 0;

  // NOT_FOUND when the topic does not exist; ALREADY_EXISTS when the
  // subscription name is taken.
  virtual absl::StatusOr<SubscriptionRecord> CreateSubscription(
      const std::string& tenant, const SubscriptionRecord& sub) = 0;
  // NOT_FOUND when there is no such subscription.
  virtual absl::StatusOr<SubscriptionRecord> GetSubscription(const std::string& tenant,
                                                             const std::string& name) = 0;
  // In name order; `topic` empty: of every topic.
  virtual absl::StatusOr<std::vector<SubscriptionRecord>> ListSubscriptions(
      const std::string& tenant, const std::string& topic, const std::string& after,
      int limit) = 0;
  // NOT_FOUND when there is no such subscription.
  virtual absl::Status DeleteSubscription(const std::string& tenant,
                                          const std::string& name) = 0;

  // Makes every retained message of the subscription's topic published at or
  // after `time` deliverable again. NOT_FOUND for an unknown subscription.
  virtual absl::Status Seek(const std::string& tenant, const std::string& subscription,
                            absl::Time time) = 0;

  // Counters of a topic or (when `subscription` is set) a subscription.
  // NOT_FOUND when it does not exist.
  virtual absl::StatusOr<StatsRecord> GetStats(const std::string& tenant,
                                               const std::string& topic,
                                               const std::string& subscription) = 0;

  // The subscription's unexpired dead letters with ids above `after_id`.
  // NOT_FOUND for an unknown subscription.
  virtual absl::StatusOr<std::vector<MessageRecord>> ListDeadLetters(
      const std::string& tenant, const std::string& subscription, int64_t after_id,
      int limit) = 0;
  // Publishes dead letters (`ids`, or the oldest when empty; at most
  // `limit`) again to their original topics and removes them. Returns the
  // new messages. NOT_FOUND for an unknown subscription.
  struct Republished {
    int64_t id = 0;     // the new message's
    std::string topic;  // the original topic it went back to
  };
  virtual absl::StatusOr<std::vector<Republished>> RedriveDeadLetters(
      const std::string& tenant, const std::string& subscription,
      const std::vector<int64_t>& ids, int limit) = 0;

  // Unexpired messages with the correlation id and an id above `after_id`,
  // in publish order, metadata only.
  virtual absl::StatusOr<std::vector<MessageRecord>> ListMessages(
      const std::string& tenant, const std::string& correlation_id, int64_t after_id,
      int limit) = 0;
};

// Publishing: the Publisher's group commits.
class PublishStore {
 public:
  virtual ~PublishStore() = default;

  // Stores the messages of every item durably, in as few transactions as it
  // can (group commit), and announces the topics to listeners of every
  // replica. Returns one result per item, in order: the message ids, or
  // NOT_FOUND when the item's topic does not exist (that item stores
  // nothing; the others are unaffected). Also per item (a group commit that
  // fails is retried item by item, so only the offending item fails), as
  // the schema raises them: RESOURCE_EXHAUSTED when a message exceeds its
  // topic's max_message_bytes or the tenant's max_stored_bytes would be
  // exceeded; INVALID_ARGUMENT for a payload handle that is not a completed
  // upload of the topic.
  //
  // `offers` are idle streams' credit (model::LeaseOffer, at most one a
  // subscription): the transaction leases each the ready deliveries it
  // makes for the offer's subscription (attempt 1) as a claim would: not
  // delayed, without an uploaded payload, one with an ordering key only
  // when it heads its key (as sql/claim.sql decides), highest priority then
  // publish order, within the credit. `handed` gets one entry per offer,
  // the deliveries complete with their messages; nothing (and not
  // complete) when the transaction failed.
  virtual std::vector<absl::StatusOr<std::vector<int64_t>>> PublishBatch(
      const std::vector<const PublishItem*>& items, const std::vector<LeaseOffer>& offers,
      std::vector<HandedOff>* handed) = 0;
};

// Leases: claims, acks, deadline changes, give-backs and dead-lettering (the
// Dispatcher and the Ack / ModifyAckDeadline calls).
class DeliveryStore {
 public:
  virtual ~DeliveryStore() = default;

  // Leases to `lease` up to `max_messages` deliverable messages of the
  // subscription (visible, not expired), highest priority first then publish
  // order, stopping before `max_bytes` of payload is exceeded. When
  // `first_may_exceed`, the first message is taken whatever its size (a
  // consumer with nothing outstanding must be able to take a message larger
  // than its whole budget, or it would never make progress). Each is leased
  // until now + ack_deadline. NOT_FOUND when the subscription does not exist.
  virtual absl::StatusOr<std::vector<Delivery>> Claim(const std::string& tenant,
                                                      const std::string& subscription,
                                                      int64_t lease, int max_messages,
                                                      int64_t max_bytes, bool first_may_exceed,
                                                      absl::Duration ack_deadline) = 0;

  // Removes the leased deliveries from the subscription. Per key: true when
  // the lease was still held, false when it had expired, been nacked or
  // acked already. NOT_FOUND when the subscription does not exist.
  virtual absl::StatusOr<std::vector<bool>> Ack(const std::string& tenant,
                                                const std::string& subscription,
                                                const std::vector<LeaseKey>& keys) = 0;

  // Sets the leases to expire `deadline` from now; a zero deadline ends the
  // lease and makes the message visible again after the subscription's
  // backoff. Per key, and NOT_FOUND, as Ack.
  // `reason` (a nack's, deadline 0) is kept with the delivery.
  virtual absl::StatusOr<std::vector<bool>> ModifyAckDeadline(
      const std::string& tenant, const std::string& subscription,
      const std::vector<LeaseKey>& keys, absl::Duration deadline,
      const std::string& reason) = 0;

  // Ends the leases without waiting for their deadline (a stopping replica
  // gives back what its streams held): the messages are deliverable again
  // at once, with their attempt counts as they are (an exhausted one goes
  // to the dead-letter topic, as on an expired lease). Listeners on every
  // other replica are told that `topic` (the subscription's topic or
  // pattern) has messages. Per key as Ack.
  virtual absl::StatusOr<std::vector<bool>> ReleaseLeases(const std::string& tenant,
                                                          const std::string& subscription,
                                                          const std::string& topic,
                                                          const std::vector<LeaseKey>& keys) = 0;

  // Which of `keys` are still leased, per key: the lease's deadline, or
  // nothing once it was acked, nacked, given back, ran out or was taken by
  // another claim (on any replica). Reads only; a subscription that does
  // not exist holds none.
  virtual absl::StatusOr<std::vector<std::optional<absl::Time>>> HeldLeases(
      const std::string& tenant, const std::string& subscription,
      const std::vector<LeaseKey>& keys) = 0;

  // Moves up to `limit` deliveries of the subscription that used up its
  // max_delivery_attempts and are due again to its dead-letter topic.
  // Returns that topic's name and how many moved (none: an empty topic).
  struct DeadLettered {
    std::string topic;
    int64_t count = 0;
  };
  virtual absl::StatusOr<DeadLettered> DeadLetter(const std::string& tenant,
                                                 const std::string& subscription,
                                                 int limit) = 0;
};

// Payloads: ranged reads and the uploads of large ones.
class PayloadStore {
 public:
  virtual ~PayloadStore() = default;

  // The message's metadata and payload bytes [offset, offset + length),
  // verified against the stored checksums (the whole inline payload, or
  // every chunk the range touches). NOT_FOUND for an unknown or expired
  // message; OUT_OF_RANGE when offset is past the payload's end; DATA_LOSS
  // when stored bytes no longer match their checksum.
  virtual absl::StatusOr<RetrieveResult> Retrieve(const std::string& tenant, int64_t id,
                                                  int64_t offset, int64_t length) = 0;

  // Large payloads. An upload is created for a topic, filled chunk by chunk
  // (each chunk with the SHA-256 of its bytes), then completed with the
  // whole payload's size and SHA-256; until Publish attaches it to a
  // message it can be deleted. CreatePayload: NOT_FOUND for an unknown
  // topic. WriteChunk / CompletePayload: FAILED_PRECONDITION when the upload
  // is not in progress.
  struct NewPayload {
    int64_t id = 0;
    int64_t topic_max_message_bytes = 0;  // the topic's limit; 0: none
  };
  virtual absl::StatusOr<NewPayload> CreatePayload(const std::string& tenant,
                                                   const std::string& topic, int chunk_size,
                                                   bool compressed) = 0;
  virtual absl::Status WriteChunk(const std::string& tenant, int64_t payload_id, int seq,
                                  const std::string& sha256, const std::string& bytes) = 0;
  virtual absl::Status CompletePayload(const std::string& tenant, int64_t payload_id,
                                       int64_t size, const std::string& sha256) = 0;
  virtual absl::Status DeletePayload(const std::string& tenant, int64_t payload_id) = 0;
};

// The reaper's work.
class MaintenanceStore {
 public:
  virtual ~MaintenanceStore() = default;

  // Deletes at most `batch` expired messages of every tenant (with their
  // deliveries and payloads), and abandoned uploads and expired idempotency
  // keys. Returns how many messages went: call again while it is `batch`.
  virtual absl::StatusOr<int> ReapExpired(int batch) = 0;

  // Takes fresh statistics of the tables that have grown since their last
  // ones, so that cached plans are replanned for their size. Returns how
  // many tables it analysed.
  virtual absl::StatusOr<int> RefreshStatistics() = 0;
};

// Publish notifications from every replica.
class NotificationStore {
 public:
  virtual ~NotificationStore() = default;

  // Calls `on_publish` (on a thread of the store's) with the topics that
  // received messages on any other replica (this replica's own changes are
  // its caller's to announce locally). An empty vector means "anything may
  // have changed" (after a reconnect, or a notification too large to name
  // every topic). Runs until StopListening().
  virtual absl::Status StartListening(
      std::function<void(const std::vector<TopicKey>&)> on_publish) = 0;
  virtual void StopListening() = 0;
};

// Every role: what store/postgres/ implements and pgbusd wires in.
class Store : public AdminStore,
              public PublishStore,
              public DeliveryStore,
              public PayloadStore,
              public MaintenanceStore,
              public NotificationStore {};

// What authentication reads before a tenant is known. Implemented by the
// same store (pgbusd's role) through functions that return one key by its
// id, never a list.
class Directory {
 public:
  virtual ~Directory() = default;
  // The key with this id, revoked or not; nullopt when there is none.
  virtual absl::StatusOr<std::optional<ApiKeyRecord>> LookupApiKey(const std::string& key_id) = 0;
  // The tenant's row (quotas); nullopt when the tenant does not exist.
  virtual absl::StatusOr<std::optional<TenantRecord>> LookupTenant(const std::string& tenant) = 0;
};

}  // namespace pgbus::store

#endif  // PGBUS_SERVICE_STORE_STORE_H_
