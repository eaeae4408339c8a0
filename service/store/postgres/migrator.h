// Applies the numbered migrations/NNNN_name.sql files (compiled into the
// binary) in order. Each runs in its own transaction and is recorded in
// pgbus.schema_migrations with its SHA-256; a session advisory lock makes
// replicas that start together take turns. Used by `pgbusd migrate`, by the
// tests and by the Helm migration Job alike.
#ifndef PGBUS_SERVICE_STORE_POSTGRES_MIGRATOR_H_
#define PGBUS_SERVICE_STORE_POSTGRES_MIGRATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgbus::store::postgres {

struct MigrationFile {
  const char* name;  // "0001_init.sql"
  const char* sql;
};

// The advisory lock (per database) a Migrate call holds while it migrates
// and grants: replicas starting together take turns. Anything else that
// changes the schema's grants takes it too (concurrent GRANTs on one object
// fail with "tuple concurrently updated"). Any constant works; it only has
// to be the same for every replica.
inline constexpr int64_t kMigrationLockKey = 0x70676275732d6d67;  // "pgbus-mg"

// The files of migrations/, sorted by name (generated at build time).
const std::vector<MigrationFile>& EmbeddedMigrations();

// Connects with `dsn` (the schema owner's role), applies what is missing
// and grants `app_role` the data privileges it needs (nothing more: it owns
// nothing). Returns how many migrations were applied.
// FAILED_PRECONDITION when an applied migration's text has changed since,
// or the database has a migration this binary does not know.
absl::StatusOr<int> Migrate(const std::string& dsn, const std::string& app_role,
                            const std::vector<MigrationFile>& files = EmbeddedMigrations());

// The newest version this binary knows.
int LatestVersion(const std::vector<MigrationFile>& files = EmbeddedMigrations());

}  // namespace pgbus::store::postgres

#endif  // PGBUS_SERVICE_STORE_POSTGRES_MIGRATOR_H_
