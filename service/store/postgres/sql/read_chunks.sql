-- $1 payload id, $2 first seq, $3 last seq. Columns: seq, sha256, bytes.
SELECT seq, sha256, coalesce(data, data_raw) FROM pgbus.payload_chunks
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND payload_id = $1
  AND seq BETWEEN $2 AND $3
ORDER BY seq;
