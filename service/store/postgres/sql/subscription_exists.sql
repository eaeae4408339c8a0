-- One row when subscription $1 exists.
SELECT 1 FROM pgbus.subscriptions
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND name = $1;
