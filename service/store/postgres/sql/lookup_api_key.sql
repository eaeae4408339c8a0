-- Authentication, as pgbusd's role: key $1 by id, through the owner's
-- function (0007), across tenants. Scopes and patterns never contain commas.
SELECT tenant_id, secret_sha256, scopes, topics, revoked FROM pgbus.api_key_lookup($1);
