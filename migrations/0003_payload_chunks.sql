-- Large payloads: uploaded in chunks (UploadPayload), stored in their own
-- tables (never in the hot delivery rows), delivered by claim check.
--
-- A payload is 'uploading' until its last chunk is in, then 'complete';
-- Publish attaches a complete payload to exactly one message (message_id),
-- and it is deleted with that message. Each chunk carries the SHA-256 of its
-- own bytes, so any byte range can be verified on the way out.
CREATE TABLE pgbus.payloads (
  tenant_id   text NOT NULL,
  id          bigint GENERATED ALWAYS AS IDENTITY,
  topic       text NOT NULL,
  state       text NOT NULL DEFAULT 'uploading' CHECK (state IN ('uploading', 'complete')),
  size        bigint NOT NULL DEFAULT 0,
  sha256      bytea,
  chunk_size  int NOT NULL,
  compressed  boolean NOT NULL DEFAULT false,
  message_id  bigint,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, topic) REFERENCES pgbus.topics (tenant_id, name) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, message_id) REFERENCES pgbus.messages (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX payloads_by_message ON pgbus.payloads (tenant_id, message_id)
  WHERE message_id IS NOT NULL;

-- `data` is compressed by TOAST with lz4; bytes the publisher marked as
-- already compressed go to `data_raw`, stored EXTERNAL (out of line, not
-- recompressed). Exactly one of the two is set.
CREATE TABLE pgbus.payload_chunks (
  tenant_id  text NOT NULL,
  payload_id bigint NOT NULL,
  seq        int NOT NULL CHECK (seq >= 0),
  size       int NOT NULL CHECK (size > 0),
  sha256     bytea NOT NULL CHECK (length(sha256) = 32),
  data       bytea,
  data_raw   bytea,
  PRIMARY KEY (tenant_id, payload_id, seq),
  FOREIGN KEY (tenant_id, payload_id) REFERENCES pgbus.payloads (tenant_id, id) ON DELETE CASCADE,
  CHECK ((data IS NULL) <> (data_raw IS NULL))
);
ALTER TABLE pgbus.payload_chunks ALTER COLUMN data SET COMPRESSION lz4;
ALTER TABLE pgbus.payload_chunks ALTER COLUMN data_raw SET STORAGE EXTERNAL;

ALTER TABLE pgbus.messages ADD COLUMN payload_id bigint;

-- What 0001 did inline for its tables, as one function every later
-- migration calls for each new table holding tenant data.
CREATE FUNCTION pgbus.isolate_tenant_table(tbl regclass)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
  EXECUTE format(
    'CREATE POLICY tenant_isolation ON %s '
    'USING (tenant_id = (SELECT current_setting(''pgbus.tenant_id'', true))) '
    'WITH CHECK (tenant_id = (SELECT current_setting(''pgbus.tenant_id'', true)))', tbl);
END
$$;
REVOKE ALL ON FUNCTION pgbus.isolate_tenant_table(regclass) FROM PUBLIC;

SELECT pgbus.isolate_tenant_table('pgbus.payloads');
SELECT pgbus.isolate_tenant_table('pgbus.payload_chunks');

-- Publish refuses a handle that is unknown, still uploading, already
-- published, or uploaded for another topic (SQLSTATE 22023,
-- invalid_parameter_value -> INVALID_ARGUMENT).
CREATE FUNCTION pgbus.reject_handle(handle bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  RAISE EXCEPTION USING
    ERRCODE = '22023',
    MESSAGE = format('payload_handle "%s" is not a completed upload for this topic, or was '
                     'already published', handle);
END
$$;

-- One message per payload, also under concurrent publishes of one handle.
CREATE UNIQUE INDEX messages_by_payload ON pgbus.messages (tenant_id, payload_id)
  WHERE payload_id IS NOT NULL;
