-- The tenant of the transaction, as pgbusd's role (RLS shows only that
-- tenant's row). Columns: tenant, max message bytes, max stored bytes, max
-- publish rate, max streams (NULL: no quota), bytes stored, created (µs
-- since the Unix epoch).
SELECT t.tenant_id, t.max_message_bytes, t.max_stored_bytes, t.max_publish_rate, t.max_streams,
  (SELECT coalesce(sum(u.bytes), 0)::bigint FROM pgbus.tenant_usage u
   WHERE u.tenant_id = t.tenant_id),
  (extract(epoch from t.created_at) * 1000000)::bigint
FROM pgbus.tenants t
WHERE t.tenant_id = (SELECT current_setting('pgbus.tenant_id', true));
