-- Subscription $1's counters: acked, dead-lettered, and published to the
-- topics it receives.
SELECT coalesce(sum(c.acked), 0)::bigint, coalesce(sum(c.dead_lettered), 0)::bigint,
  (SELECT coalesce(sum(p.published), 0)::bigint FROM pgbus.counters p
   JOIN pgbus.subscriptions s ON s.tenant_id = p.tenant_id
     AND (s.topic = p.topic OR (s.topic_regex IS NOT NULL AND p.topic ~ s.topic_regex))
   WHERE s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $1)
FROM pgbus.counters c
WHERE c.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND c.subscription = $1;
