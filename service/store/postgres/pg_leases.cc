// PgStore (service/store/postgres/pg_store.h), in part:
// Deliveries and leases: claims, acks, deadline changes, give-backs,
// dead-lettering.
#include "service/store/postgres/pg_store.h"

#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "service/common/status_macros.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

absl::StatusOr<std::vector<Delivery>> PgStore::Claim(const std::string& tenant,
                                                     const std::string& subscription,
                                                     int64_t lease, int max_messages,
                                                     int64_t max_bytes,
                                                     bool first_may_exceed,
                                                     absl::Duration ack_deadline) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  RETURN_IF_ERROR(
      conn->PrepareRaw(sql::kClaimName, sql::kClaim, {kText, kInt4, kInt8, kInt8, kInt8, kBool}));
  RETURN_IF_ERROR(conn->PrepareRaw(sql::kReleaseDueName, sql::kReleaseDue, {kText, kInt4}));
  RETURN_IF_ERROR(
      conn->PrepareRaw(sql::kSubscriptionExistsName, sql::kSubscriptionExists, {kText}));
  const std::string limit_bin = EncodeInt4(max_messages), budget_bin = EncodeInt8(max_bytes),
                    lease_bin = EncodeInt8(lease), deadline_bin = EncodeInt8(ToMs(ack_deadline)),
                    first_bin = EncodeBool(first_may_exceed);
  TenantTransaction tx(*conn);  // rolls back unless committed
  RETURN_IF_ERROR(tx.Start(tenant, /*async_commit=*/true));
  // One round trip: expired leases, ended backoffs and due deliver_at times
  // become claimable first (the claim itself reads only ready rows); the
  // claim; whether the subscription exists (an empty claim of a deleted one
  // ends the stream); the commit. The claim's rows, the large result, come
  // last but for two small statements.
  ASSIGN_OR_RETURN(
      std::vector<Result> res,
      tx.Exec({Statement{sql::kReleaseDueName,
                         {Param::Text(subscription), Param::Binary(limit_bin)}},
               Statement{sql::kClaimName,
                         {Param::Text(subscription), Param::Binary(limit_bin),
                          Param::Binary(budget_bin), Param::Binary(lease_bin),
                          Param::Binary(deadline_bin), Param::Binary(first_bin)}},
               Statement{sql::kSubscriptionExistsName, {Param::Text(subscription)}}},
              /*commit=*/true));
  const PGresult* claimed = res[1].get();
  const int n = PQntuples(claimed);
  if (n == 0 && PQntuples(res[2].get()) == 0) {
    return absl::NotFoundError(absl::StrCat("subscription \"", subscription, "\" not found"));
  }
  std::vector<Delivery> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    BinaryRow row(claimed, i);
    Delivery d;
    d.message = ReadMessage(row);
    if (!row.IsNull(14)) d.message.payload = row.Bytes(14);
    d.attempt = row.Int4(15);
    d.lease = lease;
    d.lease_expiry = row.Timestamp(16);
    out.push_back(std::move(d));
  }
  return out;
}

