-- Deliveries of a subscription are ready (visible_at NULL: the claim index
-- holds only these) or held until visible_at (leased, backing off after a
-- nack, or published with deliver_at); see migrations/0013_hot_path.sql.
--
-- Makes up to $2 held deliveries of subscription $1 whose time has come
-- ready again, earliest first, skipping rows other claimers hold. A delivery
-- that used up max_delivery_attempts stays held for take_exhausted.sql while its
-- dead-letter topic exists (otherwise it goes on being delivered rather than
-- be stuck). Reads only due rows (deliveries_held), never the backlog.
WITH due AS MATERIALIZED (
  SELECT e.ctid AS row_id FROM pgbus.deliveries e
  WHERE e.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
    AND e.subscription = $1
    AND e.visible_at <= now()
    AND e.attempts < coalesce((SELECT s.max_delivery_attempts FROM pgbus.subscriptions s
      JOIN pgbus.topics t ON t.tenant_id = s.tenant_id AND t.name = s.dead_letter_topic
      WHERE s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $1
        AND s.max_delivery_attempts > 0), 2147483647)
  ORDER BY e.visible_at LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE pgbus.deliveries d SET visible_at = NULL
-- The rows `due` locked, by ctid (see "Rows by ctid" in README.md).
FROM due
WHERE d.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
  AND d.ctid = due.row_id;
