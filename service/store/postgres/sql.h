// Every statement the Postgres store runs: named, parameterised constants,
// never assembled from values at run time. A Transaction (connection.h)
// prepares each under a name of its own, once per session, and finds it by
// the constant's address. The tenant always comes from the
// transaction-local setting pgbus.tenant_id, which row-level security also
// enforces; naming it here as well lets the planner use the tenant_id-led
// indexes directly.
#ifndef PGBUS_SERVICE_STORE_POSTGRES_SQL_H_
#define PGBUS_SERVICE_STORE_POSTGRES_SQL_H_

namespace pgbus::store::postgres::sql {

#define PGBUS_TENANT "(SELECT current_setting('pgbus.tenant_id', true))"
#define PGBUS_MS(p) "(" p "::bigint * interval '1 millisecond')"
#define PGBUS_TO_MS(e) "(extract(epoch from " e ") * 1000)::bigint"

// Every statement here is written for index access: probes by key, ordered
// index scans under a LIMIT, nested loops over a handful of rows. The
// planner chooses otherwise when statistics are stale (a table analysed
// while empty and filled since: until autovacuum visits it, a sequential
// or bitmap scan of a whole subscription looks cheap), and then a claim or
// an ack costs the backlog instead of its own rows. So pgbusd's
// transactions rule out the shapes whose cost grows with a table; where
// nothing else is possible the planner still uses them. Plans are checked
// by tests/integration/plan_test.cc.
#define PGBUS_PIN_PLANS                                                         \
  "set_config('enable_seqscan', 'off', true), "                                \
  "set_config('enable_bitmapscan', 'off', true), "                             \
  "set_config('enable_hashjoin', 'off', true), "                               \
  "set_config('enable_mergejoin', 'off', true)"
// A Transaction (connection.h) begins, sets its tenant and ends with these.
inline constexpr char kBegin[] = "BEGIN";
inline constexpr char kCommit[] = "COMMIT";
// The tenant and the plan settings; also switches the tenant inside a
// transaction (a group commit spanning tenants).
inline constexpr char kSetTenant[] =
    "SELECT set_config('pgbus.tenant_id', $1, true), " PGBUS_PIN_PLANS;
// For claims: a claim lost in a crash only makes the message visible again
// (redelivery, which at-least-once allows), so its commit need not wait for
// the WAL flush. Publishes and acks keep synchronous commit.
inline constexpr char kSetTenantAsyncCommit[] =
    "SELECT set_config('synchronous_commit', 'off', true), " PGBUS_PIN_PLANS
    ", set_config('pgbus.tenant_id', $1, true)";

// Whether the migrations ever ran, and which were applied (PgStore::Open
// refuses a missing or older schema); the health check's statement.
inline constexpr char kSchemaMigrated[] =
    "SELECT to_regclass('pgbus.schema_migrations') IS NOT NULL";
inline constexpr char kSchemaVersion[] =
    "SELECT coalesce(max(version), 0) FROM pgbus.schema_migrations";
inline constexpr char kPing[] = "SELECT 1";

inline constexpr char kEnsureTenant[] =
    "INSERT INTO pgbus.tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING";

#define PGBUS_TOPIC_COLUMNS                                                    \
  "name, " PGBUS_TO_MS("retention") ", max_message_bytes, "                   \
  "coalesce(" PGBUS_TO_MS("message_ttl") ", 0), " PGBUS_TO_MS("dedup_window") \
  ", (extract(epoch from created_at) * 1000000)::bigint"

// $1 name, $2 retention ms, $3 max bytes, $4 ttl ms (0: none), $5 dedup ms
inline constexpr char kCreateTopic[] =
    "INSERT INTO pgbus.topics (tenant_id, name, retention, max_message_bytes, message_ttl, "
    "dedup_window) VALUES (" PGBUS_TENANT ", $1, " PGBUS_MS("$2") ", $3, "
    "CASE WHEN $4::bigint = 0 THEN NULL ELSE " PGBUS_MS("$4") " END, " PGBUS_MS("$5") ") "
    "RETURNING " PGBUS_TOPIC_COLUMNS;

inline constexpr char kGetTopic[] =
    "SELECT " PGBUS_TOPIC_COLUMNS " FROM pgbus.topics WHERE tenant_id = " PGBUS_TENANT
    " AND name = $1";

inline constexpr char kListTopics[] =
    "SELECT " PGBUS_TOPIC_COLUMNS " FROM pgbus.topics WHERE tenant_id = " PGBUS_TENANT
    " AND name > $1 ORDER BY name LIMIT $2";

inline constexpr char kDeleteTopic[] =
    "DELETE FROM pgbus.topics WHERE tenant_id = " PGBUS_TENANT " AND name = $1 RETURNING name";

// Whether subscription `s` (an alias) receives messages of topic `t` (an
// expression): its topic, or a topic its pattern matches (0011).
#define PGBUS_SUB_MATCHES(s, t) \
  "(" s ".topic = " t " OR (" s ".topic_regex IS NOT NULL AND " t " ~ " s ".topic_regex))"

#define PGBUS_SUBSCRIPTION_COLUMNS                                                  \
  "name, coalesce(topic, topic_pattern), filter, " PGBUS_TO_MS("ack_deadline") ", max_delivery_attempts, "  \
  "dead_letter_topic, " PGBUS_TO_MS("min_backoff") ", " PGBUS_TO_MS("max_backoff") \
  ", (extract(epoch from created_at) * 1000000)::bigint"

// $1 name, $2 topic, $3 filter, $4 ack deadline ms, $5 max attempts,
// $6 dead-letter topic, $7 min backoff ms, $8 max backoff ms.
// No row when the topic does not exist.
inline constexpr char kCreateSubscription[] =
    "INSERT INTO pgbus.subscriptions (tenant_id, name, topic, filter, ack_deadline, "
    "max_delivery_attempts, dead_letter_topic, min_backoff, max_backoff, filter_path) "
    "SELECT t.tenant_id, $1, t.name, $3, " PGBUS_MS("$4") ", $5, $6, " PGBUS_MS("$7") ", "
    PGBUS_MS("$8") ", NULLIF($9, '')::jsonpath FROM pgbus.topics t WHERE t.tenant_id = " PGBUS_TENANT " AND t.name = $2 "
    "RETURNING " PGBUS_SUBSCRIPTION_COLUMNS;

// As kCreateSubscription for a pattern ($2), with $10 its regex; the
// pattern needs no existing topic.
inline constexpr char kCreatePatternSubscription[] =
    "INSERT INTO pgbus.subscriptions (tenant_id, name, topic, topic_pattern, topic_regex, "
    "filter, ack_deadline, max_delivery_attempts, dead_letter_topic, min_backoff, max_backoff, "
    "filter_path) VALUES (" PGBUS_TENANT ", $1, NULL, $2, $10, $3, " PGBUS_MS("$4") ", $5, $6, "
    PGBUS_MS("$7") ", " PGBUS_MS("$8") ", NULLIF($9, '')::jsonpath) "
    "RETURNING " PGBUS_SUBSCRIPTION_COLUMNS;

inline constexpr char kGetSubscription[] =
    "SELECT " PGBUS_SUBSCRIPTION_COLUMNS " FROM pgbus.subscriptions WHERE tenant_id = "
    PGBUS_TENANT " AND name = $1";

// $1 topic ('' = all), $2 after, $3 limit
inline constexpr char kListSubscriptions[] =
    "SELECT " PGBUS_SUBSCRIPTION_COLUMNS " FROM pgbus.subscriptions WHERE tenant_id = "
    PGBUS_TENANT " AND ($1 = '' OR topic = $1 OR topic_pattern = $1) AND name > $2"
    " ORDER BY name LIMIT $3";

inline constexpr char kDeleteSubscription[] =
    "DELETE FROM pgbus.subscriptions WHERE tenant_id = " PGBUS_TENANT
    " AND name = $1 RETURNING name";

// Stores a whole group commit's messages (of one tenant) in one statement
// and fans each out to every subscription of its topic. Arrays, one element
// per message, in publish order: $1 topic, $2 ttl ms (NULL: the topic's),
// $3 deliver_at in µs since the Unix epoch (NULL: now), $4 priority,
// $5 correlation id, $6 ordering key, $7 idempotency key, $8 size,
// $9 sha256, $10 inline payload, $14 uploaded payload id (NULL: inline);
// $13 how many attributes each has; their keys and values are the
// messages' slices, in order, of $11 and $12.
// $15: the messages were published before (dead letters, redriven ones):
// the topic's size limit does not refuse them now.
// Returns (id, topic) of the new rows; ids ascend in publish order (rows
// are inserted in `ord` order and the identity increases). Messages of a
// topic that does not exist are not inserted, so their topic is missing.
// An oversize message or a bad payload handle raises (see migrations).
// The last CTE of every statement that inserts messages (CTE `m`, returning
// tenant_id, id, topic, priority, size, published_at, deliver_at,
// expires_at, ordering_key, attributes): one delivery per subscription of
// the topic or of a pattern matching it (0011) whose filter (0010) the
// message's attributes pass.
#define PGBUS_FAN_OUT                                                                \
  "fan_out AS ("                                                                     \
  "  INSERT INTO pgbus.deliveries (tenant_id, subscription, message_id, priority, size," \
  "    visible_at, expires_at, ordering_key)"                                        \
  "  SELECT m.tenant_id, fs.name, m.id, m.priority, m.size,"                         \
  "    CASE WHEN m.deliver_at > m.published_at THEN m.deliver_at END, m.expires_at,"  \
  "    m.ordering_key"                                                               \
  "  FROM m JOIN LATERAL ("                                                         \
  "    SELECT s1.name, s1.filter_path FROM pgbus.subscriptions s1"                   \
  "    WHERE s1.tenant_id = m.tenant_id AND s1.topic = m.topic"                      \
  "    UNION ALL"                                                                    \
  "    SELECT s2.name, s2.filter_path FROM pgbus.subscriptions s2"                   \
  "    WHERE s2.tenant_id = m.tenant_id AND s2.topic_regex IS NOT NULL"              \
  "      AND m.topic ~ s2.topic_regex) fs ON true"                                   \
  "  WHERE fs.filter_path IS NULL OR jsonb_path_match(m.attributes, fs.filter_path)) "

// The CTEs every statement that inserts messages (CTE `m`, returning at
// least tenant_id, topic, size and payload_id) puts before PGBUS_FAN_OUT:
// the published counter of each topic and the tenant's stored-bytes ledger
// (payloads stored inline count; an uploaded one was counted by its chunks),
// with the quota: when the tenant has max_stored_bytes and what is stored
// plus this statement's bytes exceeds it, the statement fails with SQLSTATE
// 54000 and stores nothing. Was two statement triggers (migration 0018).
#define PGBUS_ACCOUNT_PUBLISHED                                                       \
  "counted AS ("                                                                      \
  "  INSERT INTO pgbus.counters (tenant_id, topic, published)"                        \
  "  SELECT m.tenant_id, m.topic, count(*) FROM m GROUP BY m.tenant_id, m.topic), "   \
  "charged AS ("                                                                      \
  "  INSERT INTO pgbus.tenant_usage (tenant_id, bytes)"                               \
  "  SELECT c.tenant_id, CASE WHEN c.bytes + s.used > t.max_stored_bytes"             \
  "    THEN pgbus.reject_stored_bytes(t.max_stored_bytes, s.used, c.bytes)"           \
  "    ELSE c.bytes END"                                                              \
  "  FROM (SELECT m.tenant_id,"                                                       \
  "      (sum(m.size) FILTER (WHERE m.payload_id IS NULL))::bigint AS bytes"          \
  "    FROM m GROUP BY m.tenant_id) c"                                                \
  "  LEFT JOIN pgbus.tenants t ON t.tenant_id = c.tenant_id"                          \
  /* what is stored: read only when the tenant has a quota */                         \
  "  CROSS JOIN LATERAL (SELECT coalesce(sum(u.bytes), 0)::bigint AS used"            \
  "    FROM pgbus.tenant_usage u"                                                     \
  "    WHERE t.max_stored_bytes IS NOT NULL AND u.tenant_id = c.tenant_id) s"         \
  "  WHERE c.bytes > 0), "

inline constexpr char kInsertMessages[] =
    "WITH input AS ("
    "  SELECT i.*, (sum(i.attr_count) OVER (ORDER BY i.ord))::int AS attr_end"
    "  FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int4[], $5::text[],"
    "    $6::text[], $7::text[], $8::int8[], $9::bytea[], $10::bytea[], $13::int8[],"
    "    $14::int8[])"
    "    WITH ORDINALITY AS i(topic, ttl_ms, deliver_us, priority, correlation_id,"
    "      ordering_key, idempotency_key, size, sha256, payload, attr_count, payload_id,"
    "      ord)), "
    "src AS ("
    "  SELECT i.*, t.tenant_id, t.retention, coalesce(t.message_ttl, t.retention) AS ttl,"
    "    t.max_message_bytes,"
    "    CASE WHEN i.payload_id IS NULL THEN i.size"
    "      WHEN p.id IS NULL THEN pgbus.reject_handle(i.payload_id)"
    "      ELSE p.size END AS real_size,"
    "    coalesce(p.sha256, i.sha256) AS real_sha256"
    "  FROM input i"
    "  JOIN pgbus.topics t ON t.tenant_id = " PGBUS_TENANT " AND t.name = i.topic"
    "  LEFT JOIN pgbus.payloads p ON p.tenant_id = t.tenant_id AND p.id = i.payload_id"
    "    AND p.topic = t.name AND p.state = 'complete' AND p.message_id IS NULL), "
    "m AS ("
    "  INSERT INTO pgbus.messages (tenant_id, topic, expires_at, deliver_at, priority,"
    "    correlation_id, ordering_key, idempotency_key, attributes, size, sha256, payload,"
    "    payload_id)"
    "  SELECT src.tenant_id, src.topic,"
    "    now() + least(coalesce(src.ttl_ms * interval '1 millisecond', src.ttl), src.retention),"
    "    'epoch'::timestamptz + src.deliver_us * interval '1 microsecond',"
    "    src.priority, src.correlation_id, src.ordering_key, src.idempotency_key,"
    // Each message's attributes are its slice of the key and value arrays
    // (a join to them grouped by message became a nested loop over all of
    // them per message: quadratic in the group commit's size).
    "    CASE WHEN src.attr_count > 0 THEN"
    "      jsonb_object(($11::text[])[src.attr_end - src.attr_count + 1 : src.attr_end],"
    "                   ($12::text[])[src.attr_end - src.attr_count + 1 : src.attr_end])"
    "      ELSE '{}'::jsonb END,"
    "    CASE WHEN NOT $15::bool AND src.max_message_bytes > 0"
    "        AND src.real_size > src.max_message_bytes"
    "      THEN pgbus.reject_oversize(src.topic, src.real_size, src.max_message_bytes)"
    "      ELSE src.real_size END,"
    "    src.real_sha256, src.payload, src.payload_id"
    "  FROM src"
    "  ORDER BY src.ord"
    "  RETURNING tenant_id, id, topic, priority, size, published_at, deliver_at,"
    "    expires_at, payload_id, ordering_key, idempotency_key, attributes), "
    "k AS ("
    "  UPDATE pgbus.idempotency_keys ik SET message_id = m.id FROM m"
    "  WHERE ik.tenant_id = m.tenant_id AND ik.topic = m.topic"
    "    AND ik.key = m.idempotency_key), "
    "u AS ("
    // The payload takes its message's expiry: the reaper may delete only
    // what expired (migration 0019).
    "  UPDATE pgbus.payloads p SET message_id = m.id, expires_at = m.expires_at FROM m"
    "  WHERE p.tenant_id = m.tenant_id AND p.id = m.payload_id), "
    PGBUS_ACCOUNT_PUBLISHED
    PGBUS_FAN_OUT
    "SELECT id, topic FROM m ORDER BY id";

// Claims idempotency keys. $1 topics, $2 keys (unique pairs). Returns the
// pairs claimed now (new, or taken over after the window ran out); the
// others are duplicates (or of a missing topic).
inline constexpr char kClaimIdempotencyKeys[] =
    "INSERT INTO pgbus.idempotency_keys (tenant_id, topic, key, expires_at)"
    " SELECT t.tenant_id, t.name, i.key, now() + t.dedup_window"
    " FROM unnest($1::text[], $2::text[]) AS i(topic, key)"
    " JOIN pgbus.topics t ON t.tenant_id = " PGBUS_TENANT " AND t.name = i.topic"
    " ON CONFLICT (tenant_id, topic, key) DO UPDATE"
    "  SET expires_at = EXCLUDED.expires_at, message_id = NULL"
    "  WHERE pgbus.idempotency_keys.expires_at <= now()"
    " RETURNING topic, key";

// The messages of duplicate keys (a new statement: it sees keys that
// concurrent publishers committed meanwhile). $1 topics, $2 keys.
inline constexpr char kIdempotentMessages[] =
    "SELECT k.topic, k.key, k.message_id FROM pgbus.idempotency_keys k"
    " JOIN unnest($1::text[], $2::text[]) AS i(topic, key) ON k.topic = i.topic AND k.key = i.key"
    " WHERE k.tenant_id = " PGBUS_TENANT " AND k.message_id IS NOT NULL";

inline constexpr char kNotifyPublish[] = "SELECT pg_notify('pgbus_publish', $1)";
inline constexpr char kPublishChannel[] = "pgbus_publish";

inline constexpr char kSubscriptionExists[] =
    "SELECT 1 FROM pgbus.subscriptions WHERE tenant_id = " PGBUS_TENANT " AND name = $1";

// Columns 0..13 of every message read; see PgStore's ReadMessage().
#define PGBUS_MESSAGE_COLUMNS                                                  \
  "m.id, m.topic, m.priority, m.size, m.sha256, m.published_at, m.expires_at, " \
  "m.deliver_at, m.correlation_id, m.ordering_key, m.idempotency_key, "         \
  "ARRAY(SELECT key FROM jsonb_each_text(m.attributes)), "                     \
  "ARRAY(SELECT value FROM jsonb_each_text(m.attributes)), "                   \
  "(m.payload_id IS NOT NULL)"

// Deliveries of a subscription are ready (visible_at NULL: the claim index
// holds only these) or held until visible_at (leased, backing off after a
// nack, or published with deliver_at); see migrations/0013_hot_path.sql.
//
// Makes up to $2 held deliveries of subscription $1 whose time has come
// ready again, earliest first, skipping rows other claimers hold. A delivery
// that used up max_delivery_attempts stays held for kTakeExhausted while its
// dead-letter topic exists (otherwise it goes on being delivered rather than
// be stuck). Reads only due rows (deliveries_held), never the backlog.
inline constexpr char kReleaseDue[] =
    "UPDATE pgbus.deliveries d SET visible_at = NULL"
    // The rows the subquery locked, by their ctid (see kClaim).
    " WHERE d.tenant_id = " PGBUS_TENANT
    "   AND d.ctid = ANY (ARRAY("
    "     SELECT e.ctid FROM pgbus.deliveries e"
    "     WHERE e.tenant_id = " PGBUS_TENANT " AND e.subscription = $1"
    "       AND e.visible_at <= now()"
    "       AND e.attempts < coalesce((SELECT s.max_delivery_attempts FROM pgbus.subscriptions s"
    "         JOIN pgbus.topics t ON t.tenant_id = s.tenant_id AND t.name = s.dead_letter_topic"
    "         WHERE s.tenant_id = " PGBUS_TENANT " AND s.name = $1"
    "           AND s.max_delivery_attempts > 0), 2147483647)"
    "     ORDER BY e.visible_at LIMIT $2 FOR UPDATE SKIP LOCKED))";

// Claims in one statement: locks up to $2 ready rows in claim order (rows
// other claimers hold are skipped; a row whose ordering key has an earlier
// unacked message in the subscription waits for it), keeps the prefix whose
// payloads fit the byte budget $3 (the first row whatever its size when $6),
// leases those to
// $4 until now + $5 ms, and returns them with their messages. $1
// subscription. Walks deliveries_ready only: its cost does not grow with
// the messages in flight. Columns: message 0..13, inline payload 14,
// attempt 15, lease expiry 16.
inline constexpr char kClaim[] =
    "WITH locked AS ("
    "  SELECT ctid AS row_id, message_id, size, priority FROM pgbus.deliveries d"
    "  WHERE tenant_id = " PGBUS_TENANT " AND subscription = $1 AND visible_at IS NULL"
    "    AND (expires_at IS NULL OR expires_at > now())"
    "    AND (ordering_key IS NULL OR NOT EXISTS ("
    "      SELECT 1 FROM pgbus.deliveries e WHERE e.tenant_id = d.tenant_id"
    "        AND e.subscription = d.subscription AND e.ordering_key = d.ordering_key"
    "        AND e.message_id < d.message_id"
    "        AND (e.expires_at IS NULL OR e.expires_at > now())))"
    "  ORDER BY priority DESC, message_id LIMIT $2 FOR UPDATE SKIP LOCKED), "
    "chosen AS ("
    "  SELECT row_id FROM ("
    "    SELECT row_id, sum(size) OVER w AS running, row_number() OVER w AS n"
    "    FROM locked WINDOW w AS (ORDER BY priority DESC, message_id"
    "      ROWS UNBOUNDED PRECEDING)) r"
    "  WHERE running <= $3 OR (n = 1 AND $6)), "
    "c AS ("
    "  UPDATE pgbus.deliveries d SET attempts = d.attempts + 1, lease = $4,"
    "    visible_at = now() + " PGBUS_MS("$5")
    // The rows `locked` holds, by ctid: a TID scan, whatever the
    // statistics say (by message id, stale statistics made the planner
    // scan the subscription's whole backlog). A locked row cannot move
    // before this update. An array, not IN (subquery): the LIMIT ... SKIP
    // LOCKED subquery runs exactly once.
    "  WHERE d.tenant_id = " PGBUS_TENANT
    "    AND d.ctid = ANY (ARRAY(SELECT row_id FROM chosen))"
    "  RETURNING d.message_id, d.attempts, d.visible_at) "
    "SELECT " PGBUS_MESSAGE_COLUMNS ", m.payload, c.attempts, c.visible_at"
    " FROM c JOIN pgbus.messages m ON m.tenant_id = " PGBUS_TENANT " AND m.id = c.message_id"
    " ORDER BY m.priority DESC, m.id";

// Locks the rows of subscription $1 that hold the leases $2 message ids,
// $3 attempts, $4 lease tokens (parallel arrays); returns each row's ctid
// with its key. Each key is one probe of the primary key (a correlated
// LIMIT 1 subquery: the planner cannot turn it into a scan of the
// subscription, as a generic plan of a join did on stale statistics: 0.7 s
// per ack with 100,000 queued). The statements below then change exactly
// those rows by ctid (a TID scan), in the same transaction: the lock keeps
// each row where it is until then.
inline constexpr char kLockLeases[] =
    "SELECT x.row_id, k.message_id, k.attempts, k.lease"
    " FROM unnest($2::bigint[], $3::int[], $4::bigint[]) AS k(message_id, attempts, lease)"
    " CROSS JOIN LATERAL ("
    "  SELECT e.ctid AS row_id FROM pgbus.deliveries e"
    "  WHERE e.tenant_id = " PGBUS_TENANT " AND e.subscription = $1"
    "    AND e.message_id = k.message_id AND e.attempts = k.attempts"
    "    AND e.lease = k.lease LIMIT 1 FOR UPDATE) x";

// Ends the leases of the rows $1 (ctids kLockLeases locked): the messages
// are done. A delivery whose lease ran out but that no stream has claimed
// again is still acked: the work was done, and nobody else holds it.
inline constexpr char kAck[] =
    "DELETE FROM pgbus.deliveries WHERE tenant_id = " PGBUS_TENANT " AND ctid = ANY ($1::tid[])";

// As kAck, $2 the new deadline in ms (> 0).
inline constexpr char kExtendLease[] =
    "UPDATE pgbus.deliveries SET visible_at = now() + " PGBUS_MS("$2")
    " WHERE tenant_id = " PGBUS_TENANT " AND ctid = ANY ($1::tid[])";

// As kAck: ends the leases of subscription $2's rows; visible again after
// min_backoff doubled per earlier attempt, at most max_backoff; $3 the
// reason ('': none). Ready at
// once without backoff, unless the delivery used up max_delivery_attempts
// and waits for kTakeExhausted (held and due: kReleaseDue decides).
inline constexpr char kNack[] =
    "UPDATE pgbus.deliveries d SET lease = NULL, last_nack_reason = NULLIF($3, ''),"
    " visible_at = CASE"
    "   WHEN least(s.max_backoff, s.min_backoff * power(2, least(greatest(d.attempts - 1, 0), 30)))"
    "       > interval '0'"
    "     OR (s.max_delivery_attempts > 0 AND d.attempts >= s.max_delivery_attempts)"
    "   THEN now()"
    "     + least(s.max_backoff, s.min_backoff * power(2, least(greatest(d.attempts - 1, 0), 30)))"
    "   END"
    // The subscription by its name, not by each row's: one probe, not one
    // scan of the rows per subscription of the tenant.
    " FROM pgbus.subscriptions s"
    " WHERE d.tenant_id = " PGBUS_TENANT " AND d.ctid = ANY ($1::tid[])"
    "   AND s.tenant_id = " PGBUS_TENANT " AND s.name = $2";

// As kNack ($2 subscription), for leases a stopping replica gives back: no backoff (the
// consumer did not fail; its stream was ended), ready at once unless
// exhausted (then held and due, for kTakeExhausted, as an expired lease would
// be). The attempt count stays.
inline constexpr char kReleaseLeases[] =
    "UPDATE pgbus.deliveries d SET lease = NULL, visible_at = CASE"
    "   WHEN s.max_delivery_attempts > 0 AND d.attempts >= s.max_delivery_attempts"
    "   THEN now() END"
    // The subscription by its name, not by each row's: one probe, not one
    // scan of the rows per subscription of the tenant.
    " FROM pgbus.subscriptions s"
    " WHERE d.tenant_id = " PGBUS_TENANT " AND d.ctid = ANY ($1::tid[])"
    "   AND s.tenant_id = " PGBUS_TENANT " AND s.name = $2";

// $1 id. Columns: message 0..13, inline payload 14 (whole: it is verified
// before any range of it is returned), payload id 15, chunk size 16.
inline constexpr char kRetrieve[] =
    "SELECT " PGBUS_MESSAGE_COLUMNS ", m.payload, p.id, p.chunk_size"
    " FROM pgbus.messages m LEFT JOIN pgbus.payloads p"
    "  ON p.tenant_id = m.tenant_id AND p.id = m.payload_id"
    " WHERE m.tenant_id = " PGBUS_TENANT " AND m.id = $1"
    " AND (m.expires_at IS NULL OR m.expires_at > now())";

// $1 payload id, $2 first seq, $3 last seq. Columns: seq, sha256, bytes.
inline constexpr char kReadChunks[] =
    "SELECT seq, sha256, coalesce(data, data_raw) FROM pgbus.payload_chunks"
    " WHERE tenant_id = " PGBUS_TENANT " AND payload_id = $1 AND seq BETWEEN $2 AND $3"
    " ORDER BY seq";

// $1 topic, $2 chunk size, $3 compressed. Returns the upload's id and the
// topic's max_message_bytes (0: none); no row when the topic is missing.
inline constexpr char kCreatePayload[] =
    "WITH t AS (SELECT tenant_id, name, max_message_bytes FROM pgbus.topics"
    "  WHERE tenant_id = " PGBUS_TENANT " AND name = $1), "
    "p AS (INSERT INTO pgbus.payloads (tenant_id, topic, chunk_size, compressed)"
    "  SELECT t.tenant_id, t.name, $2, $3 FROM t RETURNING id) "
    "SELECT p.id, coalesce(t.max_message_bytes, 0) FROM p CROSS JOIN t";

// $1 payload id, $2 seq, $3 size, $4 sha256, $5 bytes. No row when the
// upload is not (or no longer) in progress.
inline constexpr char kWriteChunk[] =
    "INSERT INTO pgbus.payload_chunks (tenant_id, payload_id, seq, size, sha256, data, data_raw)"
    " SELECT p.tenant_id, p.id, $2, $3, $4,"
    "  CASE WHEN p.compressed THEN NULL ELSE $5::bytea END,"
    "  CASE WHEN p.compressed THEN $5::bytea END"
    " FROM pgbus.payloads p WHERE p.tenant_id = " PGBUS_TENANT " AND p.id = $1"
    " AND p.state = 'uploading' RETURNING seq";

// $1 payload id, $2 size, $3 sha256.
inline constexpr char kCompletePayload[] =
    "UPDATE pgbus.payloads SET state = 'complete', size = $2, sha256 = $3"
    " WHERE tenant_id = " PGBUS_TENANT " AND id = $1 AND state = 'uploading' RETURNING id";

// An upload that broke off or failed its checksum. $1 payload id.
inline constexpr char kDeletePayload[] =
    "DELETE FROM pgbus.payloads WHERE tenant_id = " PGBUS_TENANT
    " AND id = $1 AND message_id IS NULL";

// $1 correlation id, $2 after id, $3 limit. Columns: message 0..13.
inline constexpr char kListMessages[] =
    "SELECT " PGBUS_MESSAGE_COLUMNS " FROM pgbus.messages m"
    " WHERE m.tenant_id = " PGBUS_TENANT " AND m.correlation_id = $1 AND m.id > $2"
    " AND (m.expires_at IS NULL OR m.expires_at > now()) ORDER BY m.id LIMIT $3";

// $1 subscription, $2 time (µs since the Unix epoch).
inline constexpr char kSeek[] =
    "INSERT INTO pgbus.deliveries (tenant_id, subscription, message_id, priority, size,"
    "  visible_at, expires_at, ordering_key)"
    " SELECT m.tenant_id, s.name, m.id, m.priority, m.size, NULL::timestamptz, m.expires_at,"
    "  m.ordering_key"
    " FROM pgbus.subscriptions s JOIN pgbus.messages m"
    "  ON m.tenant_id = s.tenant_id AND " PGBUS_SUB_MATCHES("s", "m.topic")
    " WHERE s.tenant_id = " PGBUS_TENANT " AND s.name = $1"
    "  AND m.published_at >= 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'"
    "  AND (m.expires_at IS NULL OR m.expires_at > now())"
    "  AND (s.filter_path IS NULL OR jsonb_path_match(m.attributes, s.filter_path))"
    " ON CONFLICT (tenant_id, subscription, message_id)"
    " DO UPDATE SET visible_at = now(), lease = NULL";

// $1 batch. Runs as the schema owner (see migrations/0006_reaper.sql).
inline constexpr char kReapExpired[] = "SELECT pgbus.reap_expired($1)";
// Analyses the hot tables that have doubled since their statistics (see
// migrations/0016_fresh_statistics.sql); returns how many.
inline constexpr char kRefreshStatistics[] = "SELECT pgbus.refresh_statistics()";
// Every subscription's backlog, across tenants (0017): tenant, name, ready,
// in flight, oldest unacked age in seconds. $1: most rows.
inline constexpr char kSubscriptionBacklog[] =
    "SELECT tenant_id, subscription, ready, in_flight, oldest_unacked_seconds"
    " FROM pgbus.subscription_backlog($1)";
// Folds the stored-bytes ledger to one row per tenant (0007), and the
// stats counters to one row per topic / subscription (0009).
inline constexpr char kFoldTenantUsage[] = "SELECT pgbus.fold_tenant_usage()";
inline constexpr char kFoldCounters[] = "SELECT pgbus.fold_counters()";

// $1 subscription, $2 acked, $3 dead-lettered.
inline constexpr char kCountSettled[] =
    "INSERT INTO pgbus.counters (tenant_id, subscription, acked, dead_lettered)"
    " VALUES (" PGBUS_TENANT ", $1, $2, $3)";
inline constexpr char kTopicCounters[] =
    "SELECT coalesce(sum(published), 0)::bigint FROM pgbus.counters"
    " WHERE tenant_id = " PGBUS_TENANT " AND topic = $1";
inline constexpr char kSubscriptionCounters[] =
    "SELECT coalesce(sum(c.acked), 0)::bigint, coalesce(sum(c.dead_lettered), 0)::bigint,"
    " (SELECT coalesce(sum(p.published), 0)::bigint FROM pgbus.counters p"
    "   JOIN pgbus.subscriptions s ON s.tenant_id = p.tenant_id"
    "     AND " PGBUS_SUB_MATCHES("s", "p.topic")
    "   WHERE s.tenant_id = " PGBUS_TENANT " AND s.name = $1)"
    " FROM pgbus.counters c WHERE c.tenant_id = " PGBUS_TENANT " AND c.subscription = $1";

// --- Dead letters (0008).
#define PGBUS_DEAD_LETTER_OF(alias, sub)                                    \
  alias ".attributes ? 'pgbus.dead_letter.subscription' AND " alias        \
  ".attributes ->> 'pgbus.dead_letter.subscription' = " sub

// Deletes up to $2 deliveries of subscription $1 that used up
// max_delivery_attempts and are due again, and returns each as a new
// message of the subscription's dead-letter topic, for kInsertMessages in
// the same transaction (a failure moves nothing). An uploaded payload is not
// copied: the dead letter names the original message, Retrieve-able while
// retained. Columns: topic, priority, correlation id, attribute keys,
// attribute values, sha256, payload.
inline constexpr char kTakeExhausted[] =
    "WITH ds AS ("
    "  SELECT s.name, s.max_delivery_attempts, s.dead_letter_topic"
    "  FROM pgbus.subscriptions s JOIN pgbus.topics t"
    "    ON t.tenant_id = s.tenant_id AND t.name = s.dead_letter_topic"
    "  WHERE s.tenant_id = " PGBUS_TENANT " AND s.name = $1 AND s.max_delivery_attempts > 0), "
    "dead AS ("
    "  DELETE FROM pgbus.deliveries d"
    // The due rows locked, by ctid (see kReleaseDue); IN (subquery) was
    // planned as a loop over the subscription's backlog on stale statistics.
    "  WHERE d.tenant_id = " PGBUS_TENANT
    "    AND d.ctid = ANY (ARRAY("
    "      SELECT e.ctid FROM pgbus.deliveries e"
    "      WHERE e.tenant_id = " PGBUS_TENANT " AND e.subscription = $1"
    "        AND e.attempts >= (SELECT ds.max_delivery_attempts FROM ds)"
    "        AND e.visible_at <= now()"
    "        AND (e.expires_at IS NULL OR e.expires_at > now())"
    "      ORDER BY e.visible_at LIMIT $2 FOR UPDATE SKIP LOCKED))"
    "  RETURNING d.message_id, d.attempts, d.last_nack_reason) "
    "SELECT ds.dead_letter_topic, o.priority, o.correlation_id,"
    "  ARRAY(SELECT key FROM jsonb_each_text(a.attributes)),"
    "  ARRAY(SELECT value FROM jsonb_each_text(a.attributes)),"
    "  CASE WHEN o.payload_id IS NULL THEN o.sha256 ELSE sha256(''::bytea) END,"
    "  CASE WHEN o.payload_id IS NULL THEN o.payload ELSE ''::bytea END"
    " FROM dead JOIN pgbus.messages o ON o.tenant_id = " PGBUS_TENANT
    "   AND o.id = dead.message_id"
    " CROSS JOIN ds CROSS JOIN LATERAL (SELECT o.attributes || jsonb_build_object("
    "     'pgbus.dead_letter.subscription', ds.name,"
    "     'pgbus.dead_letter.topic', o.topic,"
    "     'pgbus.dead_letter.message_id', o.id::text,"
    "     'pgbus.dead_letter.attempts', dead.attempts::text,"
    "     'pgbus.dead_letter.reason', coalesce(dead.last_nack_reason, ''))"
    "   || CASE WHEN o.payload_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object("
    "     'pgbus.dead_letter.payload', 'uploaded: Retrieve pgbus.dead_letter.message_id')"
    "   END AS attributes) a"
    " ORDER BY o.id";

// Dead letters of subscription $1 after id $2, at most $3.
inline constexpr char kListDeadLetters[] =
    "SELECT " PGBUS_MESSAGE_COLUMNS " FROM pgbus.messages m"
    " WHERE m.tenant_id = " PGBUS_TENANT " AND " PGBUS_DEAD_LETTER_OF("m", "$1")
    " AND m.id > $2 AND (m.expires_at IS NULL OR m.expires_at > now())"
    " ORDER BY m.id LIMIT $3";

// Deletes up to $3 dead letters of subscription $1 ($2: these ids only,
// '{}': the oldest) and returns each as a message of its original topic,
// without the `pgbus.dead_letter.*` attributes, for kInsertMessages in the
// same transaction. Dead letters of uploaded payloads, and of topics
// deleted since, stay where they are. Columns as kTakeExhausted's.
inline constexpr char kTakeDeadLetters[] =
    "WITH dl AS ("
    "  DELETE FROM pgbus.messages x"
    // An array of the locked rows' ctids: the LIMIT ... SKIP LOCKED
    // subquery runs exactly once (as IN (subquery) it could run again and
    // take more than $3).
    "  WHERE x.tenant_id = " PGBUS_TENANT " AND x.ctid = ANY (ARRAY("
    "    SELECT y.ctid FROM pgbus.messages y"
    "    WHERE y.tenant_id = " PGBUS_TENANT " AND " PGBUS_DEAD_LETTER_OF("y", "$1")
    "      AND (cardinality($2::int8[]) = 0 OR y.id = ANY($2::int8[]))"
    "      AND (y.expires_at IS NULL OR y.expires_at > now())"
    "      AND NOT y.attributes ? 'pgbus.dead_letter.payload'"
    "      AND EXISTS (SELECT 1 FROM pgbus.topics t WHERE t.tenant_id = y.tenant_id"
    "        AND t.name = y.attributes ->> 'pgbus.dead_letter.topic')"
    "    ORDER BY y.id LIMIT $3 FOR UPDATE SKIP LOCKED))"
    "  RETURNING x.id, x.priority, x.correlation_id, x.attributes, x.sha256, x.payload) "
    "SELECT dl.attributes ->> 'pgbus.dead_letter.topic', dl.priority, dl.correlation_id,"
    "  ARRAY(SELECT key FROM jsonb_each_text(a.attributes)),"
    "  ARRAY(SELECT value FROM jsonb_each_text(a.attributes)),"
    "  dl.sha256, dl.payload"
    " FROM dl CROSS JOIN LATERAL (SELECT dl.attributes - ARRAY["
    "   'pgbus.dead_letter.subscription', 'pgbus.dead_letter.topic',"
    "   'pgbus.dead_letter.message_id', 'pgbus.dead_letter.attempts',"
    "   'pgbus.dead_letter.reason'] AS attributes) a"
    " ORDER BY dl.id";

inline constexpr char kTopicStats[] =
    "SELECT count(*) FROM pgbus.messages WHERE tenant_id = " PGBUS_TENANT
    " AND topic = $1 AND (expires_at IS NULL OR expires_at > now())";

inline constexpr char kSubscriptionStats[] =
    "SELECT"
    " (SELECT count(*) FROM pgbus.messages m WHERE m.tenant_id = s.tenant_id"
    "   AND " PGBUS_SUB_MATCHES("s", "m.topic")
    "   AND (m.expires_at IS NULL OR m.expires_at > now())),"
    " count(d.message_id) FILTER (WHERE d.visible_at IS NULL OR d.visible_at <= now()),"
    " count(d.message_id) FILTER (WHERE d.visible_at > now() AND d.lease IS NOT NULL),"
    " coalesce(extract(epoch from now() - min(m.published_at)), 0)::float8"
    " FROM pgbus.subscriptions s"
    " LEFT JOIN pgbus.deliveries d ON d.tenant_id = s.tenant_id AND d.subscription = s.name"
    "  AND (d.expires_at IS NULL OR d.expires_at > now())"
    " LEFT JOIN pgbus.messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id"
    " WHERE s.tenant_id = " PGBUS_TENANT " AND s.name = $1"
    " GROUP BY s.tenant_id, s.name, s.topic, s.topic_regex";


// --- Tenants and API keys (0007).
// Authentication, as pgbusd's role: one key by id, through the owner's
// function. Scopes and patterns never contain commas.
inline constexpr char kLookupApiKey[] =
    "SELECT tenant_id, secret_sha256, scopes, topics, revoked FROM pgbus.api_key_lookup($1)";

#define PGBUS_TENANT_COLUMNS                                                      \
  "t.tenant_id, t.max_message_bytes, t.max_stored_bytes, t.max_publish_rate, "   \
  "t.max_streams, (SELECT coalesce(sum(u.bytes), 0)::bigint FROM pgbus.tenant_usage u "   \
  "WHERE u.tenant_id = t.tenant_id), (extract(epoch from t.created_at) * 1000000)::bigint"

// As pgbusd's role with the tenant set (RLS shows only that tenant's row).
inline constexpr char kLookupTenant[] =
    "SELECT " PGBUS_TENANT_COLUMNS " FROM pgbus.tenants t WHERE t.tenant_id = " PGBUS_TENANT;

// The operator's statements (`pgbusd tenant` / `pgbusd key`, as the owner).
// $1 tenant, $2..$5 quotas (NULL: none)
inline constexpr char kCreateTenant[] =
    "INSERT INTO pgbus.tenants (tenant_id, max_message_bytes, max_stored_bytes, "
    "max_publish_rate, max_streams) VALUES ($1, $2, $3, $4, $5)";
inline constexpr char kUpdateTenant[] =
    "UPDATE pgbus.tenants SET max_message_bytes = $2, max_stored_bytes = $3, "
    "max_publish_rate = $4, max_streams = $5 WHERE tenant_id = $1 RETURNING tenant_id";
inline constexpr char kGetTenant[] =
    "SELECT " PGBUS_TENANT_COLUMNS " FROM pgbus.tenants t WHERE t.tenant_id = $1";
inline constexpr char kListTenants[] =
    "SELECT " PGBUS_TENANT_COLUMNS " FROM pgbus.tenants t ORDER BY t.tenant_id";
// $1 tenant, $2 key id, $3 secret sha256, $4 scopes, $5 topics, $6 description
inline constexpr char kInsertApiKey[] =
    "INSERT INTO pgbus.api_keys (tenant_id, key_id, secret_sha256, scopes, topics, description) "
    "VALUES ($1, $2, $3, $4, $5, $6)";
inline constexpr char kListApiKeys[] =
    "SELECT tenant_id, key_id, scopes, topics, "
    "description, (extract(epoch from created_at) * 1000000)::bigint, "
    "(extract(epoch from revoked_at) * 1000000)::bigint "
    "FROM pgbus.api_keys WHERE tenant_id = $1 ORDER BY created_at, key_id";
inline constexpr char kRevokeApiKey[] =
    "UPDATE pgbus.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1 "
    "RETURNING tenant_id";

// Every statement above, for tests/integration/statements_test.cc, which
// prepares each against the migrated schema as the role that runs it (so a
// typo or a dropped column fails `make test`, not a call in production), and
// fails when a statement of this file is missing here.
enum class Role { kApp, kOwner };
struct Statement {
  const char* name;  // the constant's name, for the test's messages
  const char* text;
  Role role = Role::kApp;
};
inline constexpr Statement kAll[] = {
    {"kSetTenant", kSetTenant},
    {"kBegin", kBegin},
    {"kSchemaMigrated", kSchemaMigrated},
    {"kSchemaVersion", kSchemaVersion},
    {"kPing", kPing},
    {"kCommit", kCommit},
    {"kSetTenantAsyncCommit", kSetTenantAsyncCommit},
    {"kEnsureTenant", kEnsureTenant},
    {"kCreateTopic", kCreateTopic},
    {"kGetTopic", kGetTopic},
    {"kListTopics", kListTopics},
    {"kDeleteTopic", kDeleteTopic},
    {"kCreateSubscription", kCreateSubscription},
    {"kCreatePatternSubscription", kCreatePatternSubscription},
    {"kGetSubscription", kGetSubscription},
    {"kListSubscriptions", kListSubscriptions},
    {"kDeleteSubscription", kDeleteSubscription},
    {"kInsertMessages", kInsertMessages},
    {"kClaimIdempotencyKeys", kClaimIdempotencyKeys},
    {"kIdempotentMessages", kIdempotentMessages},
    {"kNotifyPublish", kNotifyPublish},
    {"kSubscriptionExists", kSubscriptionExists},
    {"kReleaseDue", kReleaseDue},
    {"kClaim", kClaim},
    {"kLockLeases", kLockLeases},
    {"kAck", kAck},
    {"kExtendLease", kExtendLease},
    {"kNack", kNack},
    {"kReleaseLeases", kReleaseLeases},
    {"kRetrieve", kRetrieve},
    {"kReadChunks", kReadChunks},
    {"kCreatePayload", kCreatePayload},
    {"kWriteChunk", kWriteChunk},
    {"kCompletePayload", kCompletePayload},
    {"kDeletePayload", kDeletePayload},
    {"kListMessages", kListMessages},
    {"kSeek", kSeek},
    {"kReapExpired", kReapExpired},
    {"kRefreshStatistics", kRefreshStatistics},
    {"kSubscriptionBacklog", kSubscriptionBacklog},
    {"kFoldTenantUsage", kFoldTenantUsage},
    {"kFoldCounters", kFoldCounters},
    {"kCountSettled", kCountSettled},
    {"kTopicCounters", kTopicCounters},
    {"kSubscriptionCounters", kSubscriptionCounters},
    {"kTakeExhausted", kTakeExhausted},
    {"kListDeadLetters", kListDeadLetters},
    {"kTakeDeadLetters", kTakeDeadLetters},
    {"kTopicStats", kTopicStats},
    {"kSubscriptionStats", kSubscriptionStats},
    {"kLookupApiKey", kLookupApiKey},
    {"kLookupTenant", kLookupTenant},
    {"kCreateTenant", kCreateTenant, Role::kOwner},
    {"kUpdateTenant", kUpdateTenant, Role::kOwner},
    {"kGetTenant", kGetTenant, Role::kOwner},
    {"kListTenants", kListTenants, Role::kOwner},
    {"kInsertApiKey", kInsertApiKey, Role::kOwner},
    {"kListApiKeys", kListApiKeys, Role::kOwner},
    {"kRevokeApiKey", kRevokeApiKey, Role::kOwner},
};

}  // namespace pgbus::store::postgres::sql

#endif  // PGBUS_SERVICE_STORE_POSTGRES_SQL_H_
