-- A Transaction (connection.h) begins with this, then set_tenant.sql.
BEGIN;
