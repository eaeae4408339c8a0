// The operator's side of tenants and API keys, over the schema owner's
// connection (`pgbusd tenant ...`, `pgbusd key ...`). pgbusd itself only
// reads keys (PgStore::LookupApiKey) and never changes a tenant.
#ifndef PGBUS_SERVICE_STORE_POSTGRES_TENANT_ADMIN_H_
#define PGBUS_SERVICE_STORE_POSTGRES_TENANT_ADMIN_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "service/store/postgres/connection.h"
#include "service/store/store.h"

namespace pgbus::store::postgres {

// A row of sql/owner/get_tenant.sql's columns.
TenantRecord ReadTenant(RowReader& row);

class TenantAdmin {
 public:
  // UNAVAILABLE when Postgres cannot be reached.
  static absl::StatusOr<std::unique_ptr<TenantAdmin>> Connect(const std::string& owner_dsn);

  // ALREADY_EXISTS when it does.
  absl::Status CreateTenant(const TenantRecord& tenant);
  // Sets all four quotas as given. NOT_FOUND for an unknown tenant.
  absl::Status UpdateQuotas(const TenantRecord& tenant);
  absl::StatusOr<TenantRecord> GetTenant(const std::string& tenant);
  absl::StatusOr<std::vector<TenantRecord>> ListTenants();
  // NOT_FOUND for an unknown tenant.
  absl::Status InsertKey(const ApiKeyRecord& key);
  absl::StatusOr<std::vector<ApiKeyRecord>> ListKeys(const std::string& tenant);
  // Returns the key's tenant; NOT_FOUND for an unknown key. Revoking twice
  // keeps the first time.
  absl::StatusOr<std::string> RevokeKey(const std::string& key_id);

 private:
  explicit TenantAdmin(std::unique_ptr<Connection> conn) : conn_(std::move(conn)) {}
  std::unique_ptr<Connection> conn_;
};

}  // namespace pgbus::store::postgres

#endif  // PGBUS_SERVICE_STORE_POSTGRES_TENANT_ADMIN_H_
