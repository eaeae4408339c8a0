// PgStore (service/store/postgres/pg_store.h), in part:
// Publishing: group commits of PublishBatch, pipelined.
#include "service/store/postgres/pg_store.h"

#include <map>
#include <optional>
#include <set>
#include <utility>

#include "service/common/status_macros.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

void MessageArrays::Add(const std::string& topic, const NewMessage& m) {
  auto text_or_null = [](ArrayBuilder& b, const std::string& v) {
    if (v.empty()) {
      b.AddNull();
    } else {
      b.Add(v);
    }
  };
  topic_.Add(topic);
  if (m.ttl) {
    ttl_.Add(EncodeInt8(ToMs(*m.ttl)));
  } else {
    ttl_.AddNull();
  }
  if (m.deliver_at) {
    deliver_.Add(EncodeInt8(absl::ToUnixMicros(*m.deliver_at)));
  } else {
    deliver_.AddNull();
  }
  priority_.Add(EncodeInt4(m.priority));
  text_or_null(correlation_, m.correlation_id);
  text_or_null(ordering_, m.ordering_key);
  text_or_null(idempotency_, m.idempotency_key);
  size_.Add(EncodeInt8(static_cast<int64_t>(m.payload.size())));
  sha_.Add(m.sha256);
  payload_.Add(m.payload);
  if (m.payload_id) {
    payload_id_.Add(EncodeInt8(m.payload_id));
  } else {
    payload_id_.AddNull();
  }
  for (const auto& [k, v] : m.attributes) {
    attr_key_.Add(k);
    attr_value_.Add(v);
  }
  attr_count_.Add(EncodeInt8(static_cast<int64_t>(m.attributes.size())));
}

size_t MessageArrays::Insert(Transaction& tx, bool forwarded,
                             const std::vector<const LeaseOffer*>& offers) {
  ArrayBuilder subscriptions(kText), leases(kInt8), deadlines(kInt8), counts(kInt8),
      bytes(kInt8), first_may_exceed(kBool);
  for (const LeaseOffer* o : offers) {
    subscriptions.Add(o->subscription);
    leases.Add(EncodeInt8(o->lease));
    deadlines.Add(EncodeInt8(ToMs(o->ack_deadline)));
    counts.Add(EncodeInt8(o->max_messages));
    bytes.Add(EncodeInt8(o->max_bytes));
    first_may_exceed.Add(EncodeBool(o->first_may_exceed));
  }
  return tx.Add(sql::kInsertMessages, std::move(topic_), std::move(ttl_), std::move(deliver_),
                std::move(priority_), std::move(correlation_), std::move(ordering_),
                std::move(idempotency_), std::move(size_), std::move(sha_),
                std::move(payload_), std::move(attr_key_), std::move(attr_value_),
                std::move(attr_count_), std::move(payload_id_), forwarded,
                std::move(subscriptions), std::move(leases), std::move(deadlines),
                std::move(counts), std::move(bytes), std::move(first_may_exceed));
}

absl::StatusOr<std::vector<Store::Republished>> PublishTaken(Transaction& tx,
                                                             const Rows& taken) {
  MessageArrays arrays;
  for (int r = 0; r < taken.size(); ++r) {
    RowReader row = taken[r];
    const std::string topic = row.Text();
    NewMessage m;
    m.priority = row.Int4();
    m.correlation_id = row.Maybe(&RowReader::Text).value_or("");
    m.attributes = ReadAttributes(row);
    m.sha256 = row.Bytes();
    m.payload = row.Maybe(&RowReader::Bytes).value_or("");
    arrays.Add(topic, m);
  }
  const size_t insert = arrays.Insert(tx, /*forwarded=*/true);
  ASSIGN_OR_RETURN(std::vector<Rows> res, tx.Send());
  const Rows& stored = res[insert];
  if (stored.size() != taken.size()) {
    return absl::AbortedError(
        "a topic was deleted while its messages were being moved; nothing was moved, try again");
  }
  return stored.Map([](RowReader& row) {
    Store::Republished m;
    m.id = row.Int8();
    m.topic = row.Text();
    return m;
  });
}

