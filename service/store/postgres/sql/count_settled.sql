-- $1 subscription, $2 acked, $3 dead-lettered.
INSERT INTO pgbus.counters (tenant_id, subscription, acked, dead_lettered)
VALUES ((SELECT current_setting('pgbus.tenant_id', true)), $1, $2, $3);
