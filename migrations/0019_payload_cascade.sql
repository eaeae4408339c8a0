-- A reaped message takes its uploaded payload in the statement-level
-- cascade that already takes its deliveries (0013; the payloads' part is in
-- 0020's version of pgbus.cascade_delete), not through the foreign
-- key payloads(tenant_id, message_id) -> messages: that key's ON DELETE
-- CASCADE fired a per-row referential trigger for every deleted message,
-- with or without a payload (an SPI query each, ~8 µs per reaped message,
-- seen in plan_test's EXPLAIN ANALYZE of the reaper's delete), and checked
-- every attach at publish the same way. Messages name their payload
-- (messages.payload_id, unique), so the cascade probes the payloads'
-- primary key for just the deleted messages that have one.
ALTER TABLE pgbus.payloads DROP CONSTRAINT payloads_tenant_id_message_id_fkey;

-- The reaper runs the cascade as the owner, bound by FORCE ROW LEVEL
-- SECURITY: like a delivery (0013), a published payload carries its
-- message's expiry, so the owner's policy can say "only what expired".
ALTER TABLE pgbus.payloads ADD COLUMN expires_at timestamptz;
-- Payloads published before this migration: as the owner, with RLS not
-- forced for the length of this transaction (the owner's policies would
-- hide every live row).
ALTER TABLE pgbus.payloads NO FORCE ROW LEVEL SECURITY;
ALTER TABLE pgbus.messages NO FORCE ROW LEVEL SECURITY;
UPDATE pgbus.payloads p SET expires_at = m.expires_at
  FROM pgbus.messages m
 WHERE m.tenant_id = p.tenant_id AND m.id = p.message_id;
ALTER TABLE pgbus.payloads FORCE ROW LEVEL SECURITY;
ALTER TABLE pgbus.messages FORCE ROW LEVEL SECURITY;

CREATE POLICY reap_expired ON pgbus.payloads FOR SELECT TO CURRENT_USER
  USING (expires_at <= now());
CREATE POLICY reap_expired_delete ON pgbus.payloads FOR DELETE TO CURRENT_USER
  USING (expires_at <= now());