namespace {

// A message row of kInsertMessages.
struct Inserted {
  int64_t id;
  std::string topic;
  absl::Time published;
  std::optional<absl::Time> expires;
};

// The delivery rows of kInsertMessages from row `from` on: each leased one
// goes, with its message (by id in `stored`), to its offer's entry of
// `handed`; a ready one makes that entry incomplete (the stream claims it).
void ReadHandedOff(const Rows& res, int from, const std::vector<LeaseOffer>& offers,
                   const std::map<std::string, size_t>& offer_of,
                   const std::map<int64_t, std::pair<const Inserted*, const NewMessage*>>& stored,
                   std::vector<HandedOff>* handed) {
  for (int r = from; r < res.size(); ++r) {
    RowReader row = res[r];
    const int64_t id = row.Int8();
    for (int c = 0; c < 3; ++c) row.Skip();
    const size_t o = offer_of.at(row.Text());
    const std::optional<absl::Time> expiry = row.Maybe(&RowReader::Timestamp);
    HandedOff& h = (*handed)[o];
    auto it = stored.find(id);
    if (!expiry || it == stored.end()) {
      h.complete = false;
      continue;
    }
    const auto& [in, m] = it->second;
    Delivery d;
    d.message.id = id;
    d.message.topic = in->topic;
    d.message.payload = m->payload;
    d.message.size = static_cast<int64_t>(m->payload.size());
    d.message.sha256 = m->sha256;
    d.message.attributes = m->attributes;
    d.message.priority = m->priority;
    d.message.correlation_id = m->correlation_id;
    d.message.ordering_key = m->ordering_key;
    d.message.idempotency_key = m->idempotency_key;
    d.message.publish_time = in->published;
    d.message.expire_time = in->expires;
    if (m->deliver_at) {
      d.message.deliver_time = absl::FromUnixMicros(absl::ToUnixMicros(*m->deliver_at));
    }
    d.attempt = 1;
    d.lease = offers[o].lease;
    d.lease_expiry = *expiry;
    h.deliveries.push_back(std::move(d));
  }
}

}  // namespace

std::vector<absl::StatusOr<std::vector<int64_t>>> PgStore::PublishBatch(
    const std::vector<const PublishItem*>& items, const std::vector<LeaseOffer>& offers,
    std::vector<HandedOff>* handed) {
  std::vector<HandedOff> none;
  if (handed == nullptr) handed = &none;
  handed->assign(offers.size(), HandedOff{});
  std::vector<absl::StatusOr<std::vector<int64_t>>> results;
  absl::Status st = PublishTransaction(items, offers, &results, handed);
  if (st.ok()) return results;
  handed->assign(offers.size(), HandedOff{});  // rolled back: nothing leased
  if (items.size() == 1) return {st};
  // One item may have broken the shared transaction (a statement timeout,
  // say): give each its own so the others are not failed with it. Without
  // the offers: their streams claim what these store.
  results.clear();
  for (const PublishItem* item : items) {
    std::vector<absl::StatusOr<std::vector<int64_t>>> one;
    absl::Status item_st = PublishTransaction({item}, {}, &one, nullptr);
    results.push_back(item_st.ok() ? std::move(one[0]) : item_st);
  }
  return results;
}

