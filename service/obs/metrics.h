// Prometheus metrics of the process: what each layer counts, behind plain
// functions so that no layer but this one sees prometheus-cpp. The values
// live in one process-wide registry; ServeMetrics exposes it as Prometheus
// text on http://<listen>/metrics (prometheus-cpp's own small HTTP server).
//
// Thread safety: every function is safe from any thread.
#ifndef PGBUS_SERVICE_OBS_METRICS_H_
#define PGBUS_SERVICE_OBS_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pgbus::obs {

// One finished RPC: its full method name ("/pgbus.v1.BusService/Publish"),
// its status code's name ("OK", "NOT_FOUND") and how long it took (a
// Subscribe stream: its whole life).
void CountRpc(absl::string_view method, absl::string_view code, absl::Duration took);

// One group commit of `messages` messages, committed in `took`.
void CountPublishCommit(int messages, absl::Duration took);
// One claim that delivered `messages`, in `took`.
void CountClaim(int messages, absl::Duration took);
// Deliveries a group commit leased straight to a stream (bus::Dispatcher).
void CountHandedOff(int messages);
// Leases settled: acked, nacked, and acks or lease changes that found the
// lease gone (EXPIRED: the message may come again).
void CountAcked(int64_t n);
void CountNacked(int64_t n);
void CountLeaseExpired(int64_t n);
// Deliveries moved to their subscription's dead-letter topic.
void CountDeadLettered(int64_t n);
// Expired messages the reaper deleted.
void CountReaped(int64_t n);
// Leases a stream's replica looked up (bus::Dispatcher): still held, gone.
void CountLeaseLookups(int64_t held, int64_t gone);
// A Postgres error, by SQLSTATE class (its first two characters).
void CountPostgresError(absl::string_view sqlstate);
// A caller waited `waited` for a pooled Postgres connection.
void CountPoolWait(absl::Duration waited);

// Gauges, sampled by the server every second.
void SetOpenStreams(int64_t streams);
void SetOutstandingMessages(int64_t messages);
void SetWorkerQueueDepth(int64_t tasks);
// Each subscription's backlog (replaces the previous set: subscriptions
// not listed lose their series).
struct SubscriptionBacklog {
  std::string tenant;
  std::string subscription;
  int64_t ready = 0;
  int64_t in_flight = 0;
  double oldest_unacked_seconds = 0;
};
void SetSubscriptionBacklog(const std::vector<SubscriptionBacklog>& backlog);

// Serves /metrics until destroyed.
class MetricsServer {
 public:
  virtual ~MetricsServer() = default;
  // The bound port (for listen addresses with port 0).
  virtual int port() const = 0;
};
// `listen` is host:port; INVALID_ARGUMENT or UNAVAILABLE when it cannot
// listen there.
absl::StatusOr<std::unique_ptr<MetricsServer>> ServeMetrics(const std::string& listen);

}  // namespace pgbus::obs

#endif  // PGBUS_SERVICE_OBS_METRICS_H_
