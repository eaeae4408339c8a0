-- Tenant $1's row, when it has none yet (an API key's tenant is created
-- on first use).
INSERT INTO pgbus.tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING;
