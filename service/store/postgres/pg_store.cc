#include "service/store/postgres/pg_store.h"

#include <chrono>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/escaping.h"
#include "service/common/sha256.h"
#include "service/common/status_macros.h"
#include "service/common/topic_pattern.h"
#include "service/obs/log.h"
#include "service/store/postgres/migrator.h"
#include "service/store/postgres/sql.h"
#include "service/store/postgres/tenant_admin.h"

namespace pgbus::store::postgres {
namespace {

// NOTIFY payloads are capped near 8000 bytes; past this, announce "all".
constexpr size_t kMaxNotifyPayload = 7000;

int64_t ToMs(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

// What a pgbus_publish notification says: "tenant\ttopic\n" per topic that
// has new messages (ListenLoop's PublishReceiver reads it), or "" for
// "any topic" when that would not fit.
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

// Runs a listing statement ($1 text key, $2 after id, $3 limit; message
// columns 0..13) and appends its rows, metadata only.
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

}  // namespace

PgStore::PgStore(const PgStoreOptions& options)
    : options_(options),
      pool_(options.dsn, options.pool_size, options.statement_timeout_ms) {}

PgStore::~PgStore() { StopListening(); }

absl::StatusOr<std::unique_ptr<PgStore>> PgStore::Open(const PgStoreOptions& options) {
  std::unique_ptr<PgStore> store(new PgStore(options));
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, store->pool_.Acquire());
  int version = 0;
  try {
    pqxx::nontransaction q(*conn);
    pqxx::result r = q.exec(
        "SELECT coalesce(max(version), 0) FROM pgbus.schema_migrations");
    version = r[0][0].as<int>();
  } catch (const pqxx::undefined_table&) {
    return absl::FailedPreconditionError(
        "the pgbus schema is missing: run `pgbusd migrate` with the owner role first");
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
  if (version < LatestVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the database schema is at version ", version, ", this pgbusd needs ",
        LatestVersion(), ": run `pgbusd migrate` first"));
  }
  return store;
}

absl::StatusOr<std::optional<ApiKeyRecord>> PgStore::LookupApiKey(const std::string& key_id) {
  std::optional<ApiKeyRecord> out;
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  try {
    pqxx::work txn(*conn);  // no tenant yet: the function returns one key
    pqxx::result r = txn.exec_params(sql::kLookupApiKey, key_id);
    txn.commit();
    if (!r.empty()) {
      ApiKeyRecord k;
      k.key_id = key_id;
      k.tenant = r[0][0].as<std::string>();
      k.secret_sha256 = absl::HexStringToBytes(r[0][1].as<std::string>());
      k.scopes = absl::StrSplit(r[0][2].as<std::string>(), ',');
      k.topics = absl::StrSplit(r[0][3].as<std::string>(), ',');
      k.revoked = r[0][4].as<bool>();
      out = std::move(k);
    }
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
  return out;
}

absl::StatusOr<std::optional<TenantRecord>> PgStore::LookupTenant(const std::string& tenant) {
  std::optional<TenantRecord> out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    pqxx::result r = txn.exec(sql::kLookupTenant);
    if (!r.empty()) out = ReadTenant(r[0]);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PgStore::EnsureTenant(const std::string& tenant) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    txn.exec_params(sql::kEnsureTenant, tenant);
    return absl::OkStatus();
  });
}

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

std::vector<absl::StatusOr<std::vector<int64_t>>> PgStore::PublishBatch(
    const std::vector<const PublishItem*>& items) {
  std::vector<absl::StatusOr<std::vector<int64_t>>> results;
  absl::Status st = PublishTransaction(items, &results);
  if (st.ok()) return results;
  if (items.size() == 1) return {st};
  // One item may have broken the shared transaction (a statement timeout,
  // say): give each its own so the others are not failed with it.
  results.clear();
  for (const PublishItem* item : items) {
    std::vector<absl::StatusOr<std::vector<int64_t>>> one;
    absl::Status item_st = PublishTransaction({item}, &one);
    results.push_back(item_st.ok() ? std::move(one[0]) : item_st);
  }
  return results;
}

