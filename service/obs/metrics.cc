#include "service/obs/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <exception>
#include <map>
#include <set>
#include <utility>

#include "absl/synchronization/mutex.h"

#include "absl/strings/str_cat.h"

namespace pgbus::obs {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// Seconds, from 0.5 ms to 30 s.
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{
      0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30};
  return *b;
}

struct Metrics {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& rpcs =
      BuildCounter().Name("pgbus_rpc_requests_total")
          .Help("RPCs finished, by method and status code").Register(*registry);
  prometheus::Family<Histogram>& rpc_seconds =
      BuildHistogram().Name("pgbus_rpc_duration_seconds")
          .Help("RPC duration by method (a Subscribe stream: its whole life)")
          .Register(*registry);
  Histogram& commit_batch =
      BuildHistogram().Name("pgbus_publish_batch_messages")
          .Help("messages per publish group commit").Register(*registry)
          .Add({}, Histogram::BucketBoundaries{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000});
  Histogram& commit_seconds =
      BuildHistogram().Name("pgbus_publish_commit_seconds")
          .Help("publish group commit latency (one transaction)").Register(*registry)
          .Add({}, LatencyBuckets());
  Histogram& claim_seconds =
      BuildHistogram().Name("pgbus_claim_seconds")
          .Help("latency of a claim (one transaction that leases messages to a stream)")
          .Register(*registry).Add({}, LatencyBuckets());
  prometheus::Counter& delivered =
      BuildCounter().Name("pgbus_messages_delivered_total")
          .Help("messages leased to Subscribe streams (redeliveries included)")
          .Register(*registry).Add({});
  prometheus::Counter& handed_off =
      BuildCounter().Name("pgbus_messages_handed_off_total")
          .Help("messages leased to Subscribe streams by the group commit that stored them "
                "(no claim; also counted in pgbus_messages_delivered_total)")
          .Register(*registry).Add({});
  prometheus::Family<prometheus::Counter>& settled =
      BuildCounter().Name("pgbus_leases_settled_total")
          .Help("leases ended by outcome: acked, nacked, expired (an ack or lease change "
                "that came too late), dead_lettered")
          .Register(*registry);
  prometheus::Counter& acked = settled.Add({{"outcome", "acked"}});
  prometheus::Counter& nacked = settled.Add({{"outcome", "nacked"}});
  prometheus::Counter& expired = settled.Add({{"outcome", "expired"}});
  prometheus::Counter& dead_lettered = settled.Add({{"outcome", "dead_lettered"}});
  prometheus::Family<prometheus::Counter>& lease_lookups =
      BuildCounter().Name("pgbus_lease_lookups_total")
          .Help("leases a stream's replica looked up at its poll, not having heard of them "
                "(acks and deadline changes through other replicas): still held, or gone "
                "(their credit returned)")
          .Register(*registry);
  prometheus::Counter& lookups_held = lease_lookups.Add({{"result", "held"}});
  prometheus::Counter& lookups_gone = lease_lookups.Add({{"result", "gone"}});
  prometheus::Counter& reaped =
      BuildCounter().Name("pgbus_reaped_messages_total")
          .Help("expired messages deleted by the reaper").Register(*registry).Add({});
  prometheus::Family<prometheus::Counter>& pg_errors =
      BuildCounter().Name("pgbus_postgres_errors_total")
          .Help("Postgres errors by SQLSTATE class").Register(*registry);
  Histogram& pool_wait =
      BuildHistogram().Name("pgbus_db_pool_wait_seconds")
          .Help("time callers waited for a pooled Postgres connection (only waits)")
          .Register(*registry).Add({}, LatencyBuckets());
  prometheus::Gauge& open_streams =
      BuildGauge().Name("pgbus_open_streams").Help("Subscribe streams open on this replica")
          .Register(*registry).Add({});
  prometheus::Gauge& outstanding =
      BuildGauge().Name("pgbus_outstanding_messages")
          .Help("messages leased to this replica's streams and not yet settled")
          .Register(*registry).Add({});
  prometheus::Family<prometheus::Gauge>& backlog_ready =
      BuildGauge().Name("pgbus_subscription_ready_messages")
          .Help("messages ready for delivery, per subscription (sampled on an interval)")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& backlog_in_flight =
      BuildGauge().Name("pgbus_subscription_in_flight_messages")
          .Help("messages leased and not yet settled, per subscription").Register(*registry);
  prometheus::Family<prometheus::Gauge>& backlog_oldest =
      BuildGauge().Name("pgbus_subscription_oldest_unacked_seconds")
          .Help("age of the oldest message not yet acked, per subscription").Register(*registry);
  absl::Mutex backlog_mu;
  std::set<std::pair<std::string, std::string>> backlog_keys ABSL_GUARDED_BY(backlog_mu);
  prometheus::Gauge& queue_depth =
      BuildGauge().Name("pgbus_worker_queue_depth")
          .Help("database tasks waiting for a worker thread").Register(*registry).Add({});
};

