-- Claims in one statement: locks up to $2 ready rows in claim order (rows
-- other claimers hold are skipped; a row whose ordering key has an earlier
-- unacked message in the subscription waits for it), keeps the prefix whose
-- payloads fit the byte budget $3 (the first row whatever its size when $6),
-- leases those to
-- $4 until now + $5 ms, and returns them with their messages. $1
-- subscription. Walks deliveries_ready only: its cost does not grow with
-- the messages in flight. Columns: a message's (see list_messages.sql),
-- inline payload, attempt, lease expiry.
WITH locked AS (
  SELECT ctid AS row_id, message_id, size, priority FROM pgbus.deliveries d
  WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND subscription = $1
    AND visible_at IS NULL
    AND (expires_at IS NULL OR expires_at > now())
    AND (ordering_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM pgbus.deliveries e WHERE e.tenant_id = d.tenant_id
        AND e.subscription = d.subscription AND e.ordering_key = d.ordering_key
        AND e.message_id < d.message_id
        AND (e.expires_at IS NULL OR e.expires_at > now())))
  ORDER BY priority DESC, message_id LIMIT $2 FOR UPDATE SKIP LOCKED),
chosen AS MATERIALIZED (
  SELECT row_id FROM (
    SELECT row_id, sum(size) OVER w AS running, row_number() OVER w AS n
    FROM locked WINDOW w AS (ORDER BY priority DESC, message_id
      ROWS UNBOUNDED PRECEDING)) r
  WHERE running <= $3 OR (n = 1 AND $6)),
c AS (
  UPDATE pgbus.deliveries d SET attempts = d.attempts + 1, lease = $4,
    visible_at = now() + ($5::bigint * interval '1 millisecond')
  -- The rows `locked` holds, by ctid: a TID scan per chosen row, whatever
  -- the statistics say (by message id, stale statistics made the planner
  -- scan the subscription's whole backlog). A locked row cannot move
  -- before this update. `chosen` is materialized: the LIMIT ... SKIP
  -- LOCKED subquery runs exactly once. See "Rows by ctid" in README.md.
  FROM chosen
  WHERE d.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND d.ctid = chosen.row_id
  RETURNING d.message_id, d.attempts, d.visible_at)
SELECT m.id, m.topic, m.priority, m.size, m.sha256, m.published_at, m.expires_at,
  m.deliver_at, m.correlation_id, m.ordering_key, m.idempotency_key, m.attribute_keys,
  m.attribute_values, m.uploaded, m.payload, c.attempts, c.visible_at
FROM c
-- Each message by one probe of messages_pkey. The id as a range, in id
-- order, under LIMIT 1: only messages_pkey yields that order, so the
-- planner cannot take another index of the tenant and filter it by id. (As
-- a join on `m.id = c.message_id`, or with that equality here, the generic
-- plan made on an empty table read the tenant's messages by tenant alone,
-- for each claimed row: 440,000 rows filtered out for 200 claimed, 117 ms,
-- until the reaper's refresh of statistics replanned it.)
CROSS JOIN LATERAL (
  SELECT * FROM pgbus.live_messages m1
  WHERE m1.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND m1.id >= c.message_id AND m1.id <= c.message_id
  ORDER BY m1.id
  LIMIT 1) m
ORDER BY m.priority DESC, m.id;
