-- $1 id. Columns: a message's (see list_messages.sql), inline payload
-- (whole: it is verified before any range of it is returned), payload id,
-- chunk size.
SELECT m.id, m.topic, m.priority, m.size, m.sha256, m.published_at, m.expires_at,
  m.deliver_at, m.correlation_id, m.ordering_key, m.idempotency_key, m.attribute_keys,
  m.attribute_values, m.uploaded, m.payload, p.id, p.chunk_size
FROM pgbus.live_messages m
LEFT JOIN pgbus.payloads p ON p.tenant_id = m.tenant_id AND p.id = m.payload_id
WHERE m.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND m.id = $1;
