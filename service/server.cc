#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.pb.h"
#include "service/api/admin_service.h"
#include "service/api/bus_service.h"
#include "service/api/metrics_interceptor.h"
#include "service/auth/authenticator.h"
#include "service/auth/limiter.h"
#include "service/bus/bus.h"
#include "service/bus/reaper.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"
#include "service/obs/metrics.h"
#include "service/store/postgres/pg_store.h"

namespace pgbus {
namespace {

// The grpc.health.v1 service name of the liveness probe (see Serve).
constexpr char kLivenessService[] = "liveness";
// Subscriptions whose backlog the metrics carry at most (their labels are
// series: a bound on the scrape's size).
constexpr int kMaxBacklogSeries = 1000;

absl::StatusOr<std::string> ReadPem(const char* setting, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    return absl::InvalidArgumentError(absl::StrCat("setting ", setting, "=\"", path,
                                                   "\": cannot read that file"));
  }
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("setting ", setting, "=\"", path,
                                                   "\": not a PEM file"));
  }
  return pem;
}

// Plaintext, TLS, or mutual TLS (client certificate required and verified).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const config::Config& config) {
  if (config.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("tls_cert_file", config.tls_cert_file));
  ASSIGN_OR_RETURN(pair.private_key, ReadPem("tls_key_file", config.tls_key_file));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!config.tls_client_ca_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("tls_client_ca_file",
                                                     config.tls_client_ca_file));
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace

