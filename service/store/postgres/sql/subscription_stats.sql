-- Subscription $1's backlog: messages retained for it, deliveries ready,
-- in flight (leased), and the age in seconds of the oldest unacked one.
-- (pgbus.subscription_backlog, migration 0017, counts the same for every
-- subscription, for the metrics.)
SELECT
(SELECT count(*) FROM pgbus.messages m WHERE m.tenant_id = s.tenant_id
   AND (s.topic = m.topic OR (s.topic_regex IS NOT NULL AND m.topic ~ s.topic_regex))
   AND (m.expires_at IS NULL OR m.expires_at > now())),
count(d.message_id) FILTER (WHERE d.visible_at IS NULL OR d.visible_at <= now()),
count(d.message_id) FILTER (WHERE d.visible_at > now() AND d.lease IS NOT NULL),
coalesce(extract(epoch from now() - min(m.published_at)), 0)::float8
FROM pgbus.subscriptions s
LEFT JOIN pgbus.deliveries d ON d.tenant_id = s.tenant_id AND d.subscription = s.name
  AND (d.expires_at IS NULL OR d.expires_at > now())
LEFT JOIN pgbus.messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id
WHERE s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $1
GROUP BY s.tenant_id, s.name, s.topic, s.topic_regex;
