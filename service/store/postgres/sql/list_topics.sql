-- Topics after name $1, at most $2. Columns as get_topic.sql's.
SELECT name, retention_ms, max_message_bytes, message_ttl_ms, dedup_window_ms, created_us
FROM pgbus.topic_rows
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND name > $1
ORDER BY name LIMIT $2;
