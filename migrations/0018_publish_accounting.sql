-- Publishing accounts for itself (issue 9). Two statement triggers on
-- messages (account_insert: the stored-bytes ledger and its quota,
-- 0007/0014; count_published: the published counter, 0009) cost a
-- transition table of every inserted row and two PL/pgSQL calls per
-- publish: 0.7 of the 1.2 ms of a small group commit's insert, a quarter of
-- Postgres's CPU per message at one message a call. The three statements
-- that insert messages (publish, dead-lettering, redrive) now append to
-- both ledgers themselves, in plain SQL in the same statement (see
-- PGBUS_ACCOUNT_PUBLISHED in service/store/postgres/sql.h), with the same
-- quota check: an insert that would take the tenant over max_stored_bytes
-- fails with SQLSTATE 54000 and stores nothing.
--
-- Deleting messages still gives their bytes back through account_delete,
-- and payload chunks keep their triggers (an upload is not a hot path).
-- Anything else that inserts into pgbus.messages must account as those
-- statements do.
DROP TRIGGER account_insert ON pgbus.messages;
DROP TRIGGER count_published ON pgbus.messages;
DROP FUNCTION pgbus.count_published();

-- pgbusd's role appends its tenant's deltas (it already appends counters);
-- it still cannot read or change another tenant's, nor its quota.
CREATE POLICY tenant_append ON pgbus.tenant_usage FOR INSERT
  WITH CHECK (tenant_id = (SELECT current_setting('pgbus.tenant_id', true)));

-- Raises the quota error inside a publishing statement (as
-- reject_oversize does for max_message_bytes); never returns.
CREATE FUNCTION pgbus.reject_stored_bytes(max_bytes bigint, used bigint, more bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = '54000', MESSAGE = format(
    'tenant quota max_stored_bytes=%s reached: %s bytes stored, this write needs %s '
    'more; wait for messages to expire or ask the operator to raise the quota',
    max_bytes, used, more);
END
$$;
