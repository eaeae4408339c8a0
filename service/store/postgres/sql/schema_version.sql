-- The last migration applied (PgStore::Open refuses an older schema).
SELECT coalesce(max(version), 0) FROM pgbus.schema_migrations;
