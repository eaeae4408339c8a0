-- As ack.sql: $2 the new deadline of the rows $1, in ms (> 0).
UPDATE pgbus.deliveries SET visible_at = now() + $2::bigint * interval '1 millisecond'
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND ctid = ANY ($1::tid[]);
