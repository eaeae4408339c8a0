-- $1 subscription, $2 time (µs since the Unix epoch).
INSERT INTO pgbus.deliveries (tenant_id, subscription, message_id, priority, size,
  visible_at, expires_at, ordering_key)
SELECT m.tenant_id, s.name, m.id, m.priority, m.size, NULL::timestamptz, m.expires_at,
  m.ordering_key
FROM pgbus.subscriptions s JOIN pgbus.messages m
  ON m.tenant_id = s.tenant_id AND (s.topic = m.topic OR (s.topic_regex IS NOT NULL
    AND m.topic ~ s.topic_regex))
WHERE s.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND s.name = $1
  AND m.published_at >= 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'
  AND (m.expires_at IS NULL OR m.expires_at > now())
  AND (s.filter_path IS NULL OR jsonb_path_match(m.attributes, s.filter_path))
ON CONFLICT (tenant_id, subscription, message_id)
DO UPDATE SET visible_at = now(), lease = NULL;
