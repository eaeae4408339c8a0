-- An upload that broke off or failed its checksum. $1 payload id.
DELETE FROM pgbus.payloads
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND id = $1
  AND message_id IS NULL;
