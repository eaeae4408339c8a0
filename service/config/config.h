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
  // Development only: no authentication; every call runs as
  // `default_tenant` with every scope. Off by default; the log warns.
  bool dev_mode = false;
  // The tenant of every call in dev mode.
  std::string default_tenant = "default";
  // How long a looked-up API key or tenant is trusted before it is read
  // again (a revoked key stops working within this time).
  int auth_cache_ms = 5000;
  // TLS: server certificate chain and private key (PEM files). Both or none.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Mutual TLS: CA bundle (PEM) that client certificates must chain to;
  // when set, a client without a valid certificate cannot connect.
  std::string tls_client_ca_file;
  // With mutual TLS: a call without an API key runs as the tenant named by
  // its certificate's common name, with every scope.
  bool tls_client_tenant_from_cert = false;
  // Subscribe streams this process serves at most (UNAVAILABLE beyond).
  int max_streams = 10000;
  // Payload memory of calls in flight, from decode to commit, in MiB (new
  // calls fail with UNAVAILABLE beyond). Also sizes gRPC's resource quota.
  int max_call_memory_mb = 1024;
  // HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: bounds what gRPC buffers for
  // one connection before pgbusd's budget sees it.
  int max_calls_per_connection = 100;
  // Threads (and Postgres connections) for database work.
  int workers = 8;
  // Tasks waiting for a worker, and Publish calls waiting for a commit,
  // before new work is refused with UNAVAILABLE.
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
  // How often readiness (grpc.health.v1, service "") checks that Postgres
  // answers.
  int health_interval_ms = 5000;
  // host:port to serve Prometheus metrics on (/metrics); empty: none.
  std::string metrics_listen;
  // How often the per-subscription backlog metrics are queried.
  int metrics_backlog_interval_ms = 15000;
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
