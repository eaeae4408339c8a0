-- The hot path's cost follows traffic, not the backlog (issue 9).
--
-- 1. No per-row foreign-key checks on the hot inserts. messages -> topics,
--    deliveries -> subscriptions and deliveries -> messages made every
--    published message and every fanned-out delivery run a referential
--    check (an SPI query taking FOR KEY SHARE on the same few topic and
--    subscription rows: MultiXacts under concurrency). The inserts already
--    join the live topic and subscriptions. What the cascades did is now
--    done per statement, by the triggers below, on the rare deletes.
ALTER TABLE pgbus.messages DROP CONSTRAINT messages_tenant_id_topic_fkey;
ALTER TABLE pgbus.deliveries DROP CONSTRAINT deliveries_tenant_id_subscription_fkey;
ALTER TABLE pgbus.deliveries DROP CONSTRAINT deliveries_tenant_id_message_id_fkey;

-- What the dropped cascades did, per statement: a deleted topic takes its
-- messages, a deleted message or subscription its deliveries (the reaper,
-- topic deletion, redrive, DeleteSubscription). Runs as the deleting role:
-- pgbusd's role within its tenant, the owner inside reap_expired() (policy
-- below). Each trigger probes an index per deleted row whatever the
-- statistics say (the SET line; see PGBUS_PIN_PLANS in
-- service/store/postgres/sql.h). Every trigger names its transition table
-- `gone`.
CREATE FUNCTION pgbus.cascade_delete()
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
  ELSE  -- messages
    DELETE FROM pgbus.deliveries d USING gone g
     WHERE d.tenant_id = g.tenant_id AND d.message_id = g.id;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER cascade_delete AFTER DELETE ON pgbus.topics
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION pgbus.cascade_delete();
CREATE TRIGGER cascade_delete AFTER DELETE ON pgbus.subscriptions
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION pgbus.cascade_delete();
CREATE TRIGGER cascade_delete AFTER DELETE ON pgbus.messages
  REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION pgbus.cascade_delete();

-- The reaper (as the owner, bound by FORCE ROW LEVEL SECURITY) deletes the
-- deliveries of the messages it reaps: they expire with their message.
CREATE POLICY reap_expired ON pgbus.deliveries FOR SELECT TO CURRENT_USER
  USING (expires_at <= now());
CREATE POLICY reap_expired_delete ON pgbus.deliveries FOR DELETE TO CURRENT_USER
  USING (expires_at <= now());

-- 2. A claim reads only claimable rows. visible_at NULL now means "ready":
--    the claim walks an index of ready rows in (priority, publish) order and
--    never re-reads rows that are in flight, backing off or not yet due (it
--    used to filter every one of them on each claim: 10,000 in flight made
--    every claim read 10,000 rows). A row held until a time (leased, nacked
--    with backoff, published with deliver_at) is found through its own index
--    when that time comes, and made ready again (kReleaseDue).
ALTER TABLE pgbus.deliveries ALTER COLUMN visible_at DROP NOT NULL;
UPDATE pgbus.deliveries SET visible_at = NULL WHERE attempts = 0 AND visible_at <= now();
DROP INDEX pgbus.deliveries_claim;
CREATE INDEX deliveries_ready ON pgbus.deliveries (tenant_id, subscription, priority DESC, message_id)
  WHERE visible_at IS NULL;
CREATE INDEX deliveries_held ON pgbus.deliveries (tenant_id, subscription, visible_at)
  WHERE visible_at IS NOT NULL;

-- 3. The reaper folds only what grew. Folding used to delete and re-insert
--    every row of both ledgers each round (once a second per replica),
--    turning the whole table over while publishers' triggers read it. Now
--    a key with a single row (nothing new since the last fold) is left
--    alone; rows of deleted topics and subscriptions still go.
CREATE OR REPLACE FUNCTION pgbus.fold_counters()
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
  WITH stale AS (
    SELECT c.tenant_id, c.topic, c.subscription FROM pgbus.counters c
     GROUP BY c.tenant_id, c.topic, c.subscription
    HAVING count(*) > 1
        OR (c.topic IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pgbus.topics t
              WHERE t.tenant_id = c.tenant_id AND t.name = c.topic))
        OR (c.subscription IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pgbus.subscriptions s
              WHERE s.tenant_id = c.tenant_id AND s.name = c.subscription))),
  gone AS (
    DELETE FROM pgbus.counters c USING stale s
     WHERE c.tenant_id = s.tenant_id AND c.topic IS NOT DISTINCT FROM s.topic
       AND c.subscription IS NOT DISTINCT FROM s.subscription
    RETURNING c.*)
  INSERT INTO pgbus.counters (tenant_id, topic, subscription, published, acked, dead_lettered)
    SELECT g.tenant_id, g.topic, g.subscription, sum(g.published), sum(g.acked),
           sum(g.dead_lettered)
      FROM gone g
     WHERE (g.topic IS NOT NULL AND EXISTS (
              SELECT 1 FROM pgbus.topics t WHERE t.tenant_id = g.tenant_id AND t.name = g.topic))
        OR (g.subscription IS NOT NULL AND EXISTS (
              SELECT 1 FROM pgbus.subscriptions s
               WHERE s.tenant_id = g.tenant_id AND s.name = g.subscription))
     GROUP BY g.tenant_id, g.topic, g.subscription;
$$;

CREATE OR REPLACE FUNCTION pgbus.fold_tenant_usage()
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
  WITH grown AS (
    SELECT tenant_id FROM pgbus.tenant_usage GROUP BY tenant_id HAVING count(*) > 1),
  gone AS (
    DELETE FROM pgbus.tenant_usage u USING grown g WHERE u.tenant_id = g.tenant_id
    RETURNING u.tenant_id, u.bytes)
  INSERT INTO pgbus.tenant_usage (tenant_id, bytes)
    SELECT tenant_id, sum(bytes) FROM gone GROUP BY tenant_id HAVING sum(bytes) <> 0;
$$;

-- 4. The reaper's batches: the rows its LIMIT ... SKIP LOCKED subqueries
--    lock, by ctid, in an array (the subquery runs exactly once and the
--    delete is a TID scan; as IN (subquery) it could be run again and take
--    more than `batch`, or be planned as a loop over the table).
CREATE OR REPLACE FUNCTION pgbus.reap_expired(batch int)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
  n int;
BEGIN
  DELETE FROM pgbus.messages m
   WHERE m.ctid = ANY (ARRAY(
     SELECT ctid FROM pgbus.messages
      WHERE expires_at <= now() ORDER BY expires_at LIMIT batch FOR UPDATE SKIP LOCKED));
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM pgbus.payloads p
   WHERE p.ctid = ANY (ARRAY(
     SELECT ctid FROM pgbus.payloads
      WHERE message_id IS NULL AND created_at <= now() - interval '1 day'
      LIMIT batch FOR UPDATE SKIP LOCKED));
  DELETE FROM pgbus.idempotency_keys k
   WHERE k.ctid = ANY (ARRAY(
     SELECT ctid FROM pgbus.idempotency_keys
      WHERE expires_at <= now() LIMIT batch FOR UPDATE SKIP LOCKED));
  RETURN n;
END
$$;