absl::Status PgStore::PublishTransaction(
    const std::vector<const PublishItem*>& items,
    std::vector<absl::StatusOr<std::vector<int64_t>>>* results) {
  results->assign(items.size(), absl::InternalError("not published"));
  // Items of one tenant share one insert; set_config(..., true) switches
  // the tenant between groups, and RLS checks each group's rows against it.
  std::map<std::string, std::vector<size_t>> by_tenant;
  for (size_t i = 0; i < items.size(); ++i) by_tenant[items[i]->tenant].push_back(i);

  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  try {
    RETURN_IF_ERROR(conn->PrepareRaw(
        sql::kInsertMessagesName, sql::kInsertMessages,
        {kTextArray, kInt8Array, kInt8Array, kInt4Array, kTextArray, kTextArray, kTextArray,
         kInt8Array, kByteaArray, kByteaArray, kTextArray, kTextArray, kInt8Array,
         kInt8Array}));
    RETURN_IF_ERROR(conn->PrepareRaw(sql::kNotifyPublishName, sql::kNotifyPublish, {kText}));
    // BEGIN goes with the first statement, and the last tenant's insert
    // with the notification and the COMMIT: a batch without idempotency keys
    // takes one round trip.
    TenantTransaction tx(*conn);  // rolls back unless committed
    RETURN_IF_ERROR(tx.Start(by_tenant.begin()->first, /*async_commit=*/false));
    std::set<TopicKey> touched;
    for (const auto& [tenant, indexes] : by_tenant) {
      const bool last = tenant == by_tenant.rbegin()->first;
      if (tenant != by_tenant.begin()->first) {
        tx.Queue(Statement{sql::kSetTenantName, {Param::Text(tenant)}});
      }
      // Idempotency keys first: a key already claimed on the topic within
      // its window maps to the original message, and nothing new is stored.
      using Key = std::pair<std::string, std::string>;  // topic, key
      std::map<Key, int64_t> original;
      {
        std::set<Key> wanted;
        for (size_t i : indexes) {
          for (const NewMessage& m : items[i]->messages) {
            if (!m.idempotency_key.empty()) wanted.insert({items[i]->topic, m.idempotency_key});
          }
        }
        if (!wanted.empty()) {
          ArrayBuilder key_topics(kText), key_names(kText);
          for (const auto& [t, k] : wanted) {
            key_topics.Add(t);
            key_names.Add(k);
          }
          std::string topics_arr = key_topics.Finish(), keys_arr = key_names.Finish();
          RETURN_IF_ERROR(conn->PrepareRaw(sql::kClaimIdempotencyKeysName,
                                           sql::kClaimIdempotencyKeys, {kTextArray, kTextArray}));
          ASSIGN_OR_RETURN(std::vector<Result> claimed,
                           tx.Exec({Statement{sql::kClaimIdempotencyKeysName,
                                              {Param::Binary(topics_arr),
                                               Param::Binary(keys_arr)}}}));
          std::set<Key> fresh;
          for (int r = 0; r < PQntuples(claimed[0].get()); ++r) {
            BinaryRow row(claimed[0].get(), r);
            fresh.insert({row.Bytes(0), row.Bytes(1)});
          }
          if (fresh.size() < wanted.size()) {
            RETURN_IF_ERROR(conn->PrepareRaw(sql::kIdempotentMessagesName,
                                             sql::kIdempotentMessages, {kTextArray, kTextArray}));
            ASSIGN_OR_RETURN(std::vector<Result> dups,
                             tx.Exec({Statement{sql::kIdempotentMessagesName,
                                                {Param::Binary(topics_arr),
                                                 Param::Binary(keys_arr)}}}));
            for (int r = 0; r < PQntuples(dups[0].get()); ++r) {
              BinaryRow row(dups[0].get(), r);
              Key key{row.Bytes(0), row.Bytes(1)};
              if (!fresh.count(key)) original[key] = row.Int8(2);
            }
          }
        }
      }
      // What each message becomes: inserted, the original of its key, or
      // (a repeat within this batch) the message its first use inserts.
      enum class Fate { kInsert, kOriginal, kRepeat };
      std::vector<std::vector<Fate>> fate(items.size());
      std::set<Key> inserted_keys;
      ArrayBuilder topic(kText), ttl(kInt8), deliver(kInt8), priority(kInt4), correlation(kText),
          ordering(kText), idempotency(kText), size(kInt8), sha(kBytea), payload(kBytea),
          attr_key(kText), attr_value(kText), attr_count(kInt8), payload_id(kInt8);
      auto text_or_null = [](ArrayBuilder& b, const std::string& v) {
        if (v.empty()) {
          b.AddNull();
        } else {
          b.Add(v);
        }
      };
      size_t count = 0, bytes = 0;
      for (size_t i : indexes) {
        for (const NewMessage& m : items[i]->messages) {
          ++count;
          bytes += m.payload.size();
        }
      }
      payload.Reserve(count, bytes);
      for (size_t i : indexes) {
        for (const NewMessage& m : items[i]->messages) {
          if (!m.idempotency_key.empty()) {
            Key key{items[i]->topic, m.idempotency_key};
            if (original.count(key)) {
              fate[i].push_back(Fate::kOriginal);
              continue;
            }
            if (!inserted_keys.insert(key).second) {
              fate[i].push_back(Fate::kRepeat);
              continue;
            }
          }
          fate[i].push_back(Fate::kInsert);
          topic.Add(items[i]->topic);
          if (m.ttl) {
            ttl.Add(EncodeInt8(ToMs(*m.ttl)));
          } else {
            ttl.AddNull();
          }
          if (m.deliver_at) {
            deliver.Add(EncodeInt8(absl::ToUnixMicros(*m.deliver_at)));
          } else {
            deliver.AddNull();
          }
          priority.Add(EncodeInt4(m.priority));
          text_or_null(correlation, m.correlation_id);
          text_or_null(ordering, m.ordering_key);
          text_or_null(idempotency, m.idempotency_key);
          size.Add(EncodeInt8(static_cast<int64_t>(m.payload.size())));
          sha.Add(m.sha256);
          payload.Add(m.payload);
          if (m.payload_id) {
            payload_id.Add(EncodeInt8(m.payload_id));
          } else {
            payload_id.AddNull();
          }
          for (const auto& [k, v] : m.attributes) {
            attr_key.Add(k);
            attr_value.Add(v);
          }
          attr_count.Add(EncodeInt8(static_cast<int64_t>(m.attributes.size())));
        }
      }
      std::vector<std::string> arrays = {
          topic.Finish(),       ttl.Finish(),      deliver.Finish(),     priority.Finish(),
          correlation.Finish(), ordering.Finish(), idempotency.Finish(), size.Finish(),
          sha.Finish(),         payload.Finish(),  attr_key.Finish(),    attr_value.Finish(),
          attr_count.Finish(),  payload_id.Finish()};
      std::vector<Param> params;
      for (const auto& a : arrays) params.push_back(Param::Binary(a));
      std::vector<Statement> statements = {Statement{sql::kInsertMessagesName, params}};
      std::string announcement;
      if (last) {
        // One notification per transaction, however many messages: NOTIFY
        // serialises commits cluster-wide (PreCommit_Notify). Sent before
        // the insert's rows are seen, it may name a topic that turns out
        // not to exist: a wake-up for nobody.
        std::set<TopicKey> announce = touched;
        for (size_t i : indexes) {
          for (Fate f : fate[i]) {
            if (f == Fate::kInsert) announce.insert(TopicKey{tenant, items[i]->topic});
          }
        }
        if (!announce.empty()) {
          announcement = NotifyPayload(announce);
          statements.push_back(Statement{sql::kNotifyPublishName, {Param::Text(announcement)}});
        }
      }
      ASSIGN_OR_RETURN(std::vector<Result> done, tx.Exec(std::move(statements), last));
      const PGresult* res = done[0].get();
      // Rows come back in publish order; an item whose topic does not exist
      // has none.
      int rows = PQntuples(res);
      std::set<std::string> found;
      for (int r = 0; r < rows; ++r) found.insert(BinaryRow(res, r).Bytes(1));
      int row = 0;
      std::map<Key, int64_t> assigned;  // keys inserted by this batch
      for (size_t i : indexes) {
        const PublishItem& item = *items[i];
        bool inserts = false;
        for (Fate f : fate[i]) inserts |= f == Fate::kInsert;
        if (inserts && !found.count(item.topic)) {
          (*results)[i] = absl::NotFoundError(absl::StrCat("topic \"", item.topic, "\" not found"));
          continue;
        }
        std::vector<int64_t> ids;
        ids.reserve(item.messages.size());
        bool out_of_order = false;
        for (size_t k = 0; k < item.messages.size() && !out_of_order; ++k) {
          const NewMessage& m = item.messages[k];
          Key key{item.topic, m.idempotency_key};
          if (fate[i][k] == Fate::kOriginal) {
            ids.push_back(original[key]);
            continue;
          }
          if (fate[i][k] == Fate::kRepeat) {
            ids.push_back(assigned.at(key));
            continue;
          }
          BinaryRow r(res, row);
          if (row >= rows || r.Bytes(1) != item.topic) {
            out_of_order = true;
            break;
          }
          ids.push_back(r.Int8(0));
          if (!m.idempotency_key.empty()) assigned[key] = r.Int8(0);
          ++row;
        }
        if (out_of_order) {
          // Before the commit this rolls everything back. After it, the
          // batch must not fail as a whole: PublishBatch would then store
          // each item again.
          if (!last) return absl::InternalError("publish returned rows out of order");
          (*results)[i] = absl::InternalError(
              "publish stored the messages but returned rows out of order: their ids are unknown");
          continue;
        }
        (*results)[i] = std::move(ids);
        if (inserts) touched.insert(TopicKey{tenant, item.topic});
      }
    }
    return absl::OkStatus();  // committed with the last tenant's insert
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
}

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

absl::StatusOr<RetrieveResult> PgStore::Retrieve(const std::string& tenant, int64_t id,
                                                 int64_t offset, int64_t length) {
  RetrieveResult out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base&, Connection& conn) {
    RETURN_IF_ERROR(conn.PrepareRaw(sql::kRetrieveName, sql::kRetrieve, {kInt8}));
    std::string id_bin = EncodeInt8(id);
    ASSIGN_OR_RETURN(Result res, ExecRaw(conn, sql::kRetrieveName, {Param::Binary(id_bin)}));
    if (PQntuples(res.get()) == 0) {
      return absl::NotFoundError(absl::StrCat("message ", id, " not found (or expired)"));
    }
    BinaryRow row(res.get(), 0);
    out.message = ReadMessage(row);
    const int64_t size = out.message.size;
    if (offset > size) {
      return absl::OutOfRangeError(
          absl::StrCat("offset ", offset, " is past the payload's end (", size, " bytes)"));
    }
    out.offset = offset;
    const int64_t n = std::min(length, size - offset);
    if (row.IsNull(15)) {
      // Inline: verify the whole payload, then cut the range.
      std::string payload = row.IsNull(14) ? std::string() : row.Bytes(14);
      if (Sha256(payload) != out.message.sha256) {
        obs::Error("payload_corrupt", {{"message", std::to_string(id)}});
        return absl::DataLossError(absl::StrCat(
            "message ", id, ": the stored payload does not match its SHA-256"));
      }
      out.data = payload.substr(offset, n);
      return absl::OkStatus();
    }
    if (n == 0) return absl::OkStatus();
    // Chunked: read only the chunks the range touches, each verified.
    const int64_t chunk = row.Int4(16);
    const int64_t payload_id = row.Int8(15);
    const int32_t first = static_cast<int32_t>(offset / chunk);
    const int32_t last = static_cast<int32_t>((offset + n - 1) / chunk);
    RETURN_IF_ERROR(conn.PrepareRaw(sql::kReadChunksName, sql::kReadChunks, {kInt8, kInt4, kInt4}));
    std::string pid_bin = EncodeInt8(payload_id), first_bin = EncodeInt4(first),
                last_bin = EncodeInt4(last);
    ASSIGN_OR_RETURN(Result chunks, ExecRaw(conn, sql::kReadChunksName,
                                            {Param::Binary(pid_bin), Param::Binary(first_bin),
                                             Param::Binary(last_bin)}));
    if (PQntuples(chunks.get()) != last - first + 1) {
      return absl::DataLossError(absl::StrCat("message ", id, ": payload chunks are missing"));
    }
    out.data.reserve(n);
    for (int r = 0; r < PQntuples(chunks.get()); ++r) {
      BinaryRow c(chunks.get(), r);
      int32_t seq = c.Int4(0);
      const char* bytes = PQgetvalue(chunks.get(), r, 2);
      int len = PQgetlength(chunks.get(), r, 2);
      if (seq != first + r || Sha256(absl::string_view(bytes, len)) != c.Bytes(1)) {
        obs::Error("payload_corrupt",
                   {{"message", std::to_string(id)}, {"chunk", std::to_string(seq)}});
        return absl::DataLossError(absl::StrCat(
            "message ", id, ": stored chunk ", seq, " does not match its SHA-256"));
      }
      int64_t chunk_start = static_cast<int64_t>(seq) * chunk;
      int64_t from = std::max<int64_t>(offset, chunk_start) - chunk_start;
      int64_t to = std::min<int64_t>(offset + n, chunk_start + len) - chunk_start;
      if (to > from) out.data.append(bytes + from, to - from);
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<Store::NewPayload> PgStore::CreatePayload(const std::string& tenant,
                                                        const std::string& topic,
                                                        int chunk_size, bool compressed) {
  NewPayload out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    pqxx::result r = txn.exec_params(sql::kCreatePayload, topic, chunk_size, compressed);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("topic \"", topic, "\" not found"));
    out.id = r[0][0].as<int64_t>();
    out.topic_max_message_bytes = r[0][1].as<int64_t>();
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PgStore::WriteChunk(const std::string& tenant, int64_t payload_id, int seq,
                                 const std::string& sha256, const std::string& bytes) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base&, Connection& conn) {
    RETURN_IF_ERROR(conn.PrepareRaw(sql::kWriteChunkName, sql::kWriteChunk,
                                    {kInt8, kInt4, kInt4, kBytea, kBytea}));
    std::string pid = EncodeInt8(payload_id), seq_bin = EncodeInt4(seq),
                size = EncodeInt4(static_cast<int32_t>(bytes.size()));
    ASSIGN_OR_RETURN(Result res, ExecRaw(conn, sql::kWriteChunkName,
                                         {Param::Binary(pid), Param::Binary(seq_bin),
                                          Param::Binary(size), Param::Binary(sha256),
                                          Param::Binary(bytes)}));
    if (PQntuples(res.get()) == 0) {
      return absl::FailedPreconditionError("the upload is not in progress");
    }
    return absl::OkStatus();
  });
}

