-- Claims idempotency keys. $1 topics, $2 keys (unique pairs). Returns the
-- pairs claimed now (new, or taken over after the window ran out); the
-- others are duplicates (or of a missing topic).
INSERT INTO pgbus.idempotency_keys (tenant_id, topic, key, expires_at)
SELECT t.tenant_id, t.name, i.key, now() + t.dedup_window
FROM unnest($1::text[], $2::text[]) AS i(topic, key)
JOIN pgbus.topics t ON t.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
  AND t.name = i.topic
ON CONFLICT (tenant_id, topic, key) DO UPDATE
  SET expires_at = EXCLUDED.expires_at, message_id = NULL
  WHERE pgbus.idempotency_keys.expires_at <= now()
RETURNING topic, key;
