-- Tenants as an operator manages them: API keys and quotas.
--
-- The operator (the schema owner's connection, through `pgbusd tenant` and
-- `pgbusd key`) creates tenants, sets their quotas and issues keys. pgbusd's
-- role may read its current tenant's row, and insert it (dev mode creates
-- its one tenant), but never change it: it cannot lift its own quotas.
DROP POLICY tenant_isolation ON pgbus.tenants;
CREATE POLICY tenant_read ON pgbus.tenants FOR SELECT
  USING (tenant_id = (SELECT current_setting('pgbus.tenant_id', true)));
CREATE POLICY tenant_insert ON pgbus.tenants FOR INSERT
  WITH CHECK (tenant_id = (SELECT current_setting('pgbus.tenant_id', true)));
CREATE POLICY operator ON pgbus.tenants TO CURRENT_USER USING (true) WITH CHECK (true);

-- NULL: no limit of the tenant's own (the server's limits still apply).
ALTER TABLE pgbus.tenants
  ADD COLUMN max_message_bytes bigint CHECK (max_message_bytes > 0),
  ADD COLUMN max_stored_bytes  bigint CHECK (max_stored_bytes >= 0),
  ADD COLUMN max_publish_rate  int    CHECK (max_publish_rate > 0),   -- messages/s
  ADD COLUMN max_streams       int    CHECK (max_streams >= 0);

-- A key is "pgbus_<key_id>_<secret>"; only the SHA-256 of the secret is
-- kept. pgbusd finds the key by its id (pgbus.api_key_lookup) and compares
-- the hash itself, in constant time. `topics` holds topic patterns
-- (`orders.*` one level, `orders.>` any depth, `>` every topic).
CREATE TABLE pgbus.api_keys (
  tenant_id     text NOT NULL REFERENCES pgbus.tenants ON DELETE CASCADE,
  key_id        text NOT NULL,
  secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
  scopes        text[] NOT NULL CHECK (scopes <@ ARRAY['publish', 'subscribe', 'admin']
                                       AND cardinality(scopes) > 0),
  topics        text[] NOT NULL CHECK (cardinality(topics) > 0),
  description   text NOT NULL DEFAULT '',
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz,
  PRIMARY KEY (tenant_id, key_id)
);
CREATE UNIQUE INDEX api_keys_by_id ON pgbus.api_keys (key_id);
ALTER TABLE pgbus.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgbus.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON pgbus.api_keys FOR SELECT
  USING (tenant_id = (SELECT current_setting('pgbus.tenant_id', true)));
CREATE POLICY operator ON pgbus.api_keys TO CURRENT_USER USING (true) WITH CHECK (true);

-- Authentication happens before a tenant is known: this function, running
-- as the owner, returns the one key with the given id (there is no way to
-- list keys through it).
CREATE FUNCTION pgbus.api_key_lookup(p_key_id text)
RETURNS TABLE (tenant_id text, secret_sha256 bytea, scopes text[], topics text[],
               revoked boolean)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
  SELECT k.tenant_id, k.secret_sha256, k.scopes, k.topics, k.revoked_at IS NOT NULL
    FROM pgbus.api_keys k
   WHERE k.key_id = p_key_id
$$;

-- Stored payload bytes per tenant, for max_stored_bytes: an append-only
-- ledger of deltas written by statement triggers (one row per statement,
-- so concurrent publishers never queue on one counter row), folded into one
-- row per tenant by the reaper.
CREATE TABLE pgbus.tenant_usage (
  tenant_id text NOT NULL,
  id        bigint GENERATED ALWAYS AS IDENTITY,
  bytes     bigint NOT NULL,
  PRIMARY KEY (tenant_id, id)
);
ALTER TABLE pgbus.tenant_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgbus.tenant_usage FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON pgbus.tenant_usage FOR SELECT
  USING (tenant_id = (SELECT current_setting('pgbus.tenant_id', true)));
CREATE POLICY operator ON pgbus.tenant_usage TO CURRENT_USER USING (true) WITH CHECK (true);

