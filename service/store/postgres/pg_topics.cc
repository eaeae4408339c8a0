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
  TopicRecord out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    pqxx::result r = txn.exec_params(sql::kCreateTopic, topic.name, ToMs(topic.retention),
                                     topic.max_message_bytes, ToMs(topic.message_ttl),
                                     ToMs(topic.dedup_window));
    out = ReadTopic(r[0]);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<TopicRecord> PgStore::GetTopic(const std::string& tenant,
                                              const std::string& name) {
  TopicRecord out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    pqxx::result r = txn.exec_params(sql::kGetTopic, name);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("topic \"", name, "\" not found"));
    out = ReadTopic(r[0]);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<TopicRecord>> PgStore::ListTopics(const std::string& tenant,
                                                             const std::string& after,
                                                             int limit) {
  std::vector<TopicRecord> out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    for (const auto& row : txn.exec_params(sql::kListTopics, after, limit)) {
      out.push_back(ReadTopic(row));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PgStore::DeleteTopic(const std::string& tenant, const std::string& name) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    if (txn.exec_params(sql::kDeleteTopic, name).empty()) {
      return absl::NotFoundError(absl::StrCat("topic \"", name, "\" not found"));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<SubscriptionRecord> PgStore::CreateSubscription(const std::string& tenant,
                                                               const SubscriptionRecord& sub) {
  SubscriptionRecord out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    const bool pattern = IsTopicPattern(sub.topic);
    pqxx::result r =
        pattern ? txn.exec_params(sql::kCreatePatternSubscription, sub.name, sub.topic,
                                  sub.filter, ToMs(sub.ack_deadline), sub.max_delivery_attempts,
                                  sub.dead_letter_topic, ToMs(sub.min_backoff),
                                  ToMs(sub.max_backoff), sub.filter_path,
                                  TopicPatternRegex(sub.topic))
                : txn.exec_params(sql::kCreateSubscription, sub.name, sub.topic, sub.filter,
                                  ToMs(sub.ack_deadline), sub.max_delivery_attempts,
                                  sub.dead_letter_topic, ToMs(sub.min_backoff),
                                  ToMs(sub.max_backoff), sub.filter_path);
    if (r.empty()) {
      return absl::NotFoundError(absl::StrCat("topic \"", sub.topic, "\" not found"));
    }
    out = ReadSubscription(r[0]);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<SubscriptionRecord> PgStore::GetSubscription(const std::string& tenant,
                                                            const std::string& name) {
  SubscriptionRecord out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    pqxx::result r = txn.exec_params(sql::kGetSubscription, name);
    if (r.empty()) {
      return absl::NotFoundError(absl::StrCat("subscription \"", name, "\" not found"));
    }
    out = ReadSubscription(r[0]);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<SubscriptionRecord>> PgStore::ListSubscriptions(
    const std::string& tenant, const std::string& topic, const std::string& after, int limit) {
  std::vector<SubscriptionRecord> out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    for (const auto& row : txn.exec_params(sql::kListSubscriptions, topic, after, limit)) {
      out.push_back(ReadSubscription(row));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PgStore::DeleteSubscription(const std::string& tenant, const std::string& name) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    if (txn.exec_params(sql::kDeleteSubscription, name).empty()) {
      return absl::NotFoundError(absl::StrCat("subscription \"", name, "\" not found"));
    }
    return absl::OkStatus();
  });
}

}  // namespace pgbus::store::postgres
