// The domain records of pgbus: plain values, no behaviour, on the ground
// floor (Redpanda's model/): api/, bus/ and store/ all use them and none of
// them owns them, so api/ depends on the model, not on storage.
#ifndef PGBUS_SERVICE_MODEL_MODEL_H_
#define PGBUS_SERVICE_MODEL_MODEL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace pgbus::model {

using Attributes = std::map<std::string, std::string>;

struct TopicRecord {
  std::string name;
  absl::Duration retention = absl::Hours(24 * 7);
  int64_t max_message_bytes = 0;                 // 0: the server's limit
  absl::Duration message_ttl = absl::ZeroDuration();  // zero: retention
  absl::Duration dedup_window = absl::Hours(24);
  absl::Time create_time;                        // output only
};

struct SubscriptionRecord {
  std::string name;
  std::string topic;
  std::string filter;
  // The filter compiled to a jsonpath predicate (bus::CompileFilter); set
  // by the bus on creation, not read back.
  std::string filter_path;
  absl::Duration ack_deadline = absl::Seconds(30);
  int32_t max_delivery_attempts = 0;
  std::string dead_letter_topic;
  absl::Duration min_backoff = absl::ZeroDuration();
  absl::Duration max_backoff = absl::Seconds(60);
  absl::Time create_time;  // output only
};

// A message to store. `sha256` is the server-computed digest (32 bytes).
struct NewMessage {
  std::string payload;
  Attributes attributes;
  int32_t priority = 0;
  std::string correlation_id;
  std::string ordering_key;
  std::string idempotency_key;
  std::optional<absl::Duration> ttl;
  std::optional<absl::Time> deliver_at;
  std::string sha256;
  // An uploaded payload (UploadPayload) instead of `payload`; 0: inline.
  int64_t payload_id = 0;
};

// A stored message. `payload` is set only where the read asked for it.
struct MessageRecord {
  int64_t id = 0;
  std::string topic;
  std::string payload;
  bool payload_by_reference = false;
  int64_t size = 0;
  std::string sha256;
  Attributes attributes;
  int32_t priority = 0;
  std::string correlation_id;
  std::string ordering_key;
  std::string idempotency_key;
  absl::Time publish_time;
  std::optional<absl::Time> expire_time;
  std::optional<absl::Time> deliver_time;
};

// Identifies one delivery attempt of a message to one stream.
struct LeaseKey {
  int64_t message_id = 0;
  int32_t attempt = 0;
  int64_t lease = 0;  // the stream's lease token
  bool operator==(const LeaseKey& o) const {
    return message_id == o.message_id && attempt == o.attempt && lease == o.lease;
  }
};

// A message leased to a stream.
struct Delivery {
  MessageRecord message;
  int32_t attempt = 0;
  int64_t lease = 0;  // the stream lease token it was claimed with
  absl::Time lease_expiry;
  // The client's handle for Ack / ModifyAckDeadline, set by bus/ before the
  // delivery is sent (bus::EncodeAckId of message, attempt and lease).
  std::string ack_id;
};

// An idle stream's credit, offered to a group commit: the commit leases
// the stream the ready deliveries it makes for the subscription, up to the
// credit, so they reach the stream without a claim (see bus::Dispatcher).
struct LeaseOffer {
  std::string tenant;
  std::string subscription;
  int64_t lease = 0;  // the stream's lease token
  absl::Duration ack_deadline;
  int max_messages = 0;
  int64_t max_bytes = 0;
  bool first_may_exceed = false;  // as in a claim
};

// What a group commit leased to one offer.
struct HandedOff {
  std::vector<Delivery> deliveries;
  // The commit left no ready delivery of the subscription that the offer
  // did not take (one held back by its ordering key, one beyond the credit,
  // or one stored by a transaction without the offer): the stream need not
  // claim for it.
  bool complete = false;
};

// One Publish call's worth of messages, for one tenant and topic.
struct PublishItem {
  std::string tenant;
  std::string topic;
  std::vector<NewMessage> messages;
};

struct RetrieveResult {
  MessageRecord message;  // metadata; payload empty
  std::string data;       // the requested range
  int64_t offset = 0;
};

struct StatsRecord {
  int64_t messages = 0;
  int64_t pending = 0;
  int64_t in_flight = 0;
  double oldest_unacked_age_seconds = 0;
  int64_t published = 0;      // to the topic (of the subscription), ever
  int64_t acked = 0;          // by the subscription, ever
  int64_t dead_lettered = 0;  // by the subscription, ever
};

// A tenant as the operator set it up. Unset quotas: no limit of its own.
struct TenantRecord {
  std::string tenant;
  std::optional<int64_t> max_message_bytes;
  std::optional<int64_t> max_stored_bytes;
  std::optional<int> max_publish_rate;  // messages per second
  std::optional<int> max_streams;
  int64_t stored_bytes = 0;  // payload bytes stored now
  absl::Time created_at;
};

// An API key; the secret itself is never stored.
struct ApiKeyRecord {
  std::string tenant;
  std::string key_id;
  std::string secret_sha256;
  std::vector<std::string> scopes;
  std::vector<std::string> topics;  // patterns
  std::string description;
  absl::Time created_at;  // unset by Directory::LookupApiKey
  bool revoked = false;
  // When it was revoked; set by the operator's listing only (the lookup
  // that authentication makes reads whether, not when).
  std::optional<absl::Time> revoked_at;
};

// A (tenant, topic) whose subscribers have new messages.
struct TopicKey {
  std::string tenant;
  std::string topic;
  bool operator<(const TopicKey& o) const {
    return tenant != o.tenant ? tenant < o.tenant : topic < o.topic;
  }
  bool operator==(const TopicKey& o) const { return tenant == o.tenant && topic == o.topic; }
};

}  // namespace pgbus::model

#endif  // PGBUS_SERVICE_MODEL_MODEL_H_
