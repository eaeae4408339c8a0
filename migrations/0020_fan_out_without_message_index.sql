-- Fan-out cost (issue 9). Every delivery row had three index entries: the
-- primary key (tenant_id, subscription, message_id), deliveries_ready or
-- deliveries_held, and deliveries_by_message (tenant_id, message_id). A claim
-- moves a row from ready to held, which no HOT update can do, so each claim,
-- nack and give-back wrote all three again. deliveries_by_message served one
-- thing: finding a deleted message's deliveries (the reaper, topic deletion,
-- redrive). A message's deliveries are those of the subscriptions that
-- match its topic (fan-out and Seek insert no others, and a subscription's
-- topic never changes), so the cascade now finds them by probing the
-- primary key once per matching subscription instead.
DROP INDEX pgbus.deliveries_by_message;

CREATE OR REPLACE FUNCTION pgbus.cascade_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pgbus
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
  IF TG_TABLE_NAME = 'topics' THEN
    DELETE FROM pgbus.messages m USING gone g
     WHERE m.tenant_id = g.tenant_id AND m.topic = g.name;
  ELSIF TG_TABLE_NAME = 'subscriptions' THEN
    DELETE FROM pgbus.deliveries d USING gone g
     WHERE d.tenant_id = g.tenant_id AND d.subscription = g.name;
  ELSE  -- messages: the subscriptions of the topic, then those of patterns
    DELETE FROM pgbus.deliveries d USING gone g JOIN pgbus.subscriptions s
        ON s.tenant_id = g.tenant_id AND s.topic = g.topic
     WHERE d.tenant_id = g.tenant_id AND d.subscription = s.name AND d.message_id = g.id;
    DELETE FROM pgbus.deliveries d USING gone g JOIN pgbus.subscriptions s
        ON s.tenant_id = g.tenant_id AND s.topic_regex IS NOT NULL AND g.topic ~ s.topic_regex
     WHERE d.tenant_id = g.tenant_id AND d.subscription = s.name AND d.message_id = g.id;
    DELETE FROM pgbus.payloads p USING gone g
     WHERE g.payload_id IS NOT NULL AND p.tenant_id = g.tenant_id AND p.id = g.payload_id;
  END IF;
  RETURN NULL;
END
$$;
