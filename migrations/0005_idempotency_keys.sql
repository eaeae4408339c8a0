-- Idempotent publish: a key claimed on a topic within its dedup window maps
-- to the message first published with it. Claimed with INSERT ... ON
-- CONFLICT, so concurrent duplicates serialise on the key's row; an expired
-- claim is taken over (the window starts again).
CREATE TABLE pgbus.idempotency_keys (
  tenant_id  text NOT NULL,
  topic      text NOT NULL,
  key        text NOT NULL,
  message_id bigint,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, topic, key),
  FOREIGN KEY (tenant_id, topic) REFERENCES pgbus.topics (tenant_id, name) ON DELETE CASCADE
);
SELECT pgbus.isolate_tenant_table('pgbus.idempotency_keys');
