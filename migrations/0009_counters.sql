-- Stats counters: published per topic, acked and dead-lettered per
-- subscription. Like the stored-bytes ledger (0007): writers append one row
-- per statement (no hot counter row to queue on), the reaper folds them
-- into one row per topic / subscription and drops those of deleted ones.
CREATE TABLE pgbus.counters (
  tenant_id     text NOT NULL,
  id            bigint GENERATED ALWAYS AS IDENTITY,
  topic         text,
  subscription  text,
  published     bigint NOT NULL DEFAULT 0,
  acked         bigint NOT NULL DEFAULT 0,
  dead_lettered bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, id),
  CHECK ((topic IS NULL) <> (subscription IS NULL))
);
CREATE INDEX counters_by_topic ON pgbus.counters (tenant_id, topic) WHERE topic IS NOT NULL;
CREATE INDEX counters_by_subscription ON pgbus.counters (tenant_id, subscription)
  WHERE subscription IS NOT NULL;
SELECT pgbus.isolate_tenant_table('pgbus.counters');
CREATE POLICY operator ON pgbus.counters TO CURRENT_USER USING (true) WITH CHECK (true);

-- Every statement that inserts messages (publish, dead-lettering, redrive)
-- counts them, per topic, as the role that inserts (RLS checks the tenant).
CREATE FUNCTION pgbus.count_published()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pgbus
AS $$
BEGIN
  INSERT INTO pgbus.counters (tenant_id, topic, published)
    SELECT tenant_id, topic, count(*) FROM changed GROUP BY tenant_id, topic;
  RETURN NULL;
END
$$;
CREATE TRIGGER count_published AFTER INSERT ON pgbus.messages
  REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION pgbus.count_published();

CREATE FUNCTION pgbus.fold_counters()
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
  WITH gone AS (DELETE FROM pgbus.counters RETURNING *)
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

-- fold_counters() (as the owner) checks that the topic or subscription
-- still exists; the owner is bound by FORCE ROW LEVEL SECURITY too.
CREATE POLICY operator_read ON pgbus.topics FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY operator_read ON pgbus.subscriptions FOR SELECT TO CURRENT_USER USING (true);
