#ifndef PGBUS_SERVICE_SERVER_H_
#define PGBUS_SERVICE_SERVER_H_

#include "absl/status/status.h"
#include "service/config/config.h"

namespace pgbus {

// Threads of a pgbusd process (wired by Serve; keep this map true):
//
//   main        Serve: builds everything, waits for SIGTERM/SIGINT, shuts down.
//   gRPC        the callback API's threads run the reactors of api/. They
//               never wait on Postgres: every store call goes to the "db"
//               worker pool, whose task then finishes or writes the call.
//   db pool     `workers` threads (WorkerPool "db"): admin calls, acks and
//               deadline changes, uploads, retrieves, the Dispatcher's claims,
//               the reaper's passes. Each task takes a connection from the
//               store's pool for its transaction and returns it.
//   committers  `publish_committers` threads of bus::Publisher: each takes
//               what queued, commits it as one group (a pooled connection),
//               answers the calls and wakes the Dispatcher.
//   poller      bus::Dispatcher's fallback poll (every poll_interval_ms) kicks
//               every stream; the claim itself runs on the db pool.
//   reaper      bus::Reaper's timer; each pass runs on the db pool.
//   listener    PgStore's LISTEN connection (its own, outside the pool): turns
//               NOTIFYs from every replica into Dispatcher wake-ups.
//   health      pings Postgres on its own connection every health_interval_ms
//               and sets readiness; joined last at shutdown.
//   sampler     gauges every second, the backlog query every
//               metrics_backlog_interval_ms (a connection from the pool).
//   metrics     prometheus-cpp's HTTP exposer (civetweb threads), when
//               metrics_listen is set; reads counters only.
//
// Locks: each mutex guards one object's state (Dispatcher, each Stream,
// Publisher, WorkerPool, Reaper, Authenticator's cache, Limiter, the
// reactors'), is held for short in-memory work only, and no code path holds
// two at once: a caller copies what it needs, unlocks, then calls the next
// object (Dispatcher::Snapshot then Stream::Kick; Stream::Kick then
// WorkerPool::Submit; the committers answer and wake outside their lock).
// No lock is held across a store call or a gRPC write.
//
// Serves until SIGTERM or SIGINT, then stops accepting, ends streams with
// UNAVAILABLE, finishes calls in flight (within shutdown_grace_ms) and
// returns OK. SIGTERM/SIGINT must be blocked in every thread beforehand.
absl::Status Serve(const config::Config& config);

}  // namespace pgbus

#endif  // PGBUS_SERVICE_SERVER_H_
