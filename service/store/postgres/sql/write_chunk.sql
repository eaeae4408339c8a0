-- $1 payload id, $2 seq, $3 size, $4 sha256, $5 bytes. No row when the
-- upload is not (or no longer) in progress.
INSERT INTO pgbus.payload_chunks (tenant_id, payload_id, seq, size, sha256, data, data_raw)
SELECT p.tenant_id, p.id, $2, $3, $4,
  CASE WHEN p.compressed THEN NULL ELSE $5::bytea END,
  CASE WHEN p.compressed THEN $5::bytea END
FROM pgbus.payloads p
WHERE p.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND p.id = $1
  AND p.state = 'uploading'
RETURNING seq;
