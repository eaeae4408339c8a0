// pgbusd's settings: one typed struct, read from (highest precedence first)
// command-line flags, PGBUS_* environment variables, a key=value file named
// by --config / PGBUS_CONFIG, and the defaults below. Validated once at
// start-up; an error names the setting and what it accepts.
//
// This module depends on nothing else in pgbus.
#ifndef PGBUS_SERVICE_CONFIG_CONFIG_H_
#define PGBUS_SERVICE_CONFIG_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pgbus::config {

struct Config {
  // host:port to serve gRPC on; port 0 picks a free port (see port_file).
  std::string listen = "127.0.0.1:50051";
  // libpq connection string or URL of the role pgbusd runs as (secret:
  // environment or file only, never a flag).
  std::string database_url;
  // Requests run as this tenant until API keys exist.
  std::string default_tenant = "default";
  // Threads (and Postgres connections) for database work.
  int workers = 8;
  // Tasks waiting for a worker before new work is refused with UNAVAILABLE.
  int max_queued_tasks = 10000;
  // Threads (and connections) committing coalesced Publish batches.
  int publish_committers = 2;
  // Most messages in one group-commit transaction.
  int publish_max_batch = 1000;
  // Largest payload carried inline by Publish and Subscribe.
  int64_t inline_payload_limit = 256 * 1024;
  // Largest payload UploadPayload accepts.
  int64_t max_payload_bytes = int64_t{2} << 30;
  // Fallback poll for publishes other replicas' NOTIFY did not announce, and
  // for redelivery of expired leases.
  int poll_interval_ms = 500;
  // How often expired messages are reaped (each pass: batches of 1000).
  int reap_interval_ms = 1000;
  // statement_timeout of every statement pgbusd runs.
  int statement_timeout_ms = 30000;
  // Time to end streams and finish calls after SIGTERM.
  int shutdown_grace_ms = 10000;
  // When set, the bound port is written here once serving (tests use it).
  std::string port_file;
};

// Parses `args` (argv without the program and subcommand) and `env`.
// INVALID_ARGUMENT names the setting and the accepted values.
absl::StatusOr<Config> Load(const std::vector<std::string>& args,
                            const std::map<std::string, std::string>& env);

// The environment of this process as a map, for Load().
std::map<std::string, std::string> ProcessEnvironment();

// "--name (PGBUS_NAME) default: help" lines for --help.
std::string Usage();

}  // namespace pgbus::config

#endif  // PGBUS_SERVICE_CONFIG_CONFIG_H_
