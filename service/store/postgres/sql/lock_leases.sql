-- Locks the rows of subscription $1 that hold the leases $2 message ids,
-- $3 attempts, $4 lease tokens (parallel arrays); returns each row's ctid
-- with its key. Each key is one probe of the primary key (a correlated
-- LIMIT 1 subquery: the planner cannot turn it into a scan of the
-- subscription, as a generic plan of a join did on stale statistics: 0.7 s
-- per ack with 100,000 queued). nack.sql, extend_lease.sql and
-- release_leases.sql then change exactly those rows by ctid (a TID scan),
-- in the same transaction: the lock keeps each row where it is until then.
-- (ack.sql finds and deletes in one statement; it runs after this one for
-- the keys it missed the first time.)
SELECT x.row_id, k.message_id, k.attempts, k.lease
FROM unnest($2::bigint[], $3::int[], $4::bigint[]) AS k(message_id, attempts, lease)
CROSS JOIN LATERAL (
  SELECT e.ctid AS row_id FROM pgbus.deliveries e
  WHERE e.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND e.subscription = $1
    AND e.message_id = k.message_id AND e.attempts = k.attempts
    AND e.lease = k.lease LIMIT 1 FOR UPDATE) x;
