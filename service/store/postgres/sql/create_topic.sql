-- $1 name, $2 retention ms, $3 max bytes, $4 ttl ms (0: none), $5 dedup ms.
-- Returns the name; pgbusd reads the new topic with get_topic.sql in the
-- same round trip.
INSERT INTO pgbus.topics (tenant_id, name, retention, max_message_bytes, message_ttl,
  dedup_window)
VALUES ((SELECT current_setting('pgbus.tenant_id', true)), $1,
  $2::bigint * interval '1 millisecond', $3,
  CASE WHEN $4::bigint = 0 THEN NULL ELSE $4::bigint * interval '1 millisecond' END,
  $5::bigint * interval '1 millisecond')
RETURNING name;
