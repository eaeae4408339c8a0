// pgbusd: the pgbus server.
//
//   pgbusd [serve] [flags]   serve gRPC (settings: pgbusd --help)
//   pgbusd migrate           apply migrations with PGBUS_DATABASE_URL, which
//                            must name the schema owner's role; grants
//                            PGBUS_APP_ROLE (default pgbus_app) its rights
//   pgbusd tenant|key ...    the operator's commands (admin_cli.h)
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "service/admin_cli.h"
#include "service/config/config.h"
#include "service/obs/log.h"
#include "service/server.h"
#include "service/store/postgres/migrator.h"

namespace {

constexpr char kUsage[] =
    "usage: pgbusd [serve] [--setting value ...]\n"
    "       pgbusd migrate\n"
    "       pgbusd tenant|key ...   (pgbusd tenant --help)\n\n"
    "serve settings (flag, environment, default):\n";

int Migrate(const std::map<std::string, std::string>& env) {
  auto url = env.find("PGBUS_DATABASE_URL");
  if (url == env.end() || url->second.empty()) {
    pgbus::obs::Error("migrate_failed",
                      {{"error", "set PGBUS_DATABASE_URL to the schema owner's connection string"}});
    return 2;
  }
  auto role = env.find("PGBUS_APP_ROLE");
  std::string app_role = role == env.end() ? "pgbus_app" : role->second;
  auto applied = pgbus::store::postgres::Migrate(url->second, app_role);
  if (!applied.ok()) {
    pgbus::obs::Error("migrate_failed", {{"error", applied.status().ToString()}});
    return 1;
  }
  pgbus::obs::Info("migrated", {{"applied", std::to_string(*applied)},
                                {"version", std::to_string(pgbus::store::postgres::LatestVersion())}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's Abseil is built without NDEBUG, so every absl::Mutex -- ours
  // and gRPC's -- would check lock order against a process-wide graph on
  // each lock and destruction: 4-5% of pgbusd's CPU in a profile of the
  // publish figure (GraphCycles). A debugging aid, not for serving; the
  // unit tests keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string command = "serve";
  if (!args.empty() && args[0].rfind("--", 0) != 0) {
    command = args[0];
    args.erase(args.begin());
  }
  auto env = pgbus::config::ProcessEnvironment();
  if (command == "tenant" || command == "key") {
    for (const auto& a : args) {
      if (a == "--help" || a == "-h") {
        std::fputs(pgbus::kAdminUsage, stdout);
        return 0;
      }
    }
    return pgbus::RunAdminCommand(command, args, env);
  }
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::fputs(pgbus::config::Usage().c_str(), stdout);
      return 0;
    }
  }
  if (command == "migrate") return Migrate(env);
  if (command != "serve") {
    std::fprintf(stderr, "pgbusd: unknown command \"%s\"\n%s", command.c_str(), kUsage);
    return 2;
  }
  auto config = pgbus::config::Load(args, env);
  if (!config.ok()) {
    pgbus::obs::Error("bad_config", {{"error", std::string(config.status().message())}});
    return 2;
  }
  // Block the stop signals in every thread (threads inherit the mask);
  // Serve() waits for them with sigwait().
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::Status st = pgbus::Serve(*config);
  if (!st.ok()) {
    pgbus::obs::Error("serve_failed", {{"error", st.ToString()}});
    return 1;
  }
  return 0;
}
