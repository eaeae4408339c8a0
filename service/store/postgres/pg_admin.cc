// PgStore (service/store/postgres/pg_store.h), in part:
// Replay, stats, dead letters and lookups by correlation id.
#include "service/store/postgres/pg_store.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/common/status_macros.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

absl::Status PgStore::Seek(const std::string& tenant, const std::string& subscription,
                           absl::Time time) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    if (txn.exec_params(sql::kSubscriptionExists, subscription).empty()) {
      return absl::NotFoundError(absl::StrCat("subscription \"", subscription, "\" not found"));
    }
    txn.exec_params(sql::kSeek, subscription, absl::ToUnixMicros(time));
    return absl::OkStatus();
  });
}

absl::StatusOr<StatsRecord> PgStore::GetStats(const std::string& tenant,
                                              const std::string& topic,
                                              const std::string& subscription) {
  StatsRecord out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    if (!subscription.empty()) {
      pqxx::result r = txn.exec_params(sql::kSubscriptionStats, subscription);
      if (r.empty()) {
        return absl::NotFoundError(
            absl::StrCat("subscription \"", subscription, "\" not found"));
      }
      out.messages = r[0][0].as<int64_t>();
      out.pending = r[0][1].as<int64_t>();
      out.in_flight = r[0][2].as<int64_t>();
      out.oldest_unacked_age_seconds = r[0][3].as<double>();
      pqxx::row c = txn.exec_params1(sql::kSubscriptionCounters, subscription);
      out.acked = c[0].as<int64_t>();
      out.dead_lettered = c[1].as<int64_t>();
      out.published = c[2].as<int64_t>();
      return absl::OkStatus();
    }
    if (txn.exec_params(sql::kGetTopic, topic).empty()) {
      return absl::NotFoundError(absl::StrCat("topic \"", topic, "\" not found"));
    }
    out.messages = txn.exec_params(sql::kTopicStats, topic)[0][0].as<int64_t>();
    out.published = txn.exec_params1(sql::kTopicCounters, topic)[0].as<int64_t>();
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<MessageRecord>> PgStore::ListDeadLetters(
    const std::string& tenant, const std::string& subscription, int64_t after_id, int limit) {
  std::vector<MessageRecord> out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection& conn) {
    if (txn.exec_params(sql::kSubscriptionExists, subscription).empty()) {
      return absl::NotFoundError(absl::StrCat("subscription \"", subscription, "\" not found"));
    }
    return ListMetadata(conn, sql::kListDeadLettersName, sql::kListDeadLetters, subscription,
                        after_id, limit, &out);
  }));
  return out;
}

absl::StatusOr<std::vector<PgStore::Republished>> PgStore::RedriveDeadLetters(
    const std::string& tenant, const std::string& subscription, const std::vector<int64_t>& ids,
    int limit) {
  std::vector<Republished> out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    if (txn.exec_params(sql::kSubscriptionExists, subscription).empty()) {
      return absl::NotFoundError(absl::StrCat("subscription \"", subscription, "\" not found"));
    }
    std::string id_list = absl::StrCat("{", absl::StrJoin(ids, ","), "}");
    std::set<TopicKey> topics;
    for (const auto& row : txn.exec_params(sql::kRedriveDeadLetters, subscription, id_list,
                                           limit)) {
      out.push_back(Republished{row[0].as<int64_t>(), row[1].as<std::string>()});
      topics.insert(TopicKey{tenant, row[1].as<std::string>()});
    }
    if (!topics.empty()) {
      txn.exec_params(sql::kNotifyPublish, NotifyPayload(topics));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<MessageRecord>> PgStore::ListMessages(
    const std::string& tenant, const std::string& correlation_id, int64_t after_id,
    int limit) {
  std::vector<MessageRecord> out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base&, Connection& conn) {
    return ListMetadata(conn, sql::kListMessagesName, sql::kListMessages, correlation_id,
                        after_id, limit, &out);
  }));
  return out;
}

}  // namespace pgbus::store::postgres