absl::Status PgStore::CompletePayload(const std::string& tenant, int64_t payload_id,
                                      int64_t size, const std::string& sha256) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    if (txn.exec_params(sql::kCompletePayload, payload_id, size,
                        absl::BytesToHexString(sha256))
            .empty()) {
      return absl::FailedPreconditionError("the upload is not in progress");
    }
    return absl::OkStatus();
  });
}

absl::Status PgStore::DeletePayload(const std::string& tenant, int64_t payload_id) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    txn.exec_params(sql::kDeletePayload, payload_id);
    return absl::OkStatus();
  });
}

absl::StatusOr<int> PgStore::ReapExpired(int batch) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  try {
    pqxx::work txn(*conn);  // no tenant: the function works across tenants
    int n = txn.exec_params(sql::kReapExpired, batch)[0][0].as<int>();
    txn.exec(sql::kFoldTenantUsage);
    txn.exec(sql::kFoldCounters);
    txn.commit();
    return n;
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
}

absl::StatusOr<std::vector<obs::SubscriptionBacklog>> PgStore::SubscriptionBacklog(
    int max_rows) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  std::vector<obs::SubscriptionBacklog> out;
  try {
    // Its own transaction: the function sets the tenant per pass, locally.
    pqxx::work txn(*conn);
    for (const auto& row : txn.exec_params(sql::kSubscriptionBacklog, max_rows)) {
      out.push_back(obs::SubscriptionBacklog{row[0].as<std::string>(),
                                             row[1].as<std::string>(), row[2].as<int64_t>(),
                                             row[3].as<int64_t>(), row[4].as<double>()});
    }
    txn.commit();
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
  return out;
}

