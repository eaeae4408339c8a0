-- Enforces topics.max_message_bytes inside the publish statement. Raising
-- aborts the group-commit transaction; pgbusd then commits each call alone,
-- so only the call with the oversize message fails (RESOURCE_EXHAUSTED via
-- SQLSTATE 54000, program_limit_exceeded) and nothing of it is stored.
CREATE FUNCTION pgbus.reject_oversize(topic text, size bigint, max_bytes bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  RAISE EXCEPTION USING
    ERRCODE = '54000',
    MESSAGE = format('payload is %s bytes; topic "%s" accepts at most %s (max_message_bytes)',
                     size, topic, max_bytes);
END
$$;
