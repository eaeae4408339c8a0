-- TTL reaping. pgbusd (the app role, confined to one tenant by RLS) calls
-- pgbus.reap_expired(), which runs as the schema owner (SECURITY DEFINER).
-- The owner is bound by FORCE ROW LEVEL SECURITY like everyone, so it gets
-- policies of its own that let it see and delete only what has expired,
-- across tenants. This widens nothing: the owner could disable RLS on its
-- own tables anyway, and the function deletes nothing that has not expired.
-- Deliveries, payloads and chunks of a reaped message go with it (ON DELETE
-- CASCADE). Batches are bounded and taken with SKIP LOCKED, so replicas
-- share the work and no long lock is held.
CREATE INDEX messages_expiry ON pgbus.messages (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX payloads_abandoned ON pgbus.payloads (created_at) WHERE message_id IS NULL;
CREATE INDEX idempotency_keys_expiry ON pgbus.idempotency_keys (expires_at);

-- SELECT ... FOR UPDATE needs an UPDATE policy's USING too: the owner may
-- lock expired rows (to skip those another replica is reaping), never
-- change them (WITH CHECK (false)).
CREATE POLICY reap_expired ON pgbus.messages FOR SELECT TO CURRENT_USER
  USING (expires_at <= now());
CREATE POLICY reap_expired_lock ON pgbus.messages FOR UPDATE TO CURRENT_USER
  USING (expires_at <= now()) WITH CHECK (false);
CREATE POLICY reap_abandoned_lock ON pgbus.payloads FOR UPDATE TO CURRENT_USER
  USING (message_id IS NULL AND created_at <= now() - interval '1 day') WITH CHECK (false);
CREATE POLICY reap_expired_lock ON pgbus.idempotency_keys FOR UPDATE TO CURRENT_USER
  USING (expires_at <= now()) WITH CHECK (false);
CREATE POLICY reap_expired_delete ON pgbus.messages FOR DELETE TO CURRENT_USER
  USING (expires_at <= now());
CREATE POLICY reap_abandoned ON pgbus.payloads FOR SELECT TO CURRENT_USER
  USING (message_id IS NULL AND created_at <= now() - interval '1 day');
CREATE POLICY reap_abandoned_delete ON pgbus.payloads FOR DELETE TO CURRENT_USER
  USING (message_id IS NULL AND created_at <= now() - interval '1 day');
CREATE POLICY reap_expired ON pgbus.idempotency_keys FOR SELECT TO CURRENT_USER
  USING (expires_at <= now());
CREATE POLICY reap_expired_delete ON pgbus.idempotency_keys FOR DELETE TO CURRENT_USER
  USING (expires_at <= now());

-- Deletes at most `batch` expired messages (with their deliveries and
-- payloads), uploads abandoned for a day (a pgbusd that died mid-upload, or
-- a handle never published), and expired idempotency keys. Returns the
-- number of messages deleted: call again while it returns `batch`.
CREATE FUNCTION pgbus.reap_expired(batch int)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
DECLARE
  n int;
BEGIN
  DELETE FROM pgbus.messages m
   WHERE (m.tenant_id, m.id) IN (
     SELECT tenant_id, id FROM pgbus.messages
      WHERE expires_at <= now() ORDER BY expires_at LIMIT batch FOR UPDATE SKIP LOCKED);
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM pgbus.payloads p
   WHERE (p.tenant_id, p.id) IN (
     SELECT tenant_id, id FROM pgbus.payloads
      WHERE message_id IS NULL AND created_at <= now() - interval '1 day'
      LIMIT batch FOR UPDATE SKIP LOCKED);
  DELETE FROM pgbus.idempotency_keys k
   WHERE (k.tenant_id, k.topic, k.key) IN (
     SELECT tenant_id, topic, key FROM pgbus.idempotency_keys
      WHERE expires_at <= now() LIMIT batch FOR UPDATE SKIP LOCKED);
  RETURN n;
END
$$;
