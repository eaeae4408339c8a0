-- Tables that churn (rows deleted by the reaper or folded by it) are
-- vacuumed after 2% of their rows are dead, not the default 20%: under a
-- steady TTL load the space of expired messages is reused instead of the
-- table growing (make bench, soak figure). Deliveries were set so in 0001.
ALTER TABLE pgbus.messages SET (autovacuum_vacuum_scale_factor = 0.02,
                                autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE pgbus.counters SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE pgbus.tenant_usage SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE pgbus.idempotency_keys SET (autovacuum_vacuum_scale_factor = 0.02);
