-- As set_tenant.sql, for claims: a claim lost in a crash only makes the
-- message visible again (redelivery, which at-least-once allows), so its
-- commit need not wait for the WAL flush. Publishes and acks keep
-- synchronous commit. $1 tenant.
SELECT set_config('synchronous_commit', 'off', true),
  set_config('plan_cache_mode', 'force_generic_plan', true),
  set_config('enable_seqscan', 'off', true),
  set_config('enable_bitmapscan', 'off', true),
  set_config('enable_hashjoin', 'off', true),
  set_config('enable_mergejoin', 'off', true),
  set_config('pgbus.tenant_id', $1, true);
