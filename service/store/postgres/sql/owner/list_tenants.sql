-- Every tenant, for the operator. Columns as lookup_tenant.sql's.
SELECT t.tenant_id, t.max_message_bytes, t.max_stored_bytes, t.max_publish_rate, t.max_streams,
  (SELECT coalesce(sum(u.bytes), 0)::bigint FROM pgbus.tenant_usage u
   WHERE u.tenant_id = t.tenant_id),
  (extract(epoch from t.created_at) * 1000000)::bigint
FROM pgbus.tenants t
ORDER BY t.tenant_id;
