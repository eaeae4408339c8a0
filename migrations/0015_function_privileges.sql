-- Functions are not PUBLIC's to call (issue 10). Postgres grants EXECUTE on
-- every new function to PUBLIC; five of pgbus's run as their owner
-- (SECURITY DEFINER: the reaper, the ledger folds, the API key lookup and
-- the stored-bytes trigger), so any role that could reach the schema could
-- run them. The migrator grants pgbusd's role exactly the functions its
-- statements call (see kAppFunctions in service/store/postgres/migrator.cc);
-- trigger functions need no grant (Postgres checks EXECUTE when a trigger
-- is created, not when it fires). Functions created later start the same
-- way.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgbus FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgbus REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
