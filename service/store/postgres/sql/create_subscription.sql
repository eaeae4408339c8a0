-- $1 name, $2 topic, $3 filter, $4 ack deadline ms, $5 max attempts,
-- $6 dead-letter topic, $7 min backoff ms, $8 max backoff ms, $9 the
-- filter as a jsonpath ('': none). Returns the name, or no row when the
-- topic does not exist (nothing is inserted). pgbusd reads the new
-- subscription with get_subscription.sql in the same round trip.
INSERT INTO pgbus.subscriptions (tenant_id, name, topic, filter, ack_deadline,
  max_delivery_attempts, dead_letter_topic, min_backoff, max_backoff, filter_path)
SELECT t.tenant_id, $1, t.name, $3, $4::bigint * interval '1 millisecond', $5, $6,
  $7::bigint * interval '1 millisecond', $8::bigint * interval '1 millisecond',
  NULLIF($9, '')::jsonpath
FROM pgbus.topics t
WHERE t.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND t.name = $2
RETURNING name;