absl::Status PgStore::Ping() {
  if (ping_conn_ == nullptr || ping_conn_->broken) {
    ping_conn_.reset();
    ASSIGN_OR_RETURN(ping_conn_, Connection::Open(options_.dsn, /*statement_timeout_ms=*/5000));
  }
  try {
    pqxx::nontransaction q(*ping_conn_);
    q.exec("SELECT 1");
    return absl::OkStatus();
  } catch (const std::exception& e) {
    ping_conn_->broken = true;
    return absl::UnavailableError(absl::StrCat("Postgres does not answer: ", e.what()));
  }
}

absl::StatusOr<int> PgStore::RefreshStatistics() {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  try {
    // Its own transaction: ANALYZE holds its lock until the commit.
    pqxx::work txn(*conn);
    int n = txn.exec(sql::kRefreshStatistics)[0][0].as<int>();
    txn.commit();
    return n;
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
}

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
    std::set<std::string> topics;
    for (const auto& row : txn.exec_params(sql::kRedriveDeadLetters, subscription, id_list,
                                           limit)) {
      out.push_back(Republished{row[0].as<int64_t>(), row[1].as<std::string>()});
      topics.insert(row[1].as<std::string>());
    }
    if (!topics.empty()) {
      std::string payload;
      for (const auto& t : topics) absl::StrAppend(&payload, tenant, "\t", t, "\n");
      if (payload.size() > kMaxNotifyPayload) payload.clear();
      txn.exec_params(sql::kNotifyPublish, payload);
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

namespace {

class PublishReceiver : public pqxx::notification_receiver {
 public:
  PublishReceiver(pqxx::connection_base& conn,
                  std::function<void(const std::vector<TopicKey>&)> on_publish)
      : pqxx::notification_receiver(conn, sql::kPublishChannel),
        on_publish_(std::move(on_publish)) {}

  void operator()(const std::string& payload, int /*backend_pid*/) override {
    std::vector<TopicKey> keys;
    for (absl::string_view line : absl::StrSplit(payload, '\n', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('\t', 1));
      keys.push_back(TopicKey{std::move(kv.first), std::move(kv.second)});
    }
    on_publish_(keys);  // empty: wake everything
  }

 private:
  std::function<void(const std::vector<TopicKey>&)> on_publish_;
};

}  // namespace

absl::Status PgStore::StartListening(
    std::function<void(const std::vector<TopicKey>&)> on_publish) {
  if (listening_.exchange(true)) return absl::FailedPreconditionError("already listening");
  listener_ = std::thread([this, on_publish = std::move(on_publish)] { ListenLoop(on_publish); });
  return absl::OkStatus();
}

void PgStore::StopListening() {
  listening_ = false;
  if (listener_.joinable()) listener_.join();
}

void PgStore::ListenLoop(std::function<void(const std::vector<TopicKey>&)> on_publish) {
  bool first = true;
  while (listening_) {
    try {
      pqxx::connection conn(options_.dsn);
      PublishReceiver receiver(conn, on_publish);
      conn.get_notifs();  // issues the LISTEN
      if (!first) {
        obs::Info("listen_reconnected");
        on_publish({});  // publishes may have been missed while away
      }
      first = false;
      while (listening_) conn.await_notification(0, 200000);
    } catch (const std::exception& e) {
      obs::Warn("listen_failed", {{"error", StatusFromException(e, nullptr).ToString()}});
      first = false;
      for (int i = 0; i < 10 && listening_; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
}

}  // namespace pgbus::store::postgres