absl::StatusOr<std::vector<bool>> PgStore::ApplyToLeases(
    const char* name, const char* sql, const std::string& tenant, const std::string& subscription,
    const std::vector<LeaseKey>& keys, const Param* param5, Oid param5_type, bool count_acked,
    const TopicKey* announce) {
  std::vector<bool> ok(keys.size(), false);
  ArrayBuilder ids(kInt8), attempts(kInt4), leases(kInt8);
  for (const LeaseKey& k : keys) {
    ids.Add(EncodeInt8(k.message_id));
    attempts.Add(EncodeInt4(k.attempt));
    leases.Add(EncodeInt8(k.lease));
  }
  const std::string ids_arr = ids.Finish(), attempts_arr = attempts.Finish(),
                    leases_arr = leases.Finish();
  std::vector<Oid> types = {kText, kInt8Array, kInt4Array, kInt8Array};
  std::vector<Param> params = {Param::Text(subscription), Param::Binary(ids_arr),
                               Param::Binary(attempts_arr), Param::Binary(leases_arr)};
  if (param5) {
    types.push_back(param5_type);
    params.push_back(*param5);
  }
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  RETURN_IF_ERROR(conn->PrepareRaw(name, sql, types));
  RETURN_IF_ERROR(
      conn->PrepareRaw(sql::kSubscriptionExistsName, sql::kSubscriptionExists, {kText}));
  RETURN_IF_ERROR(conn->PrepareRaw(sql::kCountSettledName, sql::kCountSettled,
                                   {kText, kInt8, kInt8}));
  RETURN_IF_ERROR(conn->PrepareRaw(sql::kNotifyPublishName, sql::kNotifyPublish, {kText}));
  TenantTransaction tx(*conn);  // rolls back unless committed
  RETURN_IF_ERROR(tx.Start(tenant, /*async_commit=*/false));
  // Two round trips: the change (with BEGIN and whether the subscription
  // exists), then its accounting and announcement with the COMMIT.
  ASSIGN_OR_RETURN(std::vector<Result> res,
                   tx.Exec({Statement{name, params},
                            Statement{sql::kSubscriptionExistsName, {Param::Text(subscription)}}}));
  const int rows = PQntuples(res[0].get());
  if (rows == 0 && PQntuples(res[1].get()) == 0) {
    return absl::NotFoundError(absl::StrCat("subscription \"", subscription, "\" not found"));
  }
  // Up to 10000 ids a call: match through a set, not ids x rows.
  std::set<std::tuple<int64_t, int32_t, int64_t>> hits;
  for (int r = 0; r < rows; ++r) {
    BinaryRow row(res[0].get(), r);
    hits.emplace(row.Int8(0), row.Int4(1), row.Int8(2));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    ok[i] = hits.count({keys[i].message_id, keys[i].attempt, keys[i].lease}) > 0;
  }
  const std::string count_bin = EncodeInt8(rows), zero_bin = EncodeInt8(0);
  const std::string announcement = announce ? NotifyPayload({*announce}) : std::string();
  if (count_acked && rows > 0) {
    tx.Queue(Statement{sql::kCountSettledName, {Param::Text(subscription),
                                                Param::Binary(count_bin), Param::Binary(zero_bin)}});
  }
  if (announce && rows > 0) {
    tx.Queue(Statement{sql::kNotifyPublishName, {Param::Text(announcement)}});
  }
  RETURN_IF_ERROR(tx.Commit());
  return ok;
}

absl::StatusOr<std::vector<bool>> PgStore::Ack(const std::string& tenant,
                                               const std::string& subscription,
                                               const std::vector<LeaseKey>& keys) {
  return ApplyToLeases(sql::kAckName, sql::kAck, tenant, subscription, keys, nullptr, 0,
                       /*count_acked=*/true);
}

absl::StatusOr<std::vector<bool>> PgStore::ModifyAckDeadline(const std::string& tenant,
                                                             const std::string& subscription,
                                                             const std::vector<LeaseKey>& keys,
                                                             absl::Duration deadline,
                                                             const std::string& reason) {
  if (deadline <= absl::ZeroDuration()) {
    Param why = Param::Text(reason);
    return ApplyToLeases(sql::kNackName, sql::kNack, tenant, subscription, keys, &why, kText);
  }
  const std::string ms = EncodeInt8(ToMs(deadline));
  Param p = Param::Binary(ms);
  return ApplyToLeases(sql::kExtendLeaseName, sql::kExtendLease, tenant, subscription, keys, &p,
                       kInt8);
}

absl::StatusOr<std::vector<bool>> PgStore::ReleaseLeases(const std::string& tenant,
                                                         const std::string& subscription,
                                                         const std::string& topic,
                                                         const std::vector<LeaseKey>& keys) {
  const TopicKey announce{tenant, topic};
  return ApplyToLeases(sql::kReleaseLeasesName, sql::kReleaseLeases, tenant, subscription, keys,
                       nullptr, 0, /*count_acked=*/false, &announce);
}

absl::StatusOr<Store::DeadLettered> PgStore::DeadLetter(const std::string& tenant,
                                                        const std::string& subscription,
                                                        int limit) {
  DeadLettered out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    pqxx::result r = txn.exec_params(sql::kDeadLetter, subscription, limit);
    if (r.empty()) return absl::OkStatus();
    const std::string topic = r[0][0].as<std::string>();
    out = DeadLettered{topic, static_cast<int64_t>(r.size())};
    txn.exec_params(sql::kCountSettled, subscription, 0, static_cast<int64_t>(r.size()));
    // Wakes the dead-letter topic's subscribers on every replica, once.
    txn.exec_params(sql::kNotifyPublish, absl::StrCat(tenant, "\t", topic, "\n"));
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace pgbus::store::postgres
