#include "service/api/status_map.h"

#include <string>

#include "service/obs/log.h"

namespace pgbus::api {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  if (status.code() == absl::StatusCode::kInternal || status.code() == absl::StatusCode::kUnknown) {
    obs::Error("internal_error", {{"error", status.ToString()}});
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        "internal error; the server log has the details");
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace pgbus::api
