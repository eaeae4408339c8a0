-- As create_subscription.sql, for a topic pattern ($2), with $10 its
-- regex; the pattern needs no existing topic. Returns the name.
INSERT INTO pgbus.subscriptions (tenant_id, name, topic, topic_pattern, topic_regex,
  filter, ack_deadline, max_delivery_attempts, dead_letter_topic, min_backoff, max_backoff,
  filter_path)
VALUES ((SELECT current_setting('pgbus.tenant_id', true)), $1, NULL, $2, $10, $3,
  $4::bigint * interval '1 millisecond', $5, $6,
  $7::bigint * interval '1 millisecond', $8::bigint * interval '1 millisecond',
  NULLIF($9, '')::jsonpath)
RETURNING name;
