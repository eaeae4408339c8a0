-- The operator's statements (`pgbusd tenant` / `pgbusd key`) run as the
-- schema owner. $1 tenant, $2..$5 quotas: max message bytes, max stored
-- bytes, max publish rate, max streams (NULL: none).
INSERT INTO pgbus.tenants (tenant_id, max_message_bytes, max_stored_bytes, max_publish_rate,
  max_streams)
VALUES ($1, $2, $3, $4, $5);
