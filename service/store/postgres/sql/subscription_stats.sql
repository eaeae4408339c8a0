-- Subscription $1's backlog: messages retained for it, deliveries ready
-- (or due again), in flight (leased), and the age in seconds of the oldest
-- unacked message: the smallest message id (ids ascend with publish time),
-- so one message is read, not one per delivery.
SELECT
  (SELECT count(*) FROM pgbus.live_messages m
   WHERE m.tenant_id = s.tenant_id
     AND (s.topic = m.topic OR (s.topic_regex IS NOT NULL AND m.topic ~ s.topic_regex))),
  d.ready, d.in_flight,
  coalesce((SELECT extract(epoch from now() - m.published_at) FROM pgbus.messages m
            WHERE m.tenant_id = s.tenant_id AND m.id = d.oldest), 0)::float8
FROM pgbus.subscriptions s
CROSS JOIN LATERAL (
  SELECT count(*) FILTER (WHERE e.visible_at IS NULL OR e.visible_at <= now()) AS ready,
    count(*) FILTER (WHERE e.visible_at > now() AND e.lease IS NOT NULL) AS in_flight,
    min(e.message_id) AS oldest
  FROM pgbus.deliveries e
  WHERE e.tenant_id = s.tenant_id AND e.subscription = s.name
    AND (e.expires_at IS NULL OR e.expires_at > now())) d
WHERE s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $1;
