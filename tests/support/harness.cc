#include "tests/support/harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include <pqxx/pqxx>

extern char** environ;

namespace pgbus::testing {
namespace {

// An idle sync client answers a stopping server's GOAWAY PING only on its
// backup poll (every 5 s by default), which would make every restart in the
// tests take 5 s. Set before gRPC initialises.
const bool kFastBackupPoll = [] {
  setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100", /*overwrite=*/0);
  return true;
}();

std::string PgDir() {
  const char* dir = std::getenv("PGBUS_TEST_PG_DIR");
  if (!dir) throw std::runtime_error("PGBUS_TEST_PG_DIR is not set: run the tests through ctest");
  return dir;
}

std::string Dsn(const char* user) {
  return absl::StrCat("host=", PgDir(), "/run dbname=pgbus user=", user);
}

}  // namespace

std::string OwnerDsn() { return Dsn("pgbus_owner"); }
std::string AppDsn() { return Dsn("pgbus_app"); }
std::string SuperuserDsn() { return Dsn("postgres"); }

std::string CreateEmptyDatabase(const std::string& name, const std::string& role) {
  pqxx::connection su(SuperuserDsn());
  pqxx::nontransaction q(su);
  q.exec("DROP DATABASE IF EXISTS " + su.quote_name(name));
  q.exec("CREATE DATABASE " + su.quote_name(name) + " OWNER pgbus_owner");
  return absl::StrCat("host=", PgDir(), "/run dbname=", name, " user=", role);
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  for (size_t i = n - n % 8; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

std::string UniqueName(const std::string& prefix) {
  static std::mt19937_64 rng(std::random_device{}());
  return absl::StrCat(prefix, "-", absl::Hex(rng() & 0xffffffffffff));
}

Pgbusd::Pgbusd(std::vector<std::string> flags, std::string tenant, std::string dsn)
    : tenant_(tenant.empty() ? UniqueName("tenant") : std::move(tenant)) {
  std::string dir = absl::StrCat(::testing::TempDir(), "/", UniqueName("pgbusd"));
  std::string mk = absl::StrCat("mkdir -p ", dir);
  if (std::system(mk.c_str()) != 0) throw std::runtime_error("mkdir failed");
  std::string port_file = dir + "/port";
  log_path_ = dir + "/pgbusd.log";

  std::vector<std::string> args = {PGBUS_PGBUSD_PATH, "serve", "--listen", "127.0.0.1:0",
                                   "--port-file", port_file, "--default-tenant", tenant_,
                                   // Tests of authentication pass --dev-mode=false.
                                   "--dev-mode"};
  args.insert(args.end(), flags.begin(), flags.end());
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::string(*e).rfind("PGBUS_", 0) != 0) env.emplace_back(*e);
  }
  env.push_back("PGBUS_DATABASE_URL=" + (dsn.empty() ? AppDsn() : dsn));

  pid_ = fork();
  if (pid_ == 0) {
    FILE* log = std::fopen(log_path_.c_str(), "w");
    if (log) {
      dup2(fileno(log), 1);
      dup2(fileno(log), 2);
    }
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  for (int i = 0; i < 300; ++i) {  // up to 30 s
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port && port > 0) {
      target_ = absl::StrCat("127.0.0.1:", port);
      return;
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("pgbusd exited at start-up:\n" + Log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw std::runtime_error("pgbusd did not start serving:\n" + Log());
}

Pgbusd::~Pgbusd() { Kill(); }

void Pgbusd::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

Relay::Relay(const std::string& target) {
  size_t colon = target.rfind(':');
  std::string host = target.substr(0, colon);
  int port = std::stoi(target.substr(colon + 1));
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      listen(listener, 4) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error(absl::StrCat("relay: cannot listen: ", std::strerror(errno)));
  }
  target_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  thread_ = std::thread([this, listener, host, port] { Run(listener, host, port); });
}

Relay::~Relay() {
  Cut();
  thread_.join();
}

void Relay::DropAnswers() { drop_ = true; }
void Relay::Cut() { cut_ = true; }

void Relay::Run(int listener, std::string host, int port) {
  int client = -1, server = -1;
  auto close_pair = [&] {
    if (client >= 0) close(client);
    if (server >= 0) close(server);
    client = server = -1;
  };
  char buf[64 * 1024];
  while (!cut_) {
    if (client < 0) {
      pollfd p{listener, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      client = accept(listener, nullptr, nullptr);
      server = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(port));
      inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &addr.sin_addr);
      if (client < 0 || server < 0 ||
          connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        close_pair();
      }
      continue;
    }
    pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    if (poll(p, 2, 20) <= 0) continue;
    bool closed = false;
    for (int i = 0; i < 2 && !closed; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(p[i].fd, buf, sizeof buf);
      if (n <= 0) {
        closed = true;
        break;
      }
      if (i == 1 && drop_) continue;  // the server's answer is lost
      int to = i == 0 ? server : client;
      for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, n - off);
        if (w <= 0) {
          closed = true;
          break;
        }
        off += w;
      }
    }
    if (closed) close_pair();
  }
  close_pair();
  close(listener);
}

