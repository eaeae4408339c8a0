-- Deletes up to $3 dead letters of subscription $1 ($2: these ids only,
-- '{}': the oldest) and returns each as a message of its original topic,
-- without the `pgbus.dead_letter.*` attributes, for insert_messages.sql in the
-- same transaction. Dead letters of uploaded payloads, and of topics
-- deleted since, stay where they are. Columns as take_exhausted.sql's.
WITH taken AS MATERIALIZED (
  SELECT y.ctid AS row_id FROM pgbus.messages y
  WHERE y.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND y.attributes ? 'pgbus.dead_letter.subscription'
    AND y.attributes ->> 'pgbus.dead_letter.subscription' = $1
    AND (cardinality($2::int8[]) = 0 OR y.id = ANY($2::int8[]))
    AND (y.expires_at IS NULL OR y.expires_at > now())
    AND NOT y.attributes ? 'pgbus.dead_letter.payload'
    AND EXISTS (SELECT 1 FROM pgbus.topics t WHERE t.tenant_id = y.tenant_id
      AND t.name = y.attributes ->> 'pgbus.dead_letter.topic')
  ORDER BY y.id LIMIT $3 FOR UPDATE SKIP LOCKED),
dl AS (
  -- The rows `taken` locked, by ctid (see "Rows by ctid" in README.md);
  -- materialized, the LIMIT ... SKIP LOCKED subquery runs exactly once (as
  -- IN (subquery) it could run again and take more than $3).
  DELETE FROM pgbus.messages x USING taken
  WHERE x.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND x.ctid = taken.row_id
  RETURNING x.id, x.priority, x.correlation_id, x.attributes, x.sha256, x.payload)
SELECT dl.attributes ->> 'pgbus.dead_letter.topic', dl.priority, dl.correlation_id,
  ARRAY(SELECT key FROM jsonb_each_text(a.attributes)),
  ARRAY(SELECT value FROM jsonb_each_text(a.attributes)),
  dl.sha256, dl.payload
FROM dl CROSS JOIN LATERAL (SELECT dl.attributes - ARRAY[
   'pgbus.dead_letter.subscription', 'pgbus.dead_letter.topic',
   'pgbus.dead_letter.message_id', 'pgbus.dead_letter.attempts',
   'pgbus.dead_letter.reason'] AS attributes) a
ORDER BY dl.id;
