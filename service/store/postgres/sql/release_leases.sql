-- As nack.sql ($2 subscription), for leases a stopping replica gives
-- back: no backoff (the consumer did not fail; its stream was ended), ready
-- at once unless exhausted (then held and due, for take_exhausted.sql, as
-- an expired lease would be). The attempt count stays.
WITH s AS MATERIALIZED (
  SELECT s.max_delivery_attempts FROM pgbus.subscriptions s
  WHERE s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $2)
UPDATE pgbus.deliveries d SET lease = NULL,
  visible_at = CASE
    WHEN s.max_delivery_attempts > 0 AND d.attempts >= s.max_delivery_attempts THEN now()
    END
-- The rows $1 by ctid and the subscription once, as nack.sql.
FROM (SELECT row_id FROM unnest($1::tid[]) AS u(row_id) LIMIT cardinality($1::tid[])) k, s
WHERE d.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND d.ctid = k.row_id;
