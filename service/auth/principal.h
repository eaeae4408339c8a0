// Who a request runs as, and what it may do: the tenant, the scopes and the
// topic patterns of its API key (or of dev mode / a client certificate),
// and the tenant's quotas.
#ifndef PGBUS_SERVICE_AUTH_PRINCIPAL_H_
#define PGBUS_SERVICE_AUTH_PRINCIPAL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pgbus::auth {

enum class Scope { kPublish = 1, kSubscribe = 2, kAdmin = 4 };

const char* ScopeName(Scope scope);
// "publish" / "subscribe" / "admin"; INVALID_ARGUMENT otherwise.
absl::StatusOr<Scope> ParseScope(absl::string_view name);

// A tenant's own limits; unset: none beyond the server's.
struct TenantQuotas {
  std::optional<int64_t> max_message_bytes;
  std::optional<int64_t> max_stored_bytes;  // enforced by Postgres (0007)
  std::optional<int> max_publish_rate;      // messages per second, per replica
  std::optional<int> max_streams;           // Subscribe streams, per replica
};

struct Principal {
  std::string tenant;
  // How the caller proved who it is: "key <id>", "cert <CN>", "dev-mode".
  std::string identity;
  int scopes = 0;  // Scope bits
  std::vector<std::string> topics = {">"};  // patterns
  TenantQuotas quotas;

  // Whether the topic patterns cover every topic.
  bool AllTopics() const;
  bool HasScope(Scope scope) const { return (scopes & static_cast<int>(scope)) != 0; }
  bool TopicAllowed(absl::string_view topic) const;
  // PERMISSION_DENIED naming the scope and topic when not allowed.
  absl::Status Check(Scope scope, absl::string_view topic) const;
  // Only the scope (calls not tied to one topic, such as listing).
  absl::Status CheckScope(Scope scope) const;
  // `a`, or `b` when the principal lacks `a`, on the topic.
  absl::Status CheckAny(Scope a, Scope b, absl::string_view topic) const;
};

}  // namespace pgbus::auth

#endif  // PGBUS_SERVICE_AUTH_PRINCIPAL_H_
