-- $1 name. No row when there was no such topic.
DELETE FROM pgbus.topics
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND name = $1
RETURNING name;
