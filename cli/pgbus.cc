// pgbus: the command-line client.
//
//   pgbus [--server HOST:PORT] topics
//   pgbus [--server HOST:PORT] create-topic T [--retention SECONDS]
//   pgbus [--server HOST:PORT] publish --topic T --file F [--compressed]
//   pgbus [--server HOST:PORT] retrieve --id ID --out F
//   pgbus [--server HOST:PORT] subscribe TOPIC [--subscription S] [--count N]
//
// The server defaults to $PGBUS_SERVER, else localhost:50051. The API key
// comes from $PGBUS_API_KEY (never a flag: `ps` would show it). TLS: set
// $PGBUS_TLS_CA_FILE (the CA that signed the server's certificate), and for
// mutual TLS $PGBUS_TLS_CERT_FILE and $PGBUS_TLS_KEY_FILE. Transfers show
// a progress bar and throughput when stderr is a terminal and are quiet
// otherwise. Every payload is checked against its SHA-256 end to end.
// Exit codes: 0 done, 1 failed, 2 usage, 3 checksum mismatch (DATA_LOSS).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "pgbus/client.h"

namespace {

constexpr char kUsage[] =
    "usage: pgbus [--server HOST:PORT] COMMAND\n"
    "  topics                                    list topics\n"
    "  create-topic T [--retention SECONDS]      create a topic (default retention 7 days)\n"
    "  publish --topic T --file F [--compressed] publish a file of any size\n"
    "  retrieve --id ID --out F                  write a message's payload to F\n"
    "  subscribe TOPIC [--subscription S] [--count N]\n"
    "                                            print messages as they arrive and ack them\n"
    "                                            (a temporary subscription unless S is given,\n"
    "                                            deleted on exit, Ctrl-C, SIGTERM or SIGHUP)\n"
    "environment: PGBUS_SERVER, PGBUS_API_KEY, PGBUS_TLS_CA_FILE, PGBUS_TLS_CERT_FILE,\n"
    "             PGBUS_TLS_KEY_FILE\n";

std::atomic<bool> g_stop{false};  // set by signal handlers
static_assert(std::atomic<bool>::is_always_lock_free);

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "pgbus: %s\n", st.ToString().c_str());
  return st.code() == absl::StatusCode::kDataLoss ? 3 : 1;
}

// A progress bar on stderr when it is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label)
      : label_(std::move(label)), tty_(isatty(2)), start_(std::chrono::steady_clock::now()) {}
  void Update(int64_t done, int64_t total) {
    if (!tty_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100) && done != total) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double mbs = secs > 0 ? done / secs / 1e6 : 0;
    if (total > 0) {
      int width = 30, filled = static_cast<int>(width * done / total);
      std::fprintf(stderr, "\r%s [%s%s] %3d%% %8.1f MB/s", label_.c_str(),
                   std::string(filled, '=').c_str(), std::string(width - filled, ' ').c_str(),
                   static_cast<int>(100 * done / total), mbs);
    } else {
      std::fprintf(stderr, "\r%s %10.1f MB %8.1f MB/s", label_.c_str(), done / 1e6, mbs);
    }
  }
  void Done() {
    if (tty_) std::fputc('\n', stderr);
  }

 private:
  std::string label_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

// --flag value pairs after the command; positional arguments in `rest`.
struct Args {
  std::map<std::string, std::string> flags;
  std::vector<std::string> rest;
  bool Has(const std::string& f) const { return flags.count(f) > 0; }
  std::string Get(const std::string& f) const {
    auto it = flags.find(f);
    return it == flags.end() ? "" : it->second;
  }
};

int Topics(pgbus::Client& client) {
  std::string token;
  do {
    grpc::ClientContext ctx;
    pgbus::v1::ListTopicsRequest req;
    req.set_page_token(token);
    pgbus::v1::ListTopicsResponse resp;
    auto st = pgbus::FromGrpcStatus(client.admin().ListTopics(&ctx, req, &resp));
    if (!st.ok()) return Fail(st);
    for (const auto& t : resp.topics()) std::printf("%s\n", t.name().c_str());
    token = resp.next_page_token();
  } while (!token.empty());
  return 0;
}

int CreateTopic(pgbus::Client& client, const Args& args) {
  if (args.rest.size() != 1) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  pgbus::v1::Topic topic;
  topic.set_name(args.rest[0]);
  if (args.Has("retention")) {
    int64_t seconds = 0;
    if (!absl::SimpleAtoi(args.Get("retention"), &seconds) || seconds <= 0) {
      std::fputs(kUsage, stderr);
      return 2;
    }
    topic.mutable_retention()->set_seconds(seconds);
  }
  auto created = client.CreateTopic(topic);
  if (!created.ok()) return Fail(created.status());
  std::printf("%s\n", created->name().c_str());
  return 0;
}

int Publish(pgbus::Client& client, const Args& args) {
  if (!args.Has("topic") || !args.Has("file")) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::ifstream in(args.Get("file"), std::ios::binary);
  if (!in) return Fail(absl::NotFoundError("cannot read " + args.Get("file")));
  std::error_code ec;
  const int64_t total = static_cast<int64_t>(std::filesystem::file_size(args.Get("file"), ec));
  ProgressBar bar("upload");
  auto up = client.UploadPayload(args.Get("topic"), in, args.Has("compressed"),
                                 [&](int64_t done, int64_t) { bar.Update(done, ec ? -1 : total); });
  bar.Done();
  if (!up.ok()) return Fail(up.status());
  pgbus::v1::PublishMessage m;
  m.set_payload_handle(up->payload_handle());
  std::vector<pgbus::v1::PublishMessage> one;
  one.push_back(std::move(m));
  auto ids = client.Publish(args.Get("topic"), std::move(one));
  if (!ids.ok()) return Fail(ids.status());
  std::printf("%s\t%lld bytes\tsha256 %s\n", (*ids)[0].c_str(),
              static_cast<long long>(up->size()), absl::BytesToHexString(up->sha256()).c_str());
  return 0;
}

