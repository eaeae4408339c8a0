// What every handler shares: who the caller is (authentication on the
// worker pool, or at once when cached), what it may do, and running
// blocking domain work on the worker pool so that no gRPC thread ever waits
// on Postgres.
#ifndef PGBUS_SERVICE_API_CALL_H_
#define PGBUS_SERVICE_API_CALL_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <utility>

#include "service/api/status_map.h"
#include "service/auth/authenticator.h"
#include "service/auth/limiter.h"
#include "service/auth/principal.h"
#include "service/bus/bus.h"
#include "service/common/memory_budget.h"
#include "service/common/worker_pool.h"

namespace pgbus::api {

struct CallContext {
  WorkerPool* pool;
  auth::Authenticator* auth;
  auth::Limiter* limiter;
  MemoryBudget* memory;  // max_call_memory_mb
};

// The answer to a call that would pass max_call_memory_mb.
grpc::Status OutOfCallMemory(const MemoryBudget& memory);

// The `authorization` header and the verified client certificate's CN.
auth::Credentials CredentialsOf(grpc::CallbackServerContext* ctx);

inline grpc::Status Overloaded() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "server overloaded: too much work queued; retry with backoff");
}

// The principal's quotas that bus/ enforces.
inline bus::TenantLimits LimitsOf(const auth::Principal& principal) {
  return bus::TenantLimits{principal.quotas.max_message_bytes};
}

// `scope` (or, when given, `alt`) on the topic of `subscription`. Looks the
// subscription up only for a principal limited to some topics.
absl::Status AuthorizeSubscription(bus::Bus& bus, const auth::Principal& principal,
                                   auth::Scope scope, const std::string& subscription,
                                   std::optional<auth::Scope> alt = std::nullopt);

// Authenticates the caller, then runs `fn(principal)` (returning
// absl::Status, filling the response) on the pool and finishes the call
// with its result.
template <typename Fn>
grpc::ServerUnaryReactor* RunOnPool(const CallContext& cc, grpc::CallbackServerContext* ctx,
                                    Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!cc.pool->Submit(
          [reactor, auth = cc.auth, creds = CredentialsOf(ctx), fn = std::move(fn)]() mutable {
            absl::StatusOr<auth::Principal> principal = auth->Authenticate(creds);
            reactor->Finish(ToGrpcStatus(principal.ok() ? fn(*principal) : principal.status()));
          })) {
    reactor->Finish(Overloaded());
  }
  return reactor;
}

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_CALL_H_
