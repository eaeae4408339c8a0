-- Which leases of subscription $1 ($2 message ids, $3 attempts, $4 lease
-- tokens: parallel arrays) are still held, and until when: each held one's
-- key and its row's visible_at. A lease is held while its row names it and
-- its deadline has not passed; one that was acked, nacked, given back or
-- taken by another claim has no row that names it. Read-only, one probe of
-- the primary key per key (as lock_leases.sql, without the lock): the
-- Dispatcher's check of leases that a stream has held for a while, which
-- returns the credit of those settled through another replica. The
-- deadline is compared outside the probe: inside it, the planner walked
-- the subscription's held rows instead (deliveries_held, 3,689 rows
-- filtered per key in plan_test).
SELECT k.message_id, k.attempts, k.lease, x.visible_at
FROM unnest($2::bigint[], $3::int[], $4::bigint[]) AS k(message_id, attempts, lease)
CROSS JOIN LATERAL (
  SELECT e.visible_at FROM pgbus.deliveries e
  WHERE e.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND e.subscription = $1
    AND e.message_id = k.message_id AND e.attempts = k.attempts
    AND e.lease = k.lease LIMIT 1) x
WHERE x.visible_at > now();
