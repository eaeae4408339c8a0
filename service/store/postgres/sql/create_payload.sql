-- $1 topic, $2 chunk size, $3 compressed. Returns the upload's id and the
-- topic's max_message_bytes (0: none); no row when the topic is missing.
WITH t AS (SELECT tenant_id, name, max_message_bytes FROM pgbus.topics
  WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND name = $1),
p AS (INSERT INTO pgbus.payloads (tenant_id, topic, chunk_size, compressed)
  SELECT t.tenant_id, t.name, $2, $3 FROM t RETURNING id)
SELECT p.id, coalesce(t.max_message_bytes, 0) FROM p CROSS JOIN t;
