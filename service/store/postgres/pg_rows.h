// Row readers and helpers shared by the PgStore files (pg_*.cc); internal to
// service/store/postgres.
#ifndef PGBUS_SERVICE_STORE_POSTGRES_PG_ROWS_H_
#define PGBUS_SERVICE_STORE_POSTGRES_PG_ROWS_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "service/store/postgres/connection.h"
#include "service/store/store.h"

namespace pgbus::store::postgres {

// The channel of sql::kNotifyPublish, which the LISTEN connection hears.
inline constexpr char kPublishChannel[] = "pgbus_publish";

// NOTIFY payloads are capped near 8000 bytes; past this, announce "all".
inline constexpr size_t kMaxNotifyPayload = 7000;

inline int64_t ToMs(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

// What a pgbus_publish notification says: "tenant\ttopic\n" per topic that
// has new messages (ListenLoop's PublishReceiver reads it), or "" for
// "any topic" when that would not fit.
std::string NotifyPayload(const std::set<TopicKey>& topics);

// The NOT_FOUND every store call returns for a topic or subscription that
// does not exist (in the caller's tenant).
absl::Status TopicNotFound(const std::string& topic);
absl::Status SubscriptionNotFound(const std::string& subscription);

// Read a topic's, a subscription's and a message's columns, as the
// statements of sql/ list them (sql/get_topic.sql, sql/get_subscription.sql,
// sql/list_messages.sql), from `row`'s next column on.
TopicRecord ReadTopic(RowReader& row);
SubscriptionRecord ReadSubscription(RowReader& row);
MessageRecord ReadMessage(RowReader& row);
// Two columns: the attributes' keys and their values, as text[] in one order.
Attributes ReadAttributes(RowReader& row);

// The rows of a listing statement (kListMessages, kListDeadLetters: message
// columns only), metadata only.
std::vector<MessageRecord> ReadListing(const Rows& rows);

// The parameters of sql::kInsertMessages: one element per message, in
// publish order.
class MessageArrays {
 public:
  // Room for `count` messages with `bytes` of inline payload in all.
  void Reserve(size_t count, size_t bytes) { payload_.Reserve(count, bytes); }
  void Add(const std::string& topic, const NewMessage& m);
  // Queues kInsertMessages with the arrays, which are spent. `forwarded`:
  // the messages were published before (dead letters, redriven ones), so
  // the topic's size limit does not refuse them. `offers`: idle streams'
  // credit, of the transaction's tenant (see the statement). Returns the
  // index of its rows (see sql/insert_messages.sql).
  size_t Insert(Transaction& tx, bool forwarded, const std::vector<const LeaseOffer*>& offers = {});

 private:
  ArrayBuilder topic_{kText}, ttl_{kInt8}, deliver_{kInt8}, priority_{kInt4},
      correlation_{kText}, ordering_{kText}, idempotency_{kText}, size_{kInt8},
      sha_{kBytea}, payload_{kBytea}, attr_key_{kText}, attr_value_{kText},
      attr_count_{kInt8}, payload_id_{kInt8};
};

// Publishes again, in `tx`, the messages a statement took (the rows of
// sql::kTakeExhausted or sql::kTakeDeadLetters); returns the new ones in
// order. ABORTED when a topic was deleted meanwhile: the caller's
// transaction rolls back, and nothing moves.
absl::StatusOr<std::vector<Store::Republished>> PublishTaken(Transaction& tx,
                                                             const Rows& taken);

}  // namespace pgbus::store::postgres

#endif  // PGBUS_SERVICE_STORE_POSTGRES_PG_ROWS_H_