absl::Status Serve(const config::Config& config) {
  if (config.database_url.empty()) {
    return absl::InvalidArgumentError(
        "setting database_url is required: set PGBUS_DATABASE_URL (or database_url in the "
        "--config file) to the connection string of pgbusd's role");
  }
  store::postgres::PgStoreOptions store_options;
  store_options.dsn = config.database_url;
  // Workers, committers, the LISTEN connection, and one spare (start-up
  // checks, the metrics sampler).
  store_options.pool_size = config.workers + config.publish_committers + 2;
  store_options.statement_timeout_ms = config.statement_timeout_ms;
  ASSIGN_OR_RETURN(std::unique_ptr<store::postgres::PgStore> store,
                   store::postgres::PgStore::Open(store_options));
  if (config.dev_mode) {
    RETURN_IF_ERROR(store->EnsureTenant(config.default_tenant));
    obs::Warn("dev_mode", {{"auth", "OFF"},
                           {"tenant", config.default_tenant},
                           {"note", "every caller is this tenant with every scope; never use "
                                    "dev_mode where the port is reachable by others"}});
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   ServerCredentials(config));

  // Payload bytes of calls in flight, from decode to commit (or to the end
  // of an upload): past this, calls are refused with UNAVAILABLE.
  MemoryBudget call_memory(int64_t{config.max_call_memory_mb} << 20);
  WorkerPool pool("db", config.workers, static_cast<size_t>(config.max_queued_tasks));
  bus::BusOptions bus_options;
  bus_options.inline_payload_limit = config.inline_payload_limit;
  bus_options.max_payload_bytes = config.max_payload_bytes;
  bus_options.publish_committers = config.publish_committers;
  bus_options.publish_max_batch = config.publish_max_batch;
  bus_options.max_queued_publishes = config.max_queued_tasks;
  bus_options.poll_interval = absl::Milliseconds(config.poll_interval_ms);
  bus::Bus bus(store.get(), &pool, bus_options);
  // Publishes on other replicas reach our subscribers through NOTIFY; our
  // own wake them directly (Publisher's on_committed).
  RETURN_IF_ERROR(store->StartListening(
      [&bus](const std::vector<model::TopicKey>& topics) { bus.Wake(topics); }));

  bus::Reaper reaper(store.get(), &pool, absl::Milliseconds(config.reap_interval_ms),
                     /*batch=*/1000);

  auth::AuthOptions auth_options;
  auth_options.dev_mode = config.dev_mode;
  auth_options.dev_tenant = config.default_tenant;
  auth_options.tenant_from_cert = config.tls_client_tenant_from_cert;
  auth_options.cache_ttl = absl::Milliseconds(config.auth_cache_ms);
  auth::Authenticator authenticator(store.get(), auth_options);
  auth::Limiter limiter(config.max_streams);
  api::CallContext cc{&pool, &authenticator, &limiter, &call_memory};
  api::BusService bus_service(&bus, cc);
  api::AdminService admin_service(&bus, cc);

  // Referencing the health descriptor keeps health.pb.o in the link, and
  // with it the descriptor that reflection serves.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.listen, credentials, &port);
  // gRPC's own buffers get the same bound (its transport reads, before a
  // call reaches pgbusd's budget above).
  grpc::ResourceQuota quota("pgbusd");
  quota.Resize(static_cast<size_t>(config.max_call_memory_mb) << 20);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, config.max_calls_per_connection);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(api::RpcMetricsInterceptor());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(&bus_service);
  builder.RegisterService(&admin_service);
  // Payloads above the inline limit are uploaded in chunks; the receive
  // limit stays at a few MiB.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::max<int64_t>(4 << 20, config.inline_payload_limit + (1 << 20))));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen));
  }
  std::string host = config.listen.substr(0, config.listen.rfind(':'));
  obs::Info("listening",
            {{"addr", absl::StrCat(host, ":", port)},
             {"tls", config.tls_cert_file.empty()            ? "off"
                     : config.tls_client_ca_file.empty()     ? "on"
                                                             : "mutual"},
             {"auth", config.dev_mode ? "off (dev_mode)" : "api keys"},
             {"workers", std::to_string(config.workers)}});
  // Prometheus metrics: counted always, served when metrics_listen is set;
  // the gauges are sampled every second.
  std::unique_ptr<obs::MetricsServer> metrics;
  if (!config.metrics_listen.empty()) {
    ASSIGN_OR_RETURN(metrics, obs::ServeMetrics(config.metrics_listen));
    obs::Info("metrics", {{"addr", absl::StrCat(config.metrics_listen.substr(
                                                    0, config.metrics_listen.rfind(':')),
                                                ":", metrics->port())}});
  }
  // Every subscription's backlog (one query across tenants, at most
  // kMaxBacklogSeries of them) every metrics_backlog_interval_ms, only when
  // metrics are served.
  absl::Notification stop_sampling;
  std::thread sampler([&] {
    absl::Time next_backlog = absl::InfinitePast();
    do {
      bus::Dispatcher::Counts c = bus.StreamCounts();
      obs::SetOpenStreams(c.streams);
      obs::SetOutstandingMessages(c.outstanding);
      obs::SetWorkerQueueDepth(static_cast<int64_t>(pool.QueueDepth()));
      if (metrics != nullptr && absl::Now() >= next_backlog) {
        next_backlog = absl::Now() + absl::Milliseconds(config.metrics_backlog_interval_ms);
        auto backlog = store->SubscriptionBacklog(kMaxBacklogSeries);
        if (!backlog.ok()) {
          obs::Warn("backlog_metrics_failed", {{"error", backlog.status().ToString()}});
        } else {
          obs::SetSubscriptionBacklog(*backlog);
        }
      }
    } while (!stop_sampling.WaitForNotificationWithTimeout(absl::Seconds(1)));
  });

  if (!config.port_file.empty()) {
    std::string tmp = config.port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), config.port_file.c_str());
  }

  // grpc.health.v1: the overall status ("", readiness) is SERVING while
  // Postgres answers and until shutdown begins; "liveness" is SERVING for as
  // long as the process answers at all (Kubernetes restarts a replica only
  // when it is wedged, not when its database is away).
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(kLivenessService, true);
  absl::Notification stop_health;
  // Once shutdown begins it owns the status: set under this lock, so a ping
  // that was under way (it may hang while Postgres does) cannot set it back.
  absl::Mutex health_mu;
  bool shutting_down = false;
  std::thread health_watch([&] {
    bool serving = true;
    while (!stop_health.WaitForNotificationWithTimeout(
        absl::Milliseconds(config.health_interval_ms))) {
      absl::Status db = store->Ping();
      absl::MutexLock lock(&health_mu);
      if (shutting_down) break;
      if (db.ok() != serving) {
        serving = db.ok();
        health->SetServingStatus("", serving);
        if (serving) {
          obs::Info("ready", {{"postgres", "answers"}});
        } else {
          obs::Warn("not_ready", {{"error", db.ToString()}});
        }
      }
    }
  });

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int sig = 0;
  sigwait(&signals, &sig);
  obs::Info("shutting_down", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});

  {
    // Readiness first, at once: load balancers stop sending new calls.
    absl::MutexLock lock(&health_mu);
    shutting_down = true;
    health->SetServingStatus(false);
  }
  stop_health.Notify();
  stop_sampling.Notify();
  sampler.join();
  bus.Shutdown();  // streams end with UNAVAILABLE; queued publishes commit
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(config.shutdown_grace_ms)));
  server->Wait();
  health_watch.join();  // a ping in flight ends by its own timeouts
  reaper.Stop();
  pool.Stop();
  store->StopListening();
  obs::Info("stopped");
  return absl::OkStatus();
}

}  // namespace pgbus
