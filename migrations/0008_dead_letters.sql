-- Dead-letter topics. A delivery that used up its subscription's
-- max_delivery_attempts is moved, in one statement, to a new message in the
-- subscription's dead_letter_topic (attributes `pgbus.dead_letter.*` say
-- where it came from); the last nack reason travels with it.
ALTER TABLE pgbus.deliveries ADD COLUMN last_nack_reason text;

-- Dead letters of one subscription (ListDeadLetters, RedriveDeadLetters,
-- GetStats). Publishers cannot set `pgbus.` attributes, so only pgbusd
-- writes this key.
CREATE INDEX messages_dead_letters ON pgbus.messages
  (tenant_id, (attributes ->> 'pgbus.dead_letter.subscription'), id)
  WHERE attributes ? 'pgbus.dead_letter.subscription';
