#include "service/api/convert.h"

#include "absl/strings/str_cat.h"
#include "service/bus/upload.h"
#include "service/common/status_macros.h"

namespace pgbus::api {

absl::StatusOr<absl::Duration> FromProto(absl::string_view field,
                                         const google::protobuf::Duration& d) {
  // google/protobuf/duration.proto: |seconds| <= 315576000000, |nanos| <
  // 1e9, and both of the same sign.
  if (d.seconds() < -315576000000 || d.seconds() > 315576000000 || d.nanos() <= -1000000000 ||
      d.nanos() >= 1000000000 || (d.seconds() > 0 && d.nanos() < 0) ||
      (d.seconds() < 0 && d.nanos() > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": not a valid Duration"));
  }
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::StatusOr<absl::Time> FromProto(absl::string_view field,
                                     const google::protobuf::Timestamp& t) {
  // 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, nanos in [0, 1e9).
  if (t.seconds() < -62135596800 || t.seconds() > 253402300799 || t.nanos() < 0 ||
      t.nanos() >= 1000000000) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": not a valid Timestamp"));
  }
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

void ToProto(absl::Duration d, google::protobuf::Duration* out) {
  int64_t s = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(s);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  int64_t micros = absl::ToUnixMicros(t);
  int64_t s = micros / 1000000, us = micros % 1000000;
  if (us < 0) {
    us += 1000000;
    --s;
  }
  out->set_seconds(s);
  out->set_nanos(static_cast<int32_t>(us * 1000));
}

absl::StatusOr<model::TopicRecord> FromProto(const v1::Topic& t) {
  model::TopicRecord r;
  r.name = t.name();
  if (t.has_retention()) {
    ASSIGN_OR_RETURN(r.retention, FromProto("topic.retention", t.retention()));
  }
  if (t.has_message_ttl()) {
    ASSIGN_OR_RETURN(r.message_ttl, FromProto("topic.message_ttl", t.message_ttl()));
    if (r.message_ttl == absl::ZeroDuration()) {
      return absl::InvalidArgumentError("topic.message_ttl: must be positive when set");
    }
  }
  if (t.has_dedup_window()) {
    ASSIGN_OR_RETURN(r.dedup_window, FromProto("topic.dedup_window", t.dedup_window()));
  }
  r.max_message_bytes = t.max_message_bytes();
  return r;
}

absl::StatusOr<model::SubscriptionRecord> FromProto(const v1::Subscription& s) {
  model::SubscriptionRecord r;
  r.name = s.name();
  r.topic = s.topic();
  r.filter = s.filter();
  r.max_delivery_attempts = s.max_delivery_attempts();
  r.dead_letter_topic = s.dead_letter_topic();
  if (s.has_ack_deadline()) {
    ASSIGN_OR_RETURN(r.ack_deadline, FromProto("subscription.ack_deadline", s.ack_deadline()));
  }
  if (s.has_min_backoff()) {
    ASSIGN_OR_RETURN(r.min_backoff, FromProto("subscription.min_backoff", s.min_backoff()));
  }
  if (s.has_max_backoff()) {
    ASSIGN_OR_RETURN(r.max_backoff, FromProto("subscription.max_backoff", s.max_backoff()));
  }
  return r;
}

absl::StatusOr<model::NewMessage> FromProto(int index, const v1::PublishMessage& m) {
  std::string at = absl::StrCat("messages[", index, "]");
  model::NewMessage r;
  if (!m.payload_handle().empty()) {
    if (!m.payload().empty() || !m.sha256().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          at, ": with payload_handle, leave payload and sha256 empty (the upload carries both)"));
    }
    auto id = bus::DecodePayloadHandle(m.payload_handle());
    if (!id.ok()) return absl::InvalidArgumentError(absl::StrCat(at, ".", id.status().message()));
    r.payload_id = *id;
  }
  if (!m.sha256().empty() && m.sha256().size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat(
        at, ".sha256: must be the 32-byte SHA-256 digest of the payload (or empty); got ",
        m.sha256().size(), " bytes"));
  }
  r.payload = m.payload();
  r.attributes.insert(m.attributes().begin(), m.attributes().end());
  r.priority = m.priority();
  r.correlation_id = m.correlation_id();
  r.ordering_key = m.ordering_key();
  r.idempotency_key = m.idempotency_key();
  r.sha256 = m.sha256();
  if (m.has_ttl()) {
    ASSIGN_OR_RETURN(r.ttl, FromProto(absl::StrCat(at, ".ttl"), m.ttl()));
  }
  if (m.has_deliver_at()) {
    ASSIGN_OR_RETURN(r.deliver_at, FromProto(absl::StrCat(at, ".deliver_at"), m.deliver_at()));
  }
  return r;
}

void ToProto(const model::TopicRecord& t, v1::Topic* out) {
  out->set_name(t.name);
  ToProto(t.retention, out->mutable_retention());
  out->set_max_message_bytes(t.max_message_bytes);
  if (t.message_ttl != absl::ZeroDuration()) ToProto(t.message_ttl, out->mutable_message_ttl());
  ToProto(t.dedup_window, out->mutable_dedup_window());
  ToProto(t.create_time, out->mutable_create_time());
}

void ToProto(const model::SubscriptionRecord& s, v1::Subscription* out) {
  out->set_name(s.name);
  out->set_topic(s.topic);
  out->set_filter(s.filter);
  ToProto(s.ack_deadline, out->mutable_ack_deadline());
  out->set_max_delivery_attempts(s.max_delivery_attempts);
  out->set_dead_letter_topic(s.dead_letter_topic);
  ToProto(s.min_backoff, out->mutable_min_backoff());
  ToProto(s.max_backoff, out->mutable_max_backoff());
  ToProto(s.create_time, out->mutable_create_time());
}

void ToProto(const model::MessageRecord& m, v1::Message* out) {
  out->set_id(std::to_string(m.id));
  out->set_topic(m.topic);
  if (!m.payload_by_reference) out->set_payload(m.payload);
  out->set_payload_by_reference(m.payload_by_reference);
  out->set_size(m.size);
  out->set_sha256(m.sha256);
  out->mutable_attributes()->insert(m.attributes.begin(), m.attributes.end());
  out->set_priority(m.priority);
  out->set_correlation_id(m.correlation_id);
  out->set_ordering_key(m.ordering_key);
  out->set_idempotency_key(m.idempotency_key);
  ToProto(m.publish_time, out->mutable_publish_time());
  if (m.expire_time) ToProto(*m.expire_time, out->mutable_expire_time());
  if (m.deliver_time) ToProto(*m.deliver_time, out->mutable_deliver_time());
}

}  // namespace pgbus::api
