-- Tenant $1's quotas, as create_tenant.sql's. No row when there is no
-- such tenant.
UPDATE pgbus.tenants
SET max_message_bytes = $2, max_stored_bytes = $3, max_publish_rate = $4, max_streams = $5
WHERE tenant_id = $1
RETURNING tenant_id;
