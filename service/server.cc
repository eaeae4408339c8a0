#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"
#include "service/api/admin_service.h"
#include "service/api/bus_service.h"
#include "service/bus/bus.h"
#include "service/bus/reaper.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"
#include "service/store/postgres/pg_store.h"

namespace pgbus {

absl::Status Serve(const config::Config& config) {
  if (config.database_url.empty()) {
    return absl::InvalidArgumentError(
        "setting database_url is required: set PGBUS_DATABASE_URL (or database_url in the "
        "--config file) to the connection string of pgbusd's role");
  }
  store::postgres::PgStoreOptions store_options;
  store_options.dsn = config.database_url;
  // Workers, committers, and one spare for start-up checks.
  store_options.pool_size = config.workers + config.publish_committers + 1;
  store_options.statement_timeout_ms = config.statement_timeout_ms;
  ASSIGN_OR_RETURN(std::unique_ptr<store::postgres::PgStore> store,
                   store::postgres::PgStore::Open(store_options));
  RETURN_IF_ERROR(store->EnsureTenant(config.default_tenant));

  WorkerPool pool("db", config.workers, static_cast<size_t>(config.max_queued_tasks));
  bus::BusOptions bus_options;
  bus_options.inline_payload_limit = config.inline_payload_limit;
  bus_options.max_payload_bytes = config.max_payload_bytes;
  bus_options.publish_committers = config.publish_committers;
  bus_options.publish_max_batch = config.publish_max_batch;
  bus_options.poll_interval = absl::Milliseconds(config.poll_interval_ms);
  bus::Bus bus(store.get(), &pool, bus_options);
  // Publishes on other replicas reach our subscribers through NOTIFY; our
  // own wake them directly (Publisher's on_committed).
  RETURN_IF_ERROR(store->StartListening(
      [&bus](const std::vector<store::TopicKey>& topics) { bus.Wake(topics); }));

  bus::Reaper reaper(store.get(), &pool, absl::Milliseconds(config.reap_interval_ms),
                     /*batch=*/1000);

  api::CallContext cc{&pool, config.default_tenant};
  api::BusService bus_service(&bus, cc);
  api::AdminService admin_service(&bus, cc);

  // Referencing the health descriptor keeps health.pb.o in the link, and
  // with it the descriptor that reflection serves.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.listen, grpc::InsecureServerCredentials(), &port);
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
  obs::Info("listening", {{"addr", absl::StrCat(host, ":", port)},
                          {"tenant", config.default_tenant},
                          {"workers", std::to_string(config.workers)}});
  if (!config.port_file.empty()) {
    std::string tmp = config.port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), config.port_file.c_str());
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int sig = 0;
  sigwait(&signals, &sig);
  obs::Info("shutting_down", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});

  server->GetHealthCheckService()->SetServingStatus(false);
  bus.Shutdown();  // streams end with UNAVAILABLE; queued publishes commit
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Milliseconds(config.shutdown_grace_ms)));
  server->Wait();
  reaper.Stop();
  pool.Stop();
  store->StopListening();
  obs::Info("stopped");
  return absl::OkStatus();
}

}  // namespace pgbus
