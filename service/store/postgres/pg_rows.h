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

// Read the columns of sql.h's PGBUS_TOPIC_COLUMNS, PGBUS_SUBSCRIPTION_COLUMNS
// and PGBUS_MESSAGE_COLUMNS, in that order, from `row`'s next column on.
TopicRecord ReadTopic(RowReader& row);
SubscriptionRecord ReadSubscription(RowReader& row);
MessageRecord ReadMessage(RowReader& row);

// The rows of a listing statement (kListMessages, kListDeadLetters: message
// columns only), metadata only.
std::vector<MessageRecord> ReadListing(const Rows& rows);

}  // namespace pgbus::store::postgres

#endif  // PGBUS_SERVICE_STORE_POSTGRES_PG_ROWS_H_
