-- Revokes key $1 (a second revocation keeps the first time). No row when
-- there is no such key.
UPDATE pgbus.api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE key_id = $1
RETURNING tenant_id;
