-- How many messages topic $1 retains.
SELECT count(*) FROM pgbus.live_messages
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND topic = $1;
