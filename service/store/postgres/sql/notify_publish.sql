-- Tells every replica's LISTEN connection that topics have new messages;
-- $1 "tenant<TAB>topic<LF>" per topic, or '' for any (NotifyPayload,
-- pg_rows.h). The channel is kPublishChannel there.
SELECT pg_notify('pgbus_publish', $1);
