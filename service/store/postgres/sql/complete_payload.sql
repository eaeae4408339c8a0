-- $1 payload id, $2 size, $3 sha256.
UPDATE pgbus.payloads SET state = 'complete', size = $2, sha256 = $3
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND id = $1
  AND state = 'uploading' RETURNING id;
