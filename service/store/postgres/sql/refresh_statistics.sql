-- Analyses the hot tables that have doubled since their statistics (see
-- migrations/0016_fresh_statistics.sql); returns how many.
SELECT pgbus.refresh_statistics();
