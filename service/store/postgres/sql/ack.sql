-- Acks in one statement (one round trip, on every message's path): ends
-- the leases of subscription $1 given as $2 message ids, $3 attempts, $4
-- lease tokens (parallel arrays): the messages are done. Returns the key
-- (message id, attempt, lease) of each delivery deleted, and counts them
-- as acked in the stats ledger (0009). A delivery whose lease ran out but
-- that no stream has claimed again is still acked: the work was done, and
-- nobody else holds it.
--
-- The rows are found as lock_leases.sql finds them for the other lease
-- changes: one primary-key probe per key (a correlated LIMIT 1 subquery,
-- never a scan of the subscription), FOR UPDATE; then deleted by ctid (see
-- "Rows by ctid" in README.md). A key given twice finds its row twice; it
-- is deleted and returned once.
--
-- A row that a concurrent transaction changed while this statement waited
-- for its lock (a lease extension, keeping the lease) is locked in its new
-- version but not deleted: that version is newer than the statement's
-- snapshot, so the delete by ctid does not see it. So the store runs the
-- keys this statement did not return once more, in a new transaction,
-- after lock_leases.sql: that statement locks the newest versions, and
-- this one, with a snapshot taken after those locks, deletes them.
WITH found AS MATERIALIZED (
  SELECT x.row_id
  FROM unnest($2::bigint[], $3::int[], $4::bigint[]) AS k(message_id, attempts, lease)
  CROSS JOIN LATERAL (
    SELECT e.ctid AS row_id FROM pgbus.deliveries e
    WHERE e.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
      AND e.subscription = $1 AND e.message_id = k.message_id
      AND e.attempts = k.attempts AND e.lease = k.lease
    LIMIT 1 FOR UPDATE) x
  LIMIT cardinality($2::bigint[])),
gone AS (
  DELETE FROM pgbus.deliveries d USING found
  WHERE d.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND d.ctid = found.row_id
  RETURNING d.message_id, d.attempts, d.lease),
counted AS (
  INSERT INTO pgbus.counters (tenant_id, subscription, acked)
  SELECT (SELECT current_setting('pgbus.tenant_id', true)), $1, count(*)
  FROM gone HAVING count(*) > 0)
SELECT message_id, attempts, lease FROM gone;
