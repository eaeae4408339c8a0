#include "service/store/postgres/pg_rows.h"

#include "absl/strings/str_cat.h"

namespace pgbus::store::postgres {

std::string NotifyPayload(const std::set<TopicKey>& topics) {
  std::string payload;
  for (const TopicKey& k : topics) absl::StrAppend(&payload, k.tenant, "\t", k.topic, "\n");
  if (payload.size() > kMaxNotifyPayload) payload.clear();
  return payload;
}

absl::Status TopicNotFound(const std::string& topic) {
  return absl::NotFoundError(absl::StrCat("topic \"", topic, "\" not found"));
}

absl::Status SubscriptionNotFound(const std::string& subscription) {
  return absl::NotFoundError(absl::StrCat("subscription \"", subscription, "\" not found"));
}

TopicRecord ReadTopic(RowReader& row) {
  TopicRecord t;
  t.name = row.Text();
  t.retention = absl::Milliseconds(row.Int8());
  t.max_message_bytes = row.Int8();
  t.message_ttl = absl::Milliseconds(row.Int8());
  t.dedup_window = absl::Milliseconds(row.Int8());
  t.create_time = absl::FromUnixMicros(row.Int8());
  return t;
}

SubscriptionRecord ReadSubscription(RowReader& row) {
  SubscriptionRecord s;
  s.name = row.Text();
  s.topic = row.Text();
  s.filter = row.Text();
  s.ack_deadline = absl::Milliseconds(row.Int8());
  s.max_delivery_attempts = row.Int4();
  s.dead_letter_topic = row.Text();
  s.min_backoff = absl::Milliseconds(row.Int8());
  s.max_backoff = absl::Milliseconds(row.Int8());
  s.create_time = absl::FromUnixMicros(row.Int8());
  return s;
}

Attributes ReadAttributes(RowReader& row) {
  std::vector<std::string> keys = row.TextArray();
  std::vector<std::string> values = row.TextArray();
  Attributes out;
  for (size_t i = 0; i < keys.size() && i < values.size(); ++i) {
    out.emplace(std::move(keys[i]), std::move(values[i]));
  }
  return out;
}

MessageRecord ReadMessage(RowReader& row) {
  MessageRecord m;
  m.id = row.Int8();
  m.topic = row.Text();
  m.priority = row.Int4();
  m.size = row.Int8();
  m.sha256 = row.Bytes();
  m.publish_time = row.Timestamp();
  if (auto t = row.Maybe(&RowReader::Timestamp)) m.expire_time = *t;
  if (auto t = row.Maybe(&RowReader::Timestamp)) m.deliver_time = *t;
  m.correlation_id = row.Maybe(&RowReader::Text).value_or("");
  m.ordering_key = row.Maybe(&RowReader::Text).value_or("");
  m.idempotency_key = row.Maybe(&RowReader::Text).value_or("");
  m.attributes = ReadAttributes(row);
  m.payload_by_reference = row.Bool();
  return m;
}

std::vector<MessageRecord> ReadListing(const Rows& rows) {
  return rows.Map([](RowReader& row) {
    MessageRecord m = ReadMessage(row);
    m.payload_by_reference = true;
    return m;
  });
}

}  // namespace pgbus::store::postgres
