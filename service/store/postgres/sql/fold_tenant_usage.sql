-- Folds the stored-bytes ledger to one row per tenant (0007).
SELECT pgbus.fold_tenant_usage();
