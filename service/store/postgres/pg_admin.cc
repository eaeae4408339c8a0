// PgStore (service/store/postgres/pg_store.h), in part:
// Replay, stats, dead letters and lookups by correlation id.
#include "service/store/postgres/pg_store.h"

#include <set>

#include "service/common/status_macros.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

absl::Status PgStore::Seek(const std::string& tenant, const std::string& subscription,
                           absl::Time time) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows exists, tx.Run(sql::kSubscriptionExists, subscription));
  if (exists.empty()) return SubscriptionNotFound(subscription);
  tx.Add(sql::kSeek, subscription, absl::ToUnixMicros(time));
  return tx.Commit();
}

absl::StatusOr<StatsRecord> PgStore::GetStats(const std::string& tenant,
                                              const std::string& topic,
                                              const std::string& subscription) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  StatsRecord out;
  if (!subscription.empty()) {
    tx.Add(sql::kSubscriptionStats, subscription);
    tx.Add(sql::kSubscriptionCounters, subscription);
    ASSIGN_OR_RETURN(std::vector<Rows> r, tx.SendAndCommit());
    if (r[0].empty()) return SubscriptionNotFound(subscription);
    RowReader stats = r[0][0], counters = r[1][0];
    out.messages = stats.Int8();
    out.pending = stats.Int8();
    out.in_flight = stats.Int8();
    out.oldest_unacked_age_seconds = stats.Float8();
    out.acked = counters.Int8();
    out.dead_lettered = counters.Int8();
    out.published = counters.Int8();
    return out;
  }
  tx.Add(sql::kGetTopic, topic);
  tx.Add(sql::kTopicStats, topic);
  tx.Add(sql::kTopicCounters, topic);
  ASSIGN_OR_RETURN(std::vector<Rows> r, tx.SendAndCommit());
  if (r[0].empty()) return TopicNotFound(topic);
  out.messages = r[1][0].Int8();
  out.published = r[2][0].Int8();
  return out;
}

absl::StatusOr<std::vector<MessageRecord>> PgStore::ListDeadLetters(
    const std::string& tenant, const std::string& subscription, int64_t after_id, int limit) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  tx.Add(sql::kSubscriptionExists, subscription);
  tx.Add(sql::kListDeadLetters, subscription, after_id, limit);
  ASSIGN_OR_RETURN(std::vector<Rows> r, tx.SendAndCommit());
  if (r[0].empty()) return SubscriptionNotFound(subscription);
  return ReadListing(r[1]);
}

absl::StatusOr<std::vector<PgStore::Republished>> PgStore::RedriveDeadLetters(
    const std::string& tenant, const std::string& subscription, const std::vector<int64_t>& ids,
    int limit) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows exists, tx.Run(sql::kSubscriptionExists, subscription));
  if (exists.empty()) return SubscriptionNotFound(subscription);
  ArrayBuilder id_array(kInt8);
  for (int64_t id : ids) id_array.Add(EncodeInt8(id));
  ASSIGN_OR_RETURN(Rows taken,
                   tx.Run(sql::kTakeDeadLetters, subscription, std::move(id_array), limit));
  if (taken.empty()) return std::vector<Republished>{};
  ASSIGN_OR_RETURN(std::vector<Republished> out, PublishTaken(tx, taken));
  std::set<TopicKey> topics;
  for (const Republished& m : out) topics.insert(TopicKey{tenant, m.topic});
  if (!topics.empty()) tx.Add(sql::kNotifyPublish, NotifyPayload(topics));
  RETURN_IF_ERROR(tx.Commit());
  return out;
}

absl::StatusOr<std::vector<MessageRecord>> PgStore::ListMessages(
    const std::string& tenant, const std::string& correlation_id, int64_t after_id,
    int limit) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kListMessages, correlation_id, after_id, limit));
  return ReadListing(r);
}

}  // namespace pgbus::store::postgres
