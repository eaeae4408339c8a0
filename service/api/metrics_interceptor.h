// A gRPC server interceptor (gRPC's experimental interceptor API) that
// counts every RPC by method and status code, with its duration, in the
// process's metrics (obs/metrics.h).
#ifndef PGBUS_SERVICE_API_METRICS_INTERCEPTOR_H_
#define PGBUS_SERVICE_API_METRICS_INTERCEPTOR_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

namespace pgbus::api {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> RpcMetricsInterceptor();

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_METRICS_INTERCEPTOR_H_
