-- Topic $1's published counter.
SELECT coalesce(sum(published), 0)::bigint FROM pgbus.counters
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND topic = $1;
