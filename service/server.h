#ifndef PGBUS_SERVICE_SERVER_H_
#define PGBUS_SERVICE_SERVER_H_

#include "absl/status/status.h"
#include "service/config/config.h"

namespace pgbus {

// Serves until SIGTERM or SIGINT, then stops accepting, ends streams with
// UNAVAILABLE, finishes calls in flight (within shutdown_grace_ms) and
// returns OK. SIGTERM/SIGINT must be blocked in every thread beforehand.
absl::Status Serve(const config::Config& config);

}  // namespace pgbus

#endif  // PGBUS_SERVICE_SERVER_H_
