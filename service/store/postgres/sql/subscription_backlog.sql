-- Every subscription's backlog, across tenants (0017): tenant, name, ready,
-- in flight, oldest unacked age in seconds. $1: most rows.
SELECT tenant_id, subscription, ready, in_flight, oldest_unacked_seconds
FROM pgbus.subscription_backlog($1);
