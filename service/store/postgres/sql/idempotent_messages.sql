-- The messages of duplicate keys (a new statement: it sees keys that
-- concurrent publishers committed meanwhile). $1 topics, $2 keys.
SELECT k.topic, k.key, k.message_id FROM pgbus.idempotency_keys k
JOIN unnest($1::text[], $2::text[]) AS i(topic, key) ON k.topic = i.topic AND k.key = i.key
WHERE k.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
  AND k.message_id IS NOT NULL;
