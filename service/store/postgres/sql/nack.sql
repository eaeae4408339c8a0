-- As ack.sql, for subscription $2's rows: ends the leases; each is
-- visible again after min_backoff doubled per earlier attempt, at most
-- max_backoff ($3 the reason, '': none). Ready at once without backoff,
-- unless the delivery used up max_delivery_attempts and waits for
-- take_exhausted.sql (held and due: release_due.sql decides).
--
-- The subscription by its name, not by each row's: one probe, not one
-- scan of the rows per subscription of the tenant. Materialized: looked up
-- once, not for each row (as a join, the generic plan made on a table not
-- yet analysed did that, and read all the tenant's subscriptions each time
-- by the index on their topics).
WITH s AS MATERIALIZED (
  SELECT s.min_backoff, s.max_backoff, s.max_delivery_attempts FROM pgbus.subscriptions s
  WHERE s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $2)
UPDATE pgbus.deliveries d SET lease = NULL, last_nack_reason = NULLIF($3, ''),
  visible_at = CASE
    WHEN least(s.max_backoff, s.min_backoff * power(2, least(greatest(d.attempts - 1, 0), 30)))
        > interval '0'
      OR (s.max_delivery_attempts > 0 AND d.attempts >= s.max_delivery_attempts)
    THEN now()
      + least(s.max_backoff, s.min_backoff * power(2, least(greatest(d.attempts - 1, 0), 30)))
    END
-- The rows $1 by ctid (see "Rows by ctid" in README.md).
FROM (SELECT row_id FROM unnest($1::tid[]) AS u(row_id) LIMIT cardinality($1::tid[])) k, s
WHERE d.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND d.ctid = k.row_id;
