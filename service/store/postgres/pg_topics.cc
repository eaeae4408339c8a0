// PgStore (service/store/postgres/pg_store.h), in part: Topics and subscriptions.
#include "service/store/postgres/pg_store.h"

#include "absl/strings/str_cat.h"
#include "service/common/status_macros.h"
#include "service/common/topic_pattern.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

absl::StatusOr<TopicRecord> PgStore::CreateTopic(const std::string& tenant,
                                                 const TopicRecord& topic) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kCreateTopic, topic.name, ToMs(topic.retention),
                                           topic.max_message_bytes, ToMs(topic.message_ttl),
                                           ToMs(topic.dedup_window)));
  RowReader row = r[0];
  return ReadTopic(row);
}

absl::StatusOr<TopicRecord> PgStore::GetTopic(const std::string& tenant,
                                              const std::string& name) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kGetTopic, name));
  if (r.empty()) return absl::NotFoundError(absl::StrCat("topic \"", name, "\" not found"));
  RowReader row = r[0];
  return ReadTopic(row);
}

absl::StatusOr<std::vector<TopicRecord>> PgStore::ListTopics(const std::string& tenant,
                                                             const std::string& after,
                                                             int limit) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kListTopics, after, limit));
  return r.Map(ReadTopic);
}

absl::Status PgStore::DeleteTopic(const std::string& tenant, const std::string& name) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kDeleteTopic, name));
  if (r.empty()) return absl::NotFoundError(absl::StrCat("topic \"", name, "\" not found"));
  return absl::OkStatus();
}

absl::StatusOr<SubscriptionRecord> PgStore::CreateSubscription(const std::string& tenant,
                                                               const SubscriptionRecord& sub) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  const bool pattern = IsTopicPattern(sub.topic);
  ASSIGN_OR_RETURN(
      Rows r, pattern ? tx.RunAndCommit(sql::kCreatePatternSubscription, sub.name, sub.topic,
                                        sub.filter, ToMs(sub.ack_deadline),
                                        sub.max_delivery_attempts, sub.dead_letter_topic,
                                        ToMs(sub.min_backoff), ToMs(sub.max_backoff),
                                        sub.filter_path, TopicPatternRegex(sub.topic))
                      : tx.RunAndCommit(sql::kCreateSubscription, sub.name, sub.topic,
                                        sub.filter, ToMs(sub.ack_deadline),
                                        sub.max_delivery_attempts, sub.dead_letter_topic,
                                        ToMs(sub.min_backoff), ToMs(sub.max_backoff),
                                        sub.filter_path));
  if (r.empty()) {
    return absl::NotFoundError(absl::StrCat("topic \"", sub.topic, "\" not found"));
  }
  RowReader row = r[0];
  return ReadSubscription(row);
}

absl::StatusOr<SubscriptionRecord> PgStore::GetSubscription(const std::string& tenant,
                                                            const std::string& name) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kGetSubscription, name));
  if (r.empty()) {
    return absl::NotFoundError(absl::StrCat("subscription \"", name, "\" not found"));
  }
  RowReader row = r[0];
  return ReadSubscription(row);
}

absl::StatusOr<std::vector<SubscriptionRecord>> PgStore::ListSubscriptions(
    const std::string& tenant, const std::string& topic, const std::string& after, int limit) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kListSubscriptions, topic, after, limit));
  return r.Map(ReadSubscription);
}

absl::Status PgStore::DeleteSubscription(const std::string& tenant, const std::string& name) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows r, tx.RunAndCommit(sql::kDeleteSubscription, name));
  if (r.empty()) {
    return absl::NotFoundError(absl::StrCat("subscription \"", name, "\" not found"));
  }
  return absl::OkStatus();
}

}  // namespace pgbus::store::postgres
