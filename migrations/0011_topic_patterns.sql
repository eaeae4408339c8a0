-- Subscriptions on a topic pattern (`orders.*`, `orders.>`): such a
-- subscription has no `topic` (so no foreign key to one topic) but its
-- pattern, and the pattern as a POSIX regular expression that the publish
-- statement matches each message's topic against, so topics created later
-- are covered too.
ALTER TABLE pgbus.subscriptions ALTER COLUMN topic DROP NOT NULL;
ALTER TABLE pgbus.subscriptions
  ADD COLUMN topic_pattern text,
  ADD COLUMN topic_regex text,
  ADD CONSTRAINT subscriptions_topic_or_pattern
    CHECK ((topic IS NULL) <> (topic_pattern IS NULL)
           AND (topic_pattern IS NULL) = (topic_regex IS NULL));
CREATE INDEX subscriptions_by_pattern ON pgbus.subscriptions (tenant_id)
  WHERE topic_regex IS NOT NULL;
