// PgStore (service/store/postgres/pg_store.h), in part:
// Deliveries and leases: claims, acks, deadline changes, give-backs,
// dead-lettering.
#include "service/store/postgres/pg_store.h"

#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "service/common/status_macros.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

namespace {

// The keys of lease statements as parallel arrays ($2, $3, $4 of
// lock_leases.sql and ack.sql).
struct LeaseArrays {
  explicit LeaseArrays(const std::vector<LeaseKey>& keys) {
    for (const LeaseKey& k : keys) {
      ids.Add(EncodeInt8(k.message_id));
      attempts.Add(EncodeInt4(k.attempt));
      leases.Add(EncodeInt8(k.lease));
    }
  }
  ArrayBuilder ids{kInt8}, attempts{kInt4}, leases{kInt8};
};

// Which of `keys` the rows name: each row's key (message id, attempt,
// lease) from column `first` on. Up to 10000 keys a call: matched through a
// set, not keys x rows.
std::vector<bool> Matched(const std::vector<LeaseKey>& keys, const Rows& rows, int first) {
  std::set<std::tuple<int64_t, int32_t, int64_t>> hits;
  for (int r = 0; r < rows.size(); ++r) {
    RowReader row = rows[r];
    for (int c = 0; c < first; ++c) row.Skip();
    const int64_t id = row.Int8();
    const int32_t attempt = row.Int4();
    hits.emplace(id, attempt, row.Int8());
  }
  std::vector<bool> ok(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    ok[i] = hits.count({keys[i].message_id, keys[i].attempt, keys[i].lease}) > 0;
  }
  return ok;
}

}  // namespace

absl::StatusOr<std::vector<Delivery>> PgStore::Claim(const std::string& tenant,
                                                     const std::string& subscription,
                                                     int64_t lease, int max_messages,
                                                     int64_t max_bytes,
                                                     bool first_may_exceed,
                                                     absl::Duration ack_deadline) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant, /*async_commit=*/true);
  // One round trip: expired leases, ended backoffs and due deliver_at times
  // become claimable first (the claim itself reads only ready rows); the
  // claim; whether the subscription exists (an empty claim of a deleted one
  // ends the stream); the commit. The claim's rows, the large result, come
  // last but for two small statements.
  tx.Add(sql::kReleaseDue, subscription, max_messages);
  const size_t claim = tx.Add(sql::kClaim, subscription, max_messages, max_bytes, lease,
                              ToMs(ack_deadline), first_may_exceed);
  const size_t exists = tx.Add(sql::kSubscriptionExists, subscription);
  ASSIGN_OR_RETURN(std::vector<Rows> res, tx.SendAndCommit());
  const Rows& claimed = res[claim];
  if (claimed.empty() && res[exists].empty()) return SubscriptionNotFound(subscription);
  std::vector<Delivery> out;
  out.reserve(claimed.size());
  for (int i = 0; i < claimed.size(); ++i) {
    RowReader row = claimed[i];
    Delivery d;
    d.message = ReadMessage(row);
    if (auto payload = row.Maybe(&RowReader::Bytes)) d.message.payload = *std::move(payload);
    d.attempt = row.Int4();
    d.lease = lease;
    d.lease_expiry = row.Timestamp();
    out.push_back(std::move(d));
  }
  return out;
}

absl::StatusOr<std::vector<bool>> PgStore::ApplyToLeases(
    const char* statement, const std::string& tenant, const std::string& subscription,
    const std::vector<LeaseKey>& keys, std::vector<Value> params,
    const TopicKey* announce) {
  LeaseArrays arrays(keys);
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  // Two round trips: the rows that hold the leases, locked (with BEGIN and
  // whether the subscription exists); then the change and its
  // announcement, with the COMMIT.
  tx.Add(sql::kLockLeases, subscription, std::move(arrays.ids), std::move(arrays.attempts),
         std::move(arrays.leases));
  tx.Add(sql::kSubscriptionExists, subscription);
  ASSIGN_OR_RETURN(std::vector<Rows> res, tx.Send());
  const Rows& locked = res[0];
  if (locked.empty() && res[1].empty()) return SubscriptionNotFound(subscription);
  if (locked.empty()) return std::vector<bool>(keys.size(), false);  // rolled back: nothing changed
  // A key given twice locks its row twice; the row is changed once.
  std::set<std::string> seen;
  ArrayBuilder rows(kTid);
  for (int r = 0; r < locked.size(); ++r) {
    std::string row_id = locked[r].RowId();
    if (seen.insert(row_id).second) rows.Add(row_id);
  }
  params.insert(params.begin(), Bind(std::move(rows)));
  tx.AddValues(statement, std::move(params));
  if (announce) tx.Add(sql::kNotifyPublish, NotifyPayload({*announce}));
  RETURN_IF_ERROR(tx.Commit());
  return Matched(keys, locked, /*first=*/1);
}

