-- $1 batch. Runs as the schema owner (see migrations/0006_reaper.sql).
SELECT pgbus.reap_expired($1);
