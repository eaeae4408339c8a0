-- $1 name. Columns: name, retention ms, max message bytes, ttl ms (0: the
-- retention), dedup window ms, created (µs since the Unix epoch); see
-- pgbus.topic_rows (migrations/0021_row_views.sql).
SELECT name, retention_ms, max_message_bytes, message_ttl_ms, dedup_window_ms, created_us
FROM pgbus.topic_rows
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND name = $1;