absl::StatusOr<std::vector<bool>> PgStore::Ack(const std::string& tenant,
                                               const std::string& subscription,
                                               const std::vector<LeaseKey>& keys) {
  ASSIGN_OR_RETURN(std::vector<bool> ok,
                   AckKeys(tenant, subscription, keys, /*lock_first=*/false));
  // A key not acked lost its lease, or its row was changed by another
  // transaction (a lease extension, say) while kAck waited for it, which
  // kAck cannot see (see ack.sql). Those keys are tried once more with the
  // rows locked first: that acks the second kind and confirms the first.
  std::vector<LeaseKey> again;
  std::vector<size_t> at;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!ok[i]) {
      again.push_back(keys[i]);
      at.push_back(i);
    }
  }
  if (again.empty()) return ok;
  absl::StatusOr<std::vector<bool>> retried =
      AckKeys(tenant, subscription, again, /*lock_first=*/true);
  if (absl::IsNotFound(retried.status())) return ok;  // deleted meanwhile: nothing more to ack
  if (!retried.ok()) return retried.status();
  for (size_t j = 0; j < at.size(); ++j) ok[at[j]] = (*retried)[j];
  return ok;
}

absl::StatusOr<std::vector<bool>> PgStore::AckKeys(const std::string& tenant,
                                                   const std::string& subscription,
                                                   const std::vector<LeaseKey>& keys,
                                                   bool lock_first) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  if (lock_first) {
    LeaseArrays locked(keys);
    tx.Add(sql::kLockLeases, subscription, std::move(locked.ids), std::move(locked.attempts),
           std::move(locked.leases));
  }
  LeaseArrays arrays(keys);
  const size_t acked = tx.Add(sql::kAck, subscription, std::move(arrays.ids),
                              std::move(arrays.attempts), std::move(arrays.leases));
  const size_t exists = tx.Add(sql::kSubscriptionExists, subscription);
  ASSIGN_OR_RETURN(std::vector<Rows> res, tx.SendAndCommit());
  if (res[acked].empty() && res[exists].empty()) return SubscriptionNotFound(subscription);
  return Matched(keys, res[acked], /*first=*/0);
}

absl::StatusOr<std::vector<bool>> PgStore::ModifyAckDeadline(const std::string& tenant,
                                                             const std::string& subscription,
                                                             const std::vector<LeaseKey>& keys,
                                                             absl::Duration deadline,
                                                             const std::string& reason) {
  if (deadline <= absl::ZeroDuration()) {
    return ApplyToLeases(sql::kNack, tenant, subscription, keys,
                         {Bind(subscription), Bind(reason)});
  }
  return ApplyToLeases(sql::kExtendLease, tenant, subscription, keys, {Bind(ToMs(deadline))});
}

absl::StatusOr<std::vector<std::optional<absl::Time>>> PgStore::HeldLeases(
    const std::string& tenant, const std::string& subscription,
    const std::vector<LeaseKey>& keys) {
  std::vector<std::optional<absl::Time>> held(keys.size());
  if (keys.empty()) return held;
  LeaseArrays arrays(keys);
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant, /*async_commit=*/true);
  tx.Add(sql::kHeldLeases, subscription, std::move(arrays.ids), std::move(arrays.attempts),
         std::move(arrays.leases));
  ASSIGN_OR_RETURN(std::vector<Rows> res, tx.SendAndCommit());
  std::map<std::tuple<int64_t, int32_t, int64_t>, absl::Time> deadlines;
  for (int r = 0; r < res[0].size(); ++r) {
    RowReader row = res[0][r];
    const int64_t id = row.Int8();
    const int32_t attempt = row.Int4();
    const int64_t lease = row.Int8();
    deadlines[{id, attempt, lease}] = row.Timestamp();
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = deadlines.find({keys[i].message_id, keys[i].attempt, keys[i].lease});
    if (it != deadlines.end()) held[i] = it->second;
  }
  return held;
}

absl::StatusOr<std::vector<bool>> PgStore::ReleaseLeases(const std::string& tenant,
                                                         const std::string& subscription,
                                                         const std::string& topic,
                                                         const std::vector<LeaseKey>& keys) {
  const TopicKey announce{tenant, topic};
  return ApplyToLeases(sql::kReleaseLeases, tenant, subscription, keys, {Bind(subscription)},
                       &announce);
}

absl::StatusOr<Store::DeadLettered> PgStore::DeadLetter(const std::string& tenant,
                                                        const std::string& subscription,
                                                        int limit) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows taken, tx.Run(sql::kTakeExhausted, subscription, limit));
  if (taken.empty()) return DeadLettered{};  // rolled back: nothing was changed
  ASSIGN_OR_RETURN(std::vector<Republished> moved_to, PublishTaken(tx, taken));
  const std::string topic = moved_to[0].topic;
  const int64_t moved = moved_to.size();
  tx.Add(sql::kCountSettled, subscription, int64_t{0}, moved);
  // Wakes the dead-letter topic's subscribers on every replica, once.
  tx.Add(sql::kNotifyPublish, NotifyPayload({TopicKey{tenant, topic}}));
  RETURN_IF_ERROR(tx.Commit());
  return DeadLettered{topic, moved};
}

}  // namespace pgbus::store::postgres
