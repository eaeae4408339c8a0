-- Subscriptions of topic $1 ('': all) after name $2, at most $3. Columns
-- as get_subscription.sql's.
SELECT name, topic_or_pattern, filter, ack_deadline_ms, max_delivery_attempts,
  dead_letter_topic, min_backoff_ms, max_backoff_ms, created_us
FROM pgbus.subscription_rows
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
  AND ($1 = '' OR topic = $1 OR topic_pattern = $1) AND name > $2
ORDER BY name LIMIT $3;
