-- pgbus schema v1. Runs as the owner role, inside one transaction, after the
-- migrator has created schema pgbus and pgbus.schema_migrations.
--
-- Every table holding tenant data has tenant_id leading its keys, ENABLE and
-- FORCE ROW LEVEL SECURITY, and a policy on the transaction-local setting
-- pgbus.tenant_id. With the setting missing, current_setting(..., true)
-- yields NULL and the policy matches nothing: it fails closed. The (SELECT
-- ...) wrapper makes Postgres evaluate the setting once per statement, so
-- the tenant_id index is used as an Index Cond.

CREATE TABLE pgbus.tenants (
  tenant_id  text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgbus.topics (
  tenant_id         text NOT NULL REFERENCES pgbus.tenants ON DELETE CASCADE,
  name              text NOT NULL,
  retention         interval NOT NULL,
  max_message_bytes bigint NOT NULL DEFAULT 0,
  message_ttl       interval,          -- NULL: retention
  dedup_window      interval NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, name)
);

CREATE TABLE pgbus.subscriptions (
  tenant_id             text NOT NULL,
  name                  text NOT NULL,
  topic                 text NOT NULL,
  filter                text NOT NULL DEFAULT '',
  ack_deadline          interval NOT NULL,
  max_delivery_attempts int NOT NULL DEFAULT 0,
  dead_letter_topic     text NOT NULL DEFAULT '',
  min_backoff           interval NOT NULL,
  max_backoff           interval NOT NULL,
  created_at            timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, name),
  FOREIGN KEY (tenant_id, topic) REFERENCES pgbus.topics (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX subscriptions_by_topic ON pgbus.subscriptions (tenant_id, topic);

-- Written once, read on delivery and Retrieve; never updated, so the hot
-- delivery rows below stay narrow. Payloads up to the inline limit live in
-- `payload`, compressed by TOAST with lz4.
CREATE TABLE pgbus.messages (
  tenant_id       text NOT NULL,
  id              bigint GENERATED ALWAYS AS IDENTITY,
  topic           text NOT NULL,
  published_at    timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz,
  deliver_at      timestamptz,
  priority        int NOT NULL DEFAULT 0,
  correlation_id  text,
  ordering_key    text,
  idempotency_key text,
  attributes      jsonb NOT NULL DEFAULT '{}',
  size            bigint NOT NULL CHECK (size >= 0),
  sha256          bytea NOT NULL CHECK (length(sha256) = 32),
  payload         bytea,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, topic) REFERENCES pgbus.topics (tenant_id, name) ON DELETE CASCADE
);
ALTER TABLE pgbus.messages ALTER COLUMN payload SET COMPRESSION lz4;
CREATE INDEX messages_by_correlation ON pgbus.messages (tenant_id, correlation_id, id)
  WHERE correlation_id IS NOT NULL;
CREATE INDEX messages_by_topic_time ON pgbus.messages (tenant_id, topic, published_at);

-- One row per (subscription, message) not yet acked: the queue itself.
-- Claimed with FOR UPDATE SKIP LOCKED in (priority DESC, message_id) order;
-- a claim only changes columns outside every index (HOT updates, room left
-- by fillfactor); an ack deletes the row. Autovacuum runs early because
-- every ack leaves a dead tuple.
CREATE TABLE pgbus.deliveries (
  tenant_id    text NOT NULL,
  subscription text NOT NULL,
  message_id   bigint NOT NULL,
  priority     int NOT NULL,
  size         bigint NOT NULL,
  visible_at   timestamptz NOT NULL,
  expires_at   timestamptz,
  attempts     int NOT NULL DEFAULT 0,
  lease        bigint,
  PRIMARY KEY (tenant_id, subscription, message_id),
  FOREIGN KEY (tenant_id, subscription) REFERENCES pgbus.subscriptions (tenant_id, name)
    ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, message_id) REFERENCES pgbus.messages (tenant_id, id)
    ON DELETE CASCADE
) WITH (fillfactor = 70,
        autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX deliveries_claim ON pgbus.deliveries (tenant_id, subscription, priority DESC, message_id);
CREATE INDEX deliveries_by_message ON pgbus.deliveries (tenant_id, message_id);

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['tenants', 'topics', 'subscriptions', 'messages', 'deliveries'] LOOP
    EXECUTE format('ALTER TABLE pgbus.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE pgbus.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON pgbus.%I '
      'USING (tenant_id = (SELECT current_setting(''pgbus.tenant_id'', true))) '
      'WITH CHECK (tenant_id = (SELECT current_setting(''pgbus.tenant_id'', true)))', t);
  END LOOP;
END
$$;
