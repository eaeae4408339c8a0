-- Deletes up to $2 deliveries of subscription $1 that used up
-- max_delivery_attempts and are due again, and returns each as a new
-- message of the subscription's dead-letter topic, for insert_messages.sql in
-- the same transaction (a failure moves nothing). An uploaded payload is not
-- copied: the dead letter names the original message, Retrieve-able while
-- retained. Columns: topic, priority, correlation id, attribute keys,
-- attribute values, sha256, payload.
WITH ds AS (
  SELECT s.name, s.max_delivery_attempts, s.dead_letter_topic
  FROM pgbus.subscriptions s JOIN pgbus.topics t
    ON t.tenant_id = s.tenant_id AND t.name = s.dead_letter_topic
  WHERE s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $1
    AND s.max_delivery_attempts > 0),
exhausted AS MATERIALIZED (
  SELECT e.ctid AS row_id FROM pgbus.deliveries e
  WHERE e.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND e.subscription = $1
    AND e.attempts >= (SELECT ds.max_delivery_attempts FROM ds)
    AND e.visible_at <= now()
    AND (e.expires_at IS NULL OR e.expires_at > now())
  ORDER BY e.visible_at LIMIT $2 FOR UPDATE SKIP LOCKED),
dead AS (
  -- The rows `exhausted` locked, by ctid (see "Rows by ctid" in
  -- README.md); IN (subquery) was planned as a loop over the
  -- subscription's backlog on stale statistics.
  DELETE FROM pgbus.deliveries d USING exhausted
  WHERE d.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND d.ctid = exhausted.row_id
  RETURNING d.message_id, d.attempts, d.last_nack_reason)
SELECT ds.dead_letter_topic, o.priority, o.correlation_id,
  ARRAY(SELECT key FROM jsonb_each_text(a.attributes)),
  ARRAY(SELECT value FROM jsonb_each_text(a.attributes)),
  CASE WHEN o.payload_id IS NULL THEN o.sha256 ELSE sha256(''::bytea) END,
  CASE WHEN o.payload_id IS NULL THEN o.payload ELSE ''::bytea END
FROM dead
-- Each message by one probe of messages_pkey, as claim.sql joins them.
CROSS JOIN LATERAL (
  SELECT * FROM pgbus.messages o1
  WHERE o1.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND o1.id >= dead.message_id AND o1.id <= dead.message_id
  ORDER BY o1.id
  LIMIT 1) o
CROSS JOIN ds CROSS JOIN LATERAL (SELECT o.attributes || jsonb_build_object(
     'pgbus.dead_letter.subscription', ds.name,
     'pgbus.dead_letter.topic', o.topic,
     'pgbus.dead_letter.message_id', o.id::text,
     'pgbus.dead_letter.attempts', dead.attempts::text,
     'pgbus.dead_letter.reason', coalesce(dead.last_nack_reason, ''))
   || CASE WHEN o.payload_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object(
     'pgbus.dead_letter.payload', 'uploaded: Retrieve pgbus.dead_letter.message_id')
   END AS attributes) a
ORDER BY o.id;