absl::Status PgStore::PublishTransaction(
    const std::vector<const PublishItem*>& items, const std::vector<LeaseOffer>& offers,
    std::vector<absl::StatusOr<std::vector<int64_t>>>* results, std::vector<HandedOff>* handed) {
  results->assign(items.size(), absl::InternalError("not published"));
  // Items of one tenant share one insert; set_config(..., true) switches
  // the tenant between groups, and RLS checks each group's rows against it.
  std::map<std::string, std::vector<size_t>> by_tenant;
  for (size_t i = 0; i < items.size(); ++i) by_tenant[items[i]->tenant].push_back(i);

  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  // BEGIN goes with the first statement, and the last tenant's insert
  // with the notification and the COMMIT: a batch without idempotency keys
  // takes one round trip.
  Transaction tx(*conn, by_tenant.begin()->first);
  std::set<TopicKey> touched;
  for (const auto& [tenant, indexes] : by_tenant) {
    const bool last = tenant == by_tenant.rbegin()->first;
    if (tenant != by_tenant.begin()->first) tx.Add(sql::kSetTenant, tenant);
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
        const Value topics_arr = Bind(std::move(key_topics)),
                    keys_arr = Bind(std::move(key_names));
        ASSIGN_OR_RETURN(Rows claimed,
                         tx.Run(sql::kClaimIdempotencyKeys, topics_arr, keys_arr));
        std::set<Key> fresh;
        for (int r = 0; r < claimed.size(); ++r) {
          RowReader row = claimed[r];
          std::string claimed_topic = row.Text();
          fresh.insert({std::move(claimed_topic), row.Text()});
        }
        if (fresh.size() < wanted.size()) {
          ASSIGN_OR_RETURN(Rows dups,
                           tx.Run(sql::kIdempotentMessages, topics_arr, keys_arr));
          for (int r = 0; r < dups.size(); ++r) {
            RowReader row = dups[r];
            std::string dup_topic = row.Text();
            Key key{std::move(dup_topic), row.Text()};
            if (!fresh.count(key)) original[key] = row.Int8();
          }
        }
      }
    }
    // What each message becomes: inserted, the original of its key, or
    // (a repeat within this batch) the message its first use inserts.
    enum class Fate { kInsert, kOriginal, kRepeat };
    std::vector<std::vector<Fate>> fate(items.size());
    std::set<Key> inserted_keys;
    MessageArrays arrays;
    size_t count = 0, bytes = 0;
    for (size_t i : indexes) {
      for (const NewMessage& m : items[i]->messages) {
        ++count;
        bytes += m.payload.size();
      }
    }
    arrays.Reserve(count, bytes);
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
        arrays.Add(items[i]->topic, m);
      }
    }
    // The offers of this tenant, and where each goes in `handed`.
    std::vector<const LeaseOffer*> tenant_offers;
    std::map<std::string, size_t> offer_of;  // subscription -> index in offers
    for (size_t o = 0; handed != nullptr && o < offers.size(); ++o) {
      if (offers[o].tenant != tenant) continue;
      tenant_offers.push_back(&offers[o]);
      offer_of[offers[o].subscription] = o;
    }
    const size_t insert = arrays.Insert(tx, /*forwarded=*/false, tenant_offers);
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
      if (!announce.empty()) tx.Add(sql::kNotifyPublish, NotifyPayload(announce));
    }
    ASSIGN_OR_RETURN(std::vector<Rows> done, last ? tx.SendAndCommit() : tx.Send());
    const Rows& res = done[insert];
    // Rows come back in publish order (id, topic, published_at,
    // expires_at); an item whose topic does not exist has none. Then the
    // deliveries of offered subscriptions.
    std::vector<Inserted> inserted;
    inserted.reserve(res.size());
    std::set<std::string> found;
    int lease_rows = res.size();
    for (int r = 0; r < res.size(); ++r) {
      RowReader row = res[r];
      Inserted in;
      in.id = row.Int8();
      std::optional<std::string> topic = row.Maybe(&RowReader::Text);
      if (!topic) {
        lease_rows = r;
        break;
      }
      in.topic = *std::move(topic);
      in.published = row.Timestamp();
      in.expires = row.Maybe(&RowReader::Timestamp);
      found.insert(in.topic);
      inserted.push_back(std::move(in));
    }
    const int rows = static_cast<int>(inserted.size());
    // Which message each inserted id is, for the deliveries handed off.
    std::map<int64_t, std::pair<const Inserted*, const NewMessage*>> stored;
    int row = 0;
    std::map<Key, int64_t> assigned;  // keys inserted by this batch
    for (size_t i : indexes) {
      const PublishItem& item = *items[i];
      bool inserts = false;
      for (Fate f : fate[i]) inserts |= f == Fate::kInsert;
      if (inserts && !found.count(item.topic)) {
        (*results)[i] = TopicNotFound(item.topic);
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
        if (row >= rows || inserted[row].topic != item.topic) {
          out_of_order = true;
          break;
        }
        ids.push_back(inserted[row].id);
        if (!m.idempotency_key.empty()) assigned[key] = inserted[row].id;
        if (!tenant_offers.empty()) stored[inserted[row].id] = {&inserted[row], &m};
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
    for (const LeaseOffer* o : tenant_offers) (*handed)[offer_of[o->subscription]].complete = true;
    ReadHandedOff(res, lease_rows, offers, offer_of, stored, handed);
  }
  return absl::OkStatus();  // committed with the last tenant's insert
}

}  // namespace pgbus::store::postgres
