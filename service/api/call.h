// What every handler shares: who the caller is, and running blocking domain
// work on the worker pool so that no gRPC thread ever waits on Postgres.
#ifndef PGBUS_SERVICE_API_CALL_H_
#define PGBUS_SERVICE_API_CALL_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <utility>

#include "service/api/status_map.h"
#include "service/common/worker_pool.h"

namespace pgbus::api {

struct CallContext {
  WorkerPool* pool;
  // Every request runs as this tenant until API keys (and their tenants)
  // exist.
  std::string default_tenant;

  const std::string& TenantOf(grpc::CallbackServerContext*) const { return default_tenant; }
};

inline grpc::Status Overloaded() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "server overloaded: too much work queued; retry with backoff");
}

// Runs `fn` (returning absl::Status, filling the response) on the pool and
// finishes the call with its result.
template <typename Fn>
grpc::ServerUnaryReactor* RunOnPool(const CallContext& cc, grpc::CallbackServerContext* ctx,
                                    Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!cc.pool->Submit([reactor, fn = std::move(fn)]() mutable {
        reactor->Finish(ToGrpcStatus(fn()));
      })) {
    reactor->Finish(Overloaded());
  }
  return reactor;
}

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_CALL_H_
