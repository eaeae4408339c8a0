-- Ends the leases of the rows $1 (the ctids lock_leases.sql locked): the
-- messages are done. A delivery whose lease ran out but that no stream has
-- claimed again is still acked: the work was done, and nobody else holds it.
DELETE FROM pgbus.deliveries
WHERE tenant_id = (SELECT current_setting('pgbus.tenant_id', true)) AND ctid = ANY ($1::tid[]);