int Pgbusd::Terminate() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int64_t Pgbusd::StatusKiB(const std::string& field) const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

std::string Pgbusd::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<Client> Pgbusd::Connect(const std::string& api_key) const {
  ClientOptions options;
  options.api_key = api_key;
  return Client::Connect(target_, options);
}

CommandResult RunPgbusd(const std::vector<std::string>& args) {
  std::string dir = absl::StrCat(::testing::TempDir(), "/", UniqueName("cmd"));
  std::string cmd = absl::StrCat("PGBUS_DATABASE_URL='", OwnerDsn(), "' ", PGBUS_PGBUSD_PATH);
  for (const auto& a : args) {
    std::string quoted = a;
    size_t pos = 0;
    while ((pos = quoted.find('\'', pos)) != std::string::npos) {
      quoted.replace(pos, 1, "'\\''");
      pos += 4;
    }
    absl::StrAppend(&cmd, " '", quoted, "'");
  }
  absl::StrAppend(&cmd, " >", dir, ".out 2>", dir, ".err");
  int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  r.out = slurp(dir + ".out");
  r.err = slurp(dir + ".err");
  return r;
}

CommandResult RunShell(const std::string& command) {
  CommandResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) throw std::runtime_error("popen failed: " + command);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string IssueKey(const std::string& tenant, const std::string& scopes,
                     const std::string& topics) {
  CommandResult key = RunPgbusd({"key", "issue", tenant, "--scopes", scopes, "--topics", topics});
  if (key.exit_code != 0) throw std::runtime_error("pgbusd key issue: " + key.err);
  std::string token = key.out;
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  return token;
}

std::string CreateTenantWithKey(const std::string& tenant,
                                const std::vector<std::string>& quota_flags,
                                const std::string& scopes, const std::string& topics) {
  std::vector<std::string> args = {"tenant", "create", tenant};
  args.insert(args.end(), quota_flags.begin(), quota_flags.end());
  CommandResult created = RunPgbusd(args);
  if (created.exit_code != 0) throw std::runtime_error("pgbusd tenant create: " + created.err);
  return IssueKey(tenant, scopes, topics);
}

std::unique_ptr<Subscriber> SubscribeWithCredit(Client& client, const std::string& subscription,
                                                int64_t max_messages) {
  v1::SubscribeRequest req;
  req.set_subscription(subscription);
  req.set_max_outstanding_messages(max_messages);
  return client.Subscribe(req);
}

std::vector<v1::ReceivedMessage> Receive(Subscriber& sub, size_t n, absl::Duration timeout) {
  std::vector<v1::ReceivedMessage> out;
  absl::Time deadline = absl::Now() + timeout;
  while (out.size() < n) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    auto next = sub.Next(left);
    if (!next.ok() || !next->has_value()) break;
    out.push_back(**std::move(next));
  }
  return out;
}

grpc::Status DeleteTopic(Client& client, const std::string& name) {
  grpc::ClientContext ctx;
  v1::DeleteTopicRequest req;
  req.set_name(name);
  v1::DeleteTopicResponse resp;
  return client.admin().DeleteTopic(&ctx, req, &resp);
}

v1::GetStatsResponse SubscriptionStats(Client& client, const std::string& subscription) {
  grpc::ClientContext ctx;
  v1::GetStatsRequest req;
  req.set_subscription(subscription);
  v1::GetStatsResponse resp;
  grpc::Status st = client.admin().GetStats(&ctx, req, &resp);
  if (!st.ok()) throw std::runtime_error("GetStats: " + st.error_message());
  return resp;
}

int64_t CountAsOwner(const std::string& tenant, const std::string& sql) {
  return ScalarAsTenant(tenant, absl::StrCat("SELECT count(*) FROM (", sql, ") q"));
}

int64_t ScalarAsTenant(const std::string& tenant, const std::string& sql) {
  pqxx::connection conn(AppDsn());
  pqxx::work txn(conn);
  txn.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", tenant);
  return txn.exec(sql)[0][0].as<int64_t>();
}

}  // namespace pgbus::testing
