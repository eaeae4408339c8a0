-- Per-subscription backlog for pgbusd's metrics (issue 12): every
-- subscription of every tenant in one call, which the app role (bound by
-- row-level security to the tenant its transaction names) cannot make
-- itself. Row-level security still decides what each pass reads: the
-- function names one tenant at a time. pgbusd calls it on an interval (not
-- per scrape); it costs a scan of the deliveries, like GetStats.
CREATE FUNCTION pgbus.subscription_backlog(max_rows int)
RETURNS TABLE (tenant_id text, subscription text, ready bigint, in_flight bigint,
               oldest_unacked_seconds float8)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
#variable_conflict use_column
DECLARE
  t text;
  remaining int := max_rows;
  n int;
BEGIN
  FOR t IN SELECT x.tenant_id FROM pgbus.tenants x ORDER BY x.tenant_id LOOP
    EXIT WHEN remaining <= 0;
    PERFORM set_config('pgbus.tenant_id', t, true);
    RETURN QUERY
      SELECT s.tenant_id, s.name,
             count(d.message_id) FILTER (WHERE d.visible_at IS NULL OR d.visible_at <= now()),
             count(d.message_id) FILTER (WHERE d.visible_at > now() AND d.lease IS NOT NULL),
             coalesce(extract(epoch from now() - min(m.published_at)), 0)::float8
        FROM pgbus.subscriptions s
        LEFT JOIN pgbus.deliveries d ON d.tenant_id = s.tenant_id AND d.subscription = s.name
         AND (d.expires_at IS NULL OR d.expires_at > now())
        LEFT JOIN pgbus.messages m ON m.tenant_id = d.tenant_id AND m.id = d.message_id
       WHERE s.tenant_id = t
       GROUP BY s.tenant_id, s.name
       ORDER BY s.name
       LIMIT remaining;
    GET DIAGNOSTICS n = ROW_COUNT;
    remaining := remaining - n;
  END LOOP;
END
$$;
-- The migrator grants it to pgbusd's role; PUBLIC never had it (0016).
REVOKE EXECUTE ON FUNCTION pgbus.subscription_backlog(int) FROM PUBLIC;
