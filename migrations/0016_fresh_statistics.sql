-- Statistics that follow a table's growth (issue 9). pgbusd caches a
-- generic plan for each prepared statement; Postgres replans it only when
-- the table's statistics change. On a fresh cluster the hot tables grow
-- from empty, and autovacuum first analyses them up to a minute later
-- (autovacuum_naptime): plans made on an empty table (an index scan of the
-- whole tenant filtered by ctid, a join that rescans the tenant's messages
-- per delivered row) stayed in use on 100,000 rows, and publish-to-receive
-- latency climbed from milliseconds to 20 s.
--
-- The reaper calls this every pass: a table whose size has doubled since
-- its statistics were taken (or that never had any, once past 16 pages) is
-- analysed now, which also makes every session replan its statements on
-- it. Doubling bounds the work: a table analysed at 16, 32, 64, ... pages
-- is analysed about log2(size) times in its life, each ANALYZE reading a
-- fixed sample. SKIP_LOCKED: never wait for autovacuum or another replica.
CREATE FUNCTION pgbus.refresh_statistics()
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
DECLARE
  t regclass;
  n int := 0;
BEGIN
  FOR t IN
    SELECT c.oid::regclass FROM pg_class c
    WHERE c.oid IN ('pgbus.messages'::regclass, 'pgbus.deliveries'::regclass,
                    'pgbus.idempotency_keys'::regclass, 'pgbus.payloads'::regclass,
                    'pgbus.counters'::regclass, 'pgbus.tenant_usage'::regclass)
      AND pg_relation_size(c.oid) / current_setting('block_size')::bigint
          >= 2 * greatest(c.relpages, 16)
  LOOP
    EXECUTE format('ANALYZE (SKIP_LOCKED) %s', t);
    n := n + 1;
  END LOOP;
  RETURN n;
END
$$;

-- What ANALYZE need not read: no statement filters, joins or sorts on
-- these columns, and sampling the inline payloads made each ANALYZE of
-- messages take a quarter of a second.
ALTER TABLE pgbus.messages
  ALTER COLUMN payload SET STATISTICS 0,
  ALTER COLUMN sha256 SET STATISTICS 0,
  ALTER COLUMN attributes SET STATISTICS 0;

-- Not PUBLIC's to call (0015): the migrator grants it to pgbusd's role.
-- 0015's ALTER DEFAULT PRIVILEGES IN SCHEMA could not do this: per-schema
-- default privileges only add to the global ones, which give PUBLIC
-- EXECUTE. Revoking it globally, for functions the migrating role creates
-- from now on, does.
REVOKE EXECUTE ON FUNCTION pgbus.refresh_statistics() FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
