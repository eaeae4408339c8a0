-- Stored bytes count an uploaded payload once (issue 10). Its chunks are
-- counted as they are written (payload_chunks); the message that publishes
-- it by handle stores an empty payload and only names the upload, yet its
-- size was counted again, so a 2 MiB upload took 4 MiB of max_stored_bytes.
-- A message now counts its size only when it carries the payload inline.
CREATE OR REPLACE FUNCTION pgbus.account_stored_bytes()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pgbus
AS $$
DECLARE
  r record;
  lim bigint;
  used bigint;
  tenants text[];
  amounts bigint[];
BEGIN
  IF TG_TABLE_NAME = 'messages' THEN
    SELECT array_agg(tenant_id), array_agg(bytes) INTO tenants, amounts FROM (
      SELECT tenant_id,
             sum(CASE WHEN payload IS NULL OR payload_id IS NOT NULL THEN 0 ELSE size END)::bigint
               AS bytes
        FROM changed GROUP BY tenant_id) s WHERE bytes <> 0;
  ELSE
    SELECT array_agg(tenant_id), array_agg(bytes) INTO tenants, amounts FROM (
      SELECT tenant_id, sum(size)::bigint AS bytes FROM changed GROUP BY tenant_id) s;
  END IF;
  FOR r IN SELECT * FROM unnest(tenants, amounts) AS d(tenant_id, bytes) LOOP
    IF TG_OP = 'INSERT' THEN
      SELECT t.max_stored_bytes INTO lim FROM pgbus.tenants t WHERE t.tenant_id = r.tenant_id;
      IF lim IS NOT NULL THEN
        SELECT coalesce(sum(u.bytes), 0) INTO used
          FROM pgbus.tenant_usage u WHERE u.tenant_id = r.tenant_id;
        IF used + r.bytes > lim THEN
          RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = format(
            'tenant quota max_stored_bytes=%s reached: %s bytes stored, this write needs %s '
            'more; wait for messages to expire or ask the operator to raise the quota',
            lim, used, r.bytes);
        END IF;
      END IF;
      INSERT INTO pgbus.tenant_usage (tenant_id, bytes) VALUES (r.tenant_id, r.bytes);
    ELSE
      INSERT INTO pgbus.tenant_usage (tenant_id, bytes) VALUES (r.tenant_id, -r.bytes);
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;

-- Give back what was counted twice for messages stored before this
-- migration: their deletion now subtracts nothing for the message row.
INSERT INTO pgbus.tenant_usage (tenant_id, bytes)
  SELECT tenant_id, -sum(size) FROM pgbus.messages
   WHERE payload_id IS NOT NULL AND payload IS NOT NULL
   GROUP BY tenant_id HAVING sum(size) <> 0;
