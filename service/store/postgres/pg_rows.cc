#include "service/store/postgres/pg_rows.h"

#include "absl/strings/str_cat.h"
#include "service/common/status_macros.h"

namespace pgbus::store::postgres {

std::string NotifyPayload(const std::set<TopicKey>& topics) {
  std::string payload;
  for (const TopicKey& k : topics) absl::StrAppend(&payload, k.tenant, "\t", k.topic, "\n");
  if (payload.size() > kMaxNotifyPayload) payload.clear();
  return payload;
}

TopicRecord ReadTopic(const pqxx::row& r) {
  TopicRecord t;
  t.name = r[0].as<std::string>();
  t.retention = absl::Milliseconds(r[1].as<int64_t>());
  t.max_message_bytes = r[2].as<int64_t>();
  t.message_ttl = absl::Milliseconds(r[3].as<int64_t>());
  t.dedup_window = absl::Milliseconds(r[4].as<int64_t>());
  t.create_time = absl::FromUnixMicros(r[5].as<int64_t>());
  return t;
}

SubscriptionRecord ReadSubscription(const pqxx::row& r) {
  SubscriptionRecord s;
  s.name = r[0].as<std::string>();
  s.topic = r[1].as<std::string>();
  s.filter = r[2].as<std::string>();
  s.ack_deadline = absl::Milliseconds(r[3].as<int64_t>());
  s.max_delivery_attempts = r[4].as<int32_t>();
  s.dead_letter_topic = r[5].as<std::string>();
  s.min_backoff = absl::Milliseconds(r[6].as<int64_t>());
  s.max_backoff = absl::Milliseconds(r[7].as<int64_t>());
  s.create_time = absl::FromUnixMicros(r[8].as<int64_t>());
  return s;
}

// Columns 0..13 of PGBUS_MESSAGE_COLUMNS, binary format.
MessageRecord ReadMessage(const BinaryRow& row) {
  MessageRecord m;
  m.id = row.Int8(0);
  m.topic = row.Bytes(1);
  m.priority = row.Int4(2);
  m.size = row.Int8(3);
  m.sha256 = row.Bytes(4);
  m.publish_time = row.Timestamp(5);
  if (!row.IsNull(6)) m.expire_time = row.Timestamp(6);
  if (!row.IsNull(7)) m.deliver_time = row.Timestamp(7);
  if (!row.IsNull(8)) m.correlation_id = row.Bytes(8);
  if (!row.IsNull(9)) m.ordering_key = row.Bytes(9);
  if (!row.IsNull(10)) m.idempotency_key = row.Bytes(10);
  std::vector<std::string> keys = row.TextArray(11);
  std::vector<std::string> values = row.TextArray(12);
  for (size_t i = 0; i < keys.size() && i < values.size(); ++i) {
    m.attributes.emplace(std::move(keys[i]), std::move(values[i]));
  }
  m.payload_by_reference = row.Bool(13);
  return m;
}

absl::Status ListMetadata(Connection& conn, const char* name, const char* statement,
                          const std::string& key, int64_t after_id, int limit,
                          std::vector<MessageRecord>* out) {
  RETURN_IF_ERROR(conn.PrepareRaw(name, statement, {kText, kInt8, kInt4}));
  std::string after_bin = EncodeInt8(after_id), limit_bin = EncodeInt4(limit);
  ASSIGN_OR_RETURN(Result res, ExecRaw(conn, name,
                                       {Param::Text(key), Param::Binary(after_bin),
                                        Param::Binary(limit_bin)}));
  for (int i = 0; i < PQntuples(res.get()); ++i) {
    MessageRecord m = ReadMessage(BinaryRow(res.get(), i));
    m.payload_by_reference = true;
    out->push_back(std::move(m));
  }
  return absl::OkStatus();
}

}  // namespace pgbus::store::postgres
