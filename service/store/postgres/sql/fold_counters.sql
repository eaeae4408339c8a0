-- Folds the stats counters to one row per topic and subscription (0009).
SELECT pgbus.fold_counters();