Metrics& M() {
  static Metrics* m = new Metrics();  // never destroyed: counted until exit
  return *m;
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

class Server : public MetricsServer {
 public:
  explicit Server(std::unique_ptr<prometheus::Exposer> exposer) : exposer_(std::move(exposer)) {}
  int port() const override {
    auto ports = exposer_->GetListeningPorts();
    return ports.empty() ? 0 : ports.front();
  }

 private:
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace

void CountRpc(absl::string_view method, absl::string_view code, absl::Duration took) {
  Metrics& m = M();
  m.rpcs.Add({{"method", std::string(method)}, {"code", std::string(code)}}).Increment();
  m.rpc_seconds.Add({{"method", std::string(method)}}, LatencyBuckets()).Observe(Seconds(took));
}

void CountPublishCommit(int messages, absl::Duration took) {
  M().commit_batch.Observe(messages);
  M().commit_seconds.Observe(Seconds(took));
}

void CountClaim(int messages, absl::Duration took) {
  M().claim_seconds.Observe(Seconds(took));
  if (messages > 0) M().delivered.Increment(messages);
}

void CountHandedOff(int messages) {
  M().delivered.Increment(messages);
  M().handed_off.Increment(messages);
}

void CountAcked(int64_t n) { M().acked.Increment(static_cast<double>(n)); }
void CountNacked(int64_t n) { M().nacked.Increment(static_cast<double>(n)); }
void CountLeaseExpired(int64_t n) { M().expired.Increment(static_cast<double>(n)); }
void CountDeadLettered(int64_t n) { M().dead_lettered.Increment(static_cast<double>(n)); }
void CountReaped(int64_t n) { M().reaped.Increment(static_cast<double>(n)); }
void CountLeaseLookups(int64_t held, int64_t gone) {
  M().lookups_held.Increment(static_cast<double>(held));
  M().lookups_gone.Increment(static_cast<double>(gone));
}

void CountPostgresError(absl::string_view sqlstate) {
  std::string cls = sqlstate.size() >= 2 ? std::string(sqlstate.substr(0, 2)) : "unknown";
  M().pg_errors.Add({{"class", cls}}).Increment();
}

void CountPoolWait(absl::Duration waited) { M().pool_wait.Observe(Seconds(waited)); }

void SetOpenStreams(int64_t streams) { M().open_streams.Set(static_cast<double>(streams)); }
void SetOutstandingMessages(int64_t messages) {
  M().outstanding.Set(static_cast<double>(messages));
}
void SetWorkerQueueDepth(int64_t tasks) { M().queue_depth.Set(static_cast<double>(tasks)); }

void SetSubscriptionBacklog(const std::vector<SubscriptionBacklog>& backlog) {
  Metrics& m = M();
  absl::MutexLock lock(&m.backlog_mu);
  std::set<std::pair<std::string, std::string>> now;
  for (const auto& b : backlog) {
    std::map<std::string, std::string> labels = {{"tenant", b.tenant},
                                                  {"subscription", b.subscription}};
    m.backlog_ready.Add(labels).Set(static_cast<double>(b.ready));
    m.backlog_in_flight.Add(labels).Set(static_cast<double>(b.in_flight));
    m.backlog_oldest.Add(labels).Set(b.oldest_unacked_seconds);
    now.insert({b.tenant, b.subscription});
  }
  for (const auto& [tenant, subscription] : m.backlog_keys) {
    if (now.count({tenant, subscription})) continue;
    std::map<std::string, std::string> labels = {{"tenant", tenant},
                                                  {"subscription", subscription}};
    for (auto* family : {&m.backlog_ready, &m.backlog_in_flight, &m.backlog_oldest}) {
      if (family->Has(labels)) family->Remove(&family->Add(labels));
    }
  }
  m.backlog_keys = std::move(now);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> ServeMetrics(const std::string& listen) {
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/1);
    exposer->RegisterCollectable(M().registry);
    return std::unique_ptr<MetricsServer>(new Server(std::move(exposer)));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics_listen: cannot serve metrics on ", listen, ": ", e.what()));
  }
}

}  // namespace pgbus::obs
