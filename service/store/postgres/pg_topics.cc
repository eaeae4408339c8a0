// PgStore (service/store/postgres/pg_store.h), in part: Topics and subscriptions.
#include "service/store/postgres/pg_store.h"

#include "service/common/status_macros.h"
#include "service/common/topic_pattern.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

absl::StatusOr<TopicRecord> PgStore::CreateTopic(const std::string& tenant,
                                                 const TopicRecord& topic) {
  ASSIGN_OR_RETURN(std::optional<Rows> r,
                   CreateAndGet(tenant, sql::kCreateTopic, sql::kGetTopic, topic.name,
                                ToMs(topic.retention), topic.max_message_bytes,
                                ToMs(topic.message_ttl), ToMs(topic.dedup_window)));
  if (!r) return absl::InternalError("a created topic was not found");
  RowReader row = (*r)[0];
  return ReadTopic(row);
}

absl::StatusOr<TopicRecord> PgStore::GetTopic(const std::string& tenant,
                                              const std::string& name) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kGetTopic, name));
  if (r.empty()) return TopicNotFound(name);
  RowReader row = r[0];
  return ReadTopic(row);
}

absl::StatusOr<std::vector<TopicRecord>> PgStore::ListTopics(const std::string& tenant,
                                                             const std::string& after,
                                                             int limit) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kListTopics, after, limit));
  return r.Map(ReadTopic);
}

absl::Status PgStore::DeleteTopic(const std::string& tenant, const std::string& name) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kDeleteTopic, name));
  return r.empty() ? TopicNotFound(name) : absl::OkStatus();
}

absl::StatusOr<SubscriptionRecord> PgStore::CreateSubscription(const std::string& tenant,
                                                               const SubscriptionRecord& sub) {
  ASSIGN_OR_RETURN(
      std::optional<Rows> r, IsTopicPattern(sub.topic)
                  ? CreateAndGet(tenant, sql::kCreatePatternSubscription,
                                 sql::kGetSubscription, sub.name, sub.topic, sub.filter,
                                 ToMs(sub.ack_deadline), sub.max_delivery_attempts,
                                 sub.dead_letter_topic, ToMs(sub.min_backoff),
                                 ToMs(sub.max_backoff), sub.filter_path,
                                 TopicPatternRegex(sub.topic))
                  : CreateAndGet(tenant, sql::kCreateSubscription, sql::kGetSubscription,
                                 sub.name, sub.topic, sub.filter, ToMs(sub.ack_deadline),
                                 sub.max_delivery_attempts, sub.dead_letter_topic,
                                 ToMs(sub.min_backoff), ToMs(sub.max_backoff),
                                 sub.filter_path));
  if (!r) return TopicNotFound(sub.topic);  // nothing created
  RowReader row = (*r)[0];
  return ReadSubscription(row);
}

absl::StatusOr<SubscriptionRecord> PgStore::GetSubscription(const std::string& tenant,
                                                            const std::string& name) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kGetSubscription, name));
  if (r.empty()) return SubscriptionNotFound(name);
  RowReader row = r[0];
  return ReadSubscription(row);
}

absl::StatusOr<std::vector<SubscriptionRecord>> PgStore::ListSubscriptions(
    const std::string& tenant, const std::string& topic, const std::string& after, int limit) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kListSubscriptions, topic, after, limit));
  return r.Map(ReadSubscription);
}

absl::Status PgStore::DeleteSubscription(const std::string& tenant, const std::string& name) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kDeleteSubscription, name));
  return r.empty() ? SubscriptionNotFound(name) : absl::OkStatus();
}

}  // namespace pgbus::store::postgres
