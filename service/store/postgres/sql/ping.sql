-- Whether the session answers (the health check).
SELECT 1;
