// PgStore (service/store/postgres/pg_store.h), in part:
// Publishing: group commits of PublishBatch, pipelined.
#include "service/store/postgres/pg_store.h"

#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "service/common/status_macros.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

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

}  // namespace pgbus::store::postgres
