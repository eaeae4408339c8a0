-- $1 tenant, $2 key id, $3 secret sha256, $4 scopes, $5 topic patterns,
-- $6 description.
INSERT INTO pgbus.api_keys (tenant_id, key_id, secret_sha256, scopes, topics, description)
VALUES ($1, $2, $3, $4, $5, $6);