-- Adds the bytes a statement stored (inline payloads of messages, chunks of
-- uploaded payloads) or removed. An insert that would take a tenant over
-- max_stored_bytes fails with SQLSTATE 54000, and the statement (so the
-- whole publish, or the chunk) is rolled back: nothing is partly stored.
-- Concurrent writers each check against what is committed, so a tenant can
-- overshoot by what is in flight at that moment. Every trigger names its
-- transition table `changed`.
CREATE FUNCTION pgbus.account_stored_bytes()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
DECLARE
  r record;
  lim bigint;
  used bigint;
  tenants text[];
  amounts bigint[];
BEGIN
  IF TG_TABLE_NAME = 'messages' THEN
    SELECT array_agg(tenant_id), array_agg(bytes) INTO tenants, amounts FROM (
      SELECT tenant_id, sum(CASE WHEN payload IS NULL THEN 0 ELSE size END)::bigint AS bytes
        FROM changed GROUP BY tenant_id) s WHERE bytes <> 0;
  ELSE
    SELECT array_agg(tenant_id), array_agg(bytes) INTO tenants, amounts FROM (
      SELECT tenant_id, sum(size)::bigint AS bytes FROM changed GROUP BY tenant_id) s;
  END IF;
  FOR r IN SELECT * FROM unnest(tenants, amounts) AS d(tenant_id, bytes) LOOP
    IF TG_OP = 'INSERT' THEN
      SELECT t.max_stored_bytes INTO lim FROM pgbus.tenants t WHERE t.tenant_id = r.tenant_id;
      IF lim IS NOT NULL THEN
        SELECT coalesce(sum(u.bytes), 0) INTO used
          FROM pgbus.tenant_usage u WHERE u.tenant_id = r.tenant_id;
        IF used + r.bytes > lim THEN
          RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = format(
            'tenant quota max_stored_bytes=%s reached: %s bytes stored, this write needs %s '
            'more; wait for messages to expire or ask the operator to raise the quota',
            lim, used, r.bytes);
        END IF;
      END IF;
      INSERT INTO pgbus.tenant_usage (tenant_id, bytes) VALUES (r.tenant_id, r.bytes);
    ELSE
      INSERT INTO pgbus.tenant_usage (tenant_id, bytes) VALUES (r.tenant_id, -r.bytes);
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;

CREATE TRIGGER account_insert AFTER INSERT ON pgbus.messages
  REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION pgbus.account_stored_bytes();
CREATE TRIGGER account_delete AFTER DELETE ON pgbus.messages
  REFERENCING OLD TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION pgbus.account_stored_bytes();
CREATE TRIGGER account_insert AFTER INSERT ON pgbus.payload_chunks
  REFERENCING NEW TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION pgbus.account_stored_bytes();
CREATE TRIGGER account_delete AFTER DELETE ON pgbus.payload_chunks
  REFERENCING OLD TABLE AS changed
  FOR EACH STATEMENT EXECUTE FUNCTION pgbus.account_stored_bytes();

-- What has been stored so far, counted once, for tenants that existed before
-- this ledger.
INSERT INTO pgbus.tenant_usage (tenant_id, bytes)
  SELECT tenant_id, sum(bytes) FROM (
    SELECT tenant_id, size AS bytes FROM pgbus.messages WHERE payload IS NOT NULL
    UNION ALL
    SELECT tenant_id, size FROM pgbus.payload_chunks) s
  GROUP BY tenant_id;

-- The reaper also folds the ledger: one row per tenant again. Rows that a
-- concurrent transaction has not committed yet are not seen, so they stay
-- as they are; two reapers never fold the same row twice (the second finds
-- it deleted).
CREATE FUNCTION pgbus.fold_tenant_usage()
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
  WITH gone AS (DELETE FROM pgbus.tenant_usage RETURNING tenant_id, bytes)
  INSERT INTO pgbus.tenant_usage (tenant_id, bytes)
    SELECT tenant_id, sum(bytes) FROM gone GROUP BY tenant_id HAVING sum(bytes) <> 0;
$$;
