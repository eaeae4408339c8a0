-- How many messages topic $1 retains.
SELECT count(*) FROM pgbus.messages
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND topic = $1
  AND (expires_at IS NULL OR expires_at > now());
