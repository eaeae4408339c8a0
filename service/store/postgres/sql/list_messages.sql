-- Messages of correlation id $1 after id $2, at most $3. Columns: id,
-- topic, priority, size, sha256, published, expires, deliver at,
-- correlation id, ordering key, idempotency key, attribute keys and values,
-- whether the payload was uploaded; see pgbus.live_messages
-- (migrations/0021_row_views.sql) and ReadMessage (pg_rows.cc).
SELECT id, topic, priority, size, sha256, published_at, expires_at, deliver_at,
  correlation_id, ordering_key, idempotency_key, attribute_keys, attribute_values, uploaded
FROM pgbus.live_messages
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
  AND correlation_id = $1 AND id > $2
ORDER BY id LIMIT $3;
