// The one place where domain errors become wire errors.
#ifndef PGBUS_SERVICE_API_STATUS_MAP_H_
#define PGBUS_SERVICE_API_STATUS_MAP_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace pgbus::api {

// absl and gRPC share code numbers; INTERNAL details are logged, not sent.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_STATUS_MAP_H_
