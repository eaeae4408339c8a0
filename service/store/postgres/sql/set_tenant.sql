-- The tenant and the plan settings, local to the transaction; also
-- switches the tenant inside a transaction (a group commit spanning
-- tenants). $1 tenant.
--
-- Every statement of this directory is written for index access: probes by
-- key, ordered index scans under a LIMIT, nested loops over a handful of
-- rows. The planner chooses otherwise when statistics are stale (a table
-- analysed while empty and filled since: until autovacuum visits it, a
-- sequential or bitmap scan of a whole subscription looks cheap), and then a
-- claim or an ack costs the backlog instead of its own rows. So pgbusd's
-- transactions rule out the shapes whose cost grows with a table; where
-- nothing else is possible the planner still uses them. Plans are checked by
-- tests/integration/plan_test.cc and statements_test.cc.
--
-- And every statement runs its generic plan, made once per session: the one
-- those tests check. Left to choose, Postgres planned the publish insert
-- again at every execution (a custom plan knows how long the arrays are, so
-- the generic one always looked dearer), and planning took 0.78 ms of its
-- 0.99 ms at 1,000 msg/s.
SELECT set_config('pgbus.tenant_id', $1, true),
  set_config('plan_cache_mode', 'force_generic_plan', true),
  set_config('enable_seqscan', 'off', true),
  set_config('enable_bitmapscan', 'off', true),
  set_config('enable_hashjoin', 'off', true),
  set_config('enable_mergejoin', 'off', true);
