// Row readers and helpers shared by the PgStore files (pg_*.cc); internal to
// service/store/postgres.
#ifndef PGBUS_SERVICE_STORE_POSTGRES_PG_ROWS_H_
#define PGBUS_SERVICE_STORE_POSTGRES_PG_ROWS_H_

#include <pqxx/pqxx>

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

// Rows of sql.h's PGBUS_TOPIC_COLUMNS and PGBUS_SUBSCRIPTION_COLUMNS.
TopicRecord ReadTopic(const pqxx::row& r);
SubscriptionRecord ReadSubscription(const pqxx::row& r);
// Columns 0..13 of PGBUS_MESSAGE_COLUMNS, binary.
MessageRecord ReadMessage(const BinaryRow& row);

// Runs a listing statement ($1 text key, $2 after id, $3 limit; message
// columns 0..13) and appends its rows, metadata only.
absl::Status ListMetadata(Connection& conn, const char* name, const char* statement,
                          const std::string& key, int64_t after_id, int limit,
                          std::vector<MessageRecord>* out);

}  // namespace pgbus::store::postgres

#endif  // PGBUS_SERVICE_STORE_POSTGRES_PG_ROWS_H_
