-- The columns pgbusd reads of a topic, a subscription and a message, each
-- written once (issue 13): the statements of service/store/postgres/sql/
-- select them from these views instead of repeating the expressions. The
-- views are plain (Postgres inlines them into each statement: the plans are
-- the tables') and security_invoker: they read as the caller, so the
-- tables' row-level security applies to the app role as it does without
-- them (tests/integration/rls_test.cc).

-- Durations in ms, times in µs since the Unix epoch, as pgbusd binds them.
CREATE VIEW pgbus.topic_rows WITH (security_invoker = true) AS
SELECT tenant_id, name,
       (extract(epoch from retention) * 1000)::bigint AS retention_ms,
       max_message_bytes,
       coalesce((extract(epoch from message_ttl) * 1000)::bigint, 0) AS message_ttl_ms,
       (extract(epoch from dedup_window) * 1000)::bigint AS dedup_window_ms,
       (extract(epoch from created_at) * 1000000)::bigint AS created_us
  FROM pgbus.topics;

CREATE VIEW pgbus.subscription_rows WITH (security_invoker = true) AS
SELECT tenant_id, name, topic, topic_pattern,
       coalesce(topic, topic_pattern) AS topic_or_pattern,
       filter,
       (extract(epoch from ack_deadline) * 1000)::bigint AS ack_deadline_ms,
       max_delivery_attempts, dead_letter_topic,
       (extract(epoch from min_backoff) * 1000)::bigint AS min_backoff_ms,
       (extract(epoch from max_backoff) * 1000)::bigint AS max_backoff_ms,
       (extract(epoch from created_at) * 1000000)::bigint AS created_us
  FROM pgbus.subscriptions;

-- Messages that have not expired (the reaper deletes them later), with
-- their attributes as two parallel arrays, keys and values, in one order.
CREATE VIEW pgbus.live_messages WITH (security_invoker = true) AS
SELECT tenant_id, id, topic, priority, size, sha256, published_at, expires_at, deliver_at,
       correlation_id, ordering_key, idempotency_key, attributes,
       ARRAY(SELECT key FROM jsonb_each_text(attributes)) AS attribute_keys,
       ARRAY(SELECT value FROM jsonb_each_text(attributes)) AS attribute_values,
       payload_id IS NOT NULL AS uploaded,
       payload, payload_id
  FROM pgbus.messages
 WHERE expires_at IS NULL OR expires_at > now();
