// Test support: the throwaway Postgres started by the CTest fixture, and
// real pgbusd processes on loopback ports.
#ifndef PGBUS_TESTS_SUPPORT_HARNESS_H_
#define PGBUS_TESTS_SUPPORT_HARNESS_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pgbus/client.h"

namespace pgbus::testing {

// Connection strings of the fixture's cluster (PGBUS_TEST_PG_DIR).
std::string OwnerDsn();
std::string AppDsn();
std::string SuperuserDsn();

// Drops and creates database `name`, owned by pgbus_owner; returns the DSN
// of `role` ("pgbus_owner" or "pgbus_app") for it.
std::string CreateEmptyDatabase(const std::string& name, const std::string& role);

// `n` pseudo-random (incompressible, reproducible) bytes.
std::string RandomBytes(size_t n, uint64_t seed);

// A unique name ("prefix-<random>") so tests never collide.
std::string UniqueName(const std::string& prefix);

// A pgbusd process serving on 127.0.0.1:<free port>.
class Pgbusd {
 public:
  // Starts pgbusd with its own tenant (unless `tenant` is given) and waits
  // until it serves. `flags` are extra command-line settings.
  // `dsn`: the database to serve (default: the fixture's, as pgbus_app).
  explicit Pgbusd(std::vector<std::string> flags = {}, std::string tenant = "",
                  std::string dsn = "");
  ~Pgbusd();  // SIGKILL if still running

  const std::string& target() const { return target_; }
  const std::string& tenant() const { return tenant_; }
  std::unique_ptr<Client> Connect() const { return Client::Connect(target_); }
  // With this API key on every call.
  std::unique_ptr<Client> Connect(const std::string& api_key) const;
  // SIGTERM, then waits; returns the exit status (-1 on a signal death).
  int Terminate();
  // SIGKILL (kill -9), then waits.
  void Kill();
  // The process's log so far.
  std::string Log() const;
  pid_t pid() const { return pid_; }
  // A line of /proc/<pid>/status in KiB ("VmRSS", "VmHWM").
  int64_t StatusKiB(const std::string& field) const;

 private:
  pid_t pid_ = -1;
  std::string tenant_;
  std::string target_;
  std::string log_path_;
};

// A TCP relay between a client and `target` on 127.0.0.1:<free port>, for
// faults on the wire: it can drop everything the server sends from some
// moment on (the client then waits for answers that never come) and cut
// the connections. One client connection at a time.
class Relay {
 public:
  explicit Relay(const std::string& target);
  ~Relay();  // Cut()s
  const std::string& target() const { return target_; }
  // From now on, bytes from the server are read and thrown away.
  void DropAnswers();
  // Closes both sides of the connection; the client sees it reset.
  void Cut();

 private:
  void Run(int listener, std::string host, int port);
  std::string target_;
  std::atomic<bool> drop_{false}, cut_{false};
  std::thread thread_;
};

// Runs `pgbusd <args>` (an operator command) with the owner's connection
// string; returns the exit code, stdout and stderr.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
CommandResult RunPgbusd(const std::vector<std::string>& args);
// Runs `command` with /bin/sh; stdout and stderr together in `out`.
CommandResult RunShell(const std::string& command);

// Creates `tenant` (with `quota_flags`, e.g. {"--max-streams", "1"}) and
// issues it a key; returns the key. Throws when either command fails.
std::string CreateTenantWithKey(const std::string& tenant,
                                const std::vector<std::string>& quota_flags = {},
                                const std::string& scopes = "publish,subscribe,admin",
                                const std::string& topics = ">");
// Issues another key of an existing tenant.
std::string IssueKey(const std::string& tenant, const std::string& scopes,
                     const std::string& topics = ">");

// Receives until `n` messages arrived or `timeout` passed.
std::vector<v1::ReceivedMessage> Receive(Subscriber& sub, size_t n, absl::Duration timeout);

// A stream of `subscription` that may hold `max_messages` unacked.
std::unique_ptr<Subscriber> SubscribeWithCredit(Client& client, const std::string& subscription,
                                                int64_t max_messages);

// DeleteTopic through the admin stub.
grpc::Status DeleteTopic(Client& client, const std::string& name);

// GetStats of a subscription; throws on an error.
v1::GetStatsResponse SubscriptionStats(Client& client, const std::string& subscription);

// Count of rows a query returns for `tenant`, as pgbusd's role with the
// tenant set (what RLS lets that tenant see), for checks that nothing was
// stored. (Not as the owner: it also sees every tenant's expired rows, for
// the reaper.)
int64_t CountAsOwner(const std::string& tenant, const std::string& sql);
// The one bigint a query returns, run the same way.
int64_t ScalarAsTenant(const std::string& tenant, const std::string& sql);

}  // namespace pgbus::testing

#endif  // PGBUS_TESTS_SUPPORT_HARNESS_H_
