DELETE FROM pgbus.subscriptions WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id',
  true))
AND name = $1 RETURNING name;
