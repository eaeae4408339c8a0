-- Dead letters of subscription $1 after id $2, at most $3. Columns as
-- list_messages.sql's.
SELECT id, topic, priority, size, sha256, published_at, expires_at, deliver_at,
  correlation_id, ordering_key, idempotency_key, attribute_keys, attribute_values, uploaded
FROM pgbus.live_messages
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
  AND attributes ? 'pgbus.dead_letter.subscription'
  AND attributes ->> 'pgbus.dead_letter.subscription' = $1 AND id > $2
ORDER BY id LIMIT $3;
