-- Whether the migrations ever ran (PgStore::Open refuses a missing schema,
-- then an older one: schema_version.sql).
SELECT to_regclass('pgbus.schema_migrations') IS NOT NULL;