int Retrieve(pgbus::Client& client, const Args& args) {
  if (!args.Has("id") || !args.Has("out")) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string path = args.Get("out");
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Fail(absl::PermissionDeniedError("cannot write " + path));
  ProgressBar bar("download");
  auto n = client.RetrievePayloadTo(args.Get("id"), out,
                                    [&](int64_t done, int64_t total) { bar.Update(done, total); });
  bar.Done();
  out.close();
  if (!n.ok()) {
    std::remove(path.c_str());  // never leave bytes that failed their check
    return Fail(n.status());
  }
  std::printf("%s\t%lld bytes\n", path.c_str(), static_cast<long long>(*n));
  return 0;
}

int Subscribe(pgbus::Client& client, const Args& args) {
  if (args.rest.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string sub = args.Get("subscription");
  bool temporary = sub.empty();
  if (temporary) {
    sub = absl::StrCat("pgbus-cli-", getpid());
    auto created = client.CreateSubscription(sub, args.rest[0]);
    if (!created.ok()) return Fail(created.status());
  }
  int64_t want = 0;
  if (args.Has("count") && !absl::SimpleAtoi(args.Get("count"), &want)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  // However it is stopped (Ctrl-C, SIGTERM from a supervisor or `timeout`,
  // SIGHUP when the terminal goes, a closed pipe on stdout), it ends the
  // loop below and deletes the temporary subscription, which would
  // otherwise collect every message of the topic until someone deletes it.
  // (Only SIGKILL leaves it behind.)
  struct sigaction stop = {};
  stop.sa_handler = [](int) { g_stop = true; };
  sigemptyset(&stop.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);
  auto stream = client.Subscribe(sub);
  int64_t got = 0;
  int rc = 0;
  while (!g_stop && (want == 0 || got < want)) {
    auto next = stream->Next(absl::Milliseconds(200));
    if (!next.ok()) {
      rc = Fail(next.status());
      break;
    }
    if (!next->has_value()) continue;
    const auto& m = (*next)->message();
    if (m.payload_by_reference()) {
      std::printf("%s\t%s\t%lld bytes (pgbus retrieve --id %s --out FILE)\n", m.id().c_str(),
                  m.topic().c_str(), static_cast<long long>(m.size()), m.id().c_str());
    } else {
      std::printf("%s\t%s\t%s\n", m.id().c_str(), m.topic().c_str(),
                  absl::CHexEscape(m.payload()).c_str());
    }
    if (std::fflush(stdout) != 0) {  // the reader went away: not acked
      rc = 1;
      break;
    }
    (void)client.Ack(sub, {(*next)->ack_id()});
    ++got;
  }
  stream->Cancel();
  if (temporary) {
    grpc::ClientContext ctx;
    pgbus::v1::DeleteSubscriptionRequest req;
    req.set_name(sub);
    pgbus::v1::DeleteSubscriptionResponse resp;
    (void)client.admin().DeleteSubscription(&ctx, req, &resp);
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::string server = getenv("PGBUS_SERVER") ? getenv("PGBUS_SERVER") : "localhost:50051";
  std::vector<std::string> argv_rest(argv + 1, argv + argc);
  if (argv_rest.size() >= 2 && argv_rest[0] == "--server") {
    server = argv_rest[1];
    argv_rest.erase(argv_rest.begin(), argv_rest.begin() + 2);
  }
  if (argv_rest.empty() || argv_rest[0] == "--help" || argv_rest[0] == "-h") {
    std::fputs(kUsage, argv_rest.empty() ? stderr : stdout);
    return argv_rest.empty() ? 2 : 0;
  }
  std::string command = argv_rest[0];
  Args args;
  for (size_t i = 1; i < argv_rest.size(); ++i) {
    const std::string& a = argv_rest[i];
    if (a.rfind("--", 0) == 0) {
      std::string name = a.substr(2);
      if (name == "compressed") {
        args.flags[name] = "1";
      } else if (i + 1 < argv_rest.size()) {
        args.flags[name] = argv_rest[++i];
      } else {
        std::fputs(kUsage, stderr);
        return 2;
      }
    } else {
      args.rest.push_back(a);
    }
  }
  pgbus::ClientOptions options;
  if (const char* key = getenv("PGBUS_API_KEY")) options.api_key = key;
  if (const char* ca = getenv("PGBUS_TLS_CA_FILE")) {
    auto read = [](const char* path) {
      std::ifstream in(path);
      return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = read(ca);
    if (tls.pem_root_certs.empty()) {
      std::fprintf(stderr, "pgbus: cannot read PGBUS_TLS_CA_FILE=%s\n", ca);
      return 2;
    }
    const char* cert = getenv("PGBUS_TLS_CERT_FILE");
    const char* key = getenv("PGBUS_TLS_KEY_FILE");
    if (cert && key) {
      tls.pem_cert_chain = read(cert);
      tls.pem_private_key = read(key);
    }
    options.credentials = grpc::SslCredentials(tls);
  }
  auto client = pgbus::Client::Connect(server, options);
  if (command == "topics") return Topics(*client);
  if (command == "create-topic") return CreateTopic(*client, args);
  if (command == "publish") return Publish(*client, args);
  if (command == "retrieve") return Retrieve(*client, args);
  if (command == "subscribe") return Subscribe(*client, args);
  std::fputs(kUsage, stderr);
  return 2;
}
