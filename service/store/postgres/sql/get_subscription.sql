-- $1 name. Columns: name, topic (or pattern), filter, ack deadline ms, max
-- delivery attempts, dead-letter topic, min and max backoff ms, created (µs
-- since the Unix epoch); see pgbus.subscription_rows
-- (migrations/0021_row_views.sql).
SELECT name, topic_or_pattern, filter, ack_deadline_ms, max_delivery_attempts,
  dead_letter_topic, min_backoff_ms, max_backoff_ms, created_us
FROM pgbus.subscription_rows
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND name = $1;
