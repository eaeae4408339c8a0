-- As ack.sql: $2 the new deadline of the rows $1 (ctids from
-- lock_leases.sql), in ms (> 0). The rows by ctid: see "Rows by ctid" in
-- README.md.
UPDATE pgbus.deliveries d SET visible_at = now() + $2::bigint * interval '1 millisecond'
FROM (SELECT row_id FROM unnest($1::tid[]) AS u(row_id) LIMIT cardinality($1::tid[])) k
WHERE d.tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND d.ctid = k.row_id;
