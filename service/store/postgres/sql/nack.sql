-- As ack.sql, for subscription $2's rows: ends the leases; each is
-- visible again after min_backoff doubled per earlier attempt, at most
-- max_backoff ($3 the reason, '': none). Ready at once without backoff,
-- unless the delivery used up max_delivery_attempts and waits for
-- take_exhausted.sql (held and due: release_due.sql decides).
UPDATE pgbus.deliveries d SET lease = NULL, last_nack_reason = NULLIF($3, ''),
  visible_at = CASE
    WHEN least(s.max_backoff, s.min_backoff * power(2, least(greatest(d.attempts - 1, 0), 30)))
        > interval '0'
      OR (s.max_delivery_attempts > 0 AND d.attempts >= s.max_delivery_attempts)
    THEN now()
      + least(s.max_backoff, s.min_backoff * power(2, least(greatest(d.attempts - 1, 0), 30)))
    END
-- The subscription by its name, not by each row's: one probe, not one
-- scan of the rows per subscription of the tenant.
FROM pgbus.subscriptions s
WHERE d.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
  AND d.ctid = ANY ($1::tid[])
  AND s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $2;
