-- Ordering keys: within a subscription, a message with an ordering key is
-- claimable only when no earlier message with the same key is still there
-- (unacked: pending, in flight or backing off). The key is copied into the
-- delivery row so that the check is one index probe.
ALTER TABLE pgbus.deliveries ADD COLUMN ordering_key text;
CREATE INDEX deliveries_by_ordering_key
  ON pgbus.deliveries (tenant_id, subscription, ordering_key, message_id)
  WHERE ordering_key IS NOT NULL;
