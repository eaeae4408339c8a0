-- Tenant $1's keys. Columns: tenant, key id, scopes, topic patterns,
-- description, created and revoked (µs since the Unix epoch; NULL: not
-- revoked).
SELECT tenant_id, key_id, scopes, topics, description,
  (extract(epoch from created_at) * 1000000)::bigint,
  (extract(epoch from revoked_at) * 1000000)::bigint
FROM pgbus.api_keys
WHERE tenant_id = $1
ORDER BY created_at, key_id;
