// pgbus benchmarks. Each figure is printed beside a reference measured in
// the same run against the same pgbusd, and as a ratio to it; every figure
// is the median of several rounds. Machines are shared and noisy: compare
// ratios, not absolute numbers.
//
//   pgbus_bench --target 127.0.0.1:PORT [--seconds 3] [--rounds 3]
#include <cstdlib>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include <fstream>
#include <random>
#include <sstream>
#include <streambuf>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "pgbus/client.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kCallers = 64;
constexpr size_t kPayloadBytes = 1024;
constexpr int kLatencyRate = 1000;  // msg/s

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Runs `call` from kCallers threads for `seconds`; returns calls/s.
template <typename Call>
double Throughput(double seconds, Call call) {
  std::atomic<bool> go{false}, stop{false};
  std::atomic<int64_t> done{0}, failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&] {
      while (!go) std::this_thread::yield();
      while (!stop) {
        if (call()) {
          done++;
        } else {
          failed++;
        }
      }
    });
  }
  auto start = Clock::now();
  go = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed > 0) std::fprintf(stderr, "warning: %ld calls failed\n", static_cast<long>(failed.load()));
  return done / elapsed;
}

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string RandomBytes(size_t n) {
  std::mt19937_64 rng(7);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

// Discards what is written (the download is hashed by the SDK on the way).
class NullBuf : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

int64_t StatusKiB(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// The floor: the same bytes as 1 MiB bytea chunks, inserted one
// transaction each (as pgbus commits them) and selected one by one in
// binary format, straight through libpq. Returns {insert MB/s, select MB/s}.
std::pair<double, double> PlainPostgres(const std::string& dsn, const std::string& data) {
  PGconn* conn = PQconnectdb(dsn.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::fprintf(stderr, "reference: %s", PQerrorMessage(conn));
    std::exit(1);
  }
  auto exec = [&](const char* sql) { PQclear(PQexec(conn, sql)); };
  exec("DROP TABLE IF EXISTS pgbus_bench_chunks");
  exec("CREATE TABLE pgbus_bench_chunks (seq int PRIMARY KEY, data bytea)");
  exec("ALTER TABLE pgbus_bench_chunks ALTER COLUMN data SET COMPRESSION lz4");
  const size_t chunk = 1 << 20;
  auto start = Clock::now();
  for (size_t off = 0, seq = 0; off < data.size(); off += chunk, ++seq) {
    std::string seq_text = std::to_string(seq);
    const char* values[] = {seq_text.c_str(), data.data() + off};
    int lengths[] = {0, static_cast<int>(std::min(chunk, data.size() - off))};
    int formats[] = {0, 1};
    PGresult* r = PQexecParams(conn, "INSERT INTO pgbus_bench_chunks VALUES ($1, $2)", 2,
                               nullptr, values, lengths, formats, 1);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) std::fprintf(stderr, "%s", PQerrorMessage(conn));
    PQclear(r);
  }
  double insert = data.size() / Seconds(start) / 1e6;
  start = Clock::now();
  size_t got = 0;
  for (size_t seq = 0; seq * chunk < data.size(); ++seq) {
    std::string seq_text = std::to_string(seq);
    const char* values[] = {seq_text.c_str()};
    PGresult* r = PQexecParams(conn, "SELECT data FROM pgbus_bench_chunks WHERE seq = $1", 1,
                               nullptr, values, nullptr, nullptr, 1);
    got += PQgetlength(r, 0, 0);
    PQclear(r);
  }
  double select = got / Seconds(start) / 1e6;
  exec("DROP TABLE pgbus_bench_chunks");
  PQfinish(conn);
  return {insert, select};
}

}  // namespace

int main(int argc, char** argv) {
  std::string target, owner_dsn;
  int pgbusd_pid = 0;
  int64_t large_mib = 256, rss_mib = 1024;
  double seconds = 3;
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--target") target = argv[i + 1];
    if (flag == "--seconds") seconds = std::stod(argv[i + 1]);
    if (flag == "--rounds") rounds = std::stoi(argv[i + 1]);
    if (flag == "--owner-dsn") owner_dsn = argv[i + 1];
    if (flag == "--pgbusd-pid") pgbusd_pid = std::stoi(argv[i + 1]);
    if (flag == "--large-mib") large_mib = std::stoll(argv[i + 1]);
    if (flag == "--rss-mib") rss_mib = std::stoll(argv[i + 1]);
  }
  if (target.empty()) {
    std::fprintf(stderr, "usage: pgbus_bench --target host:port [--seconds S] [--rounds N]\n");
    return 2;
  }
  // pgbusd runs as in production, with authentication: every call carries
  // the API key bench.sh issued (PGBUS_API_KEY).
  pgbus::ClientOptions options;
  if (const char* key = std::getenv("PGBUS_API_KEY")) options.api_key = key;
  std::unique_ptr<pgbus::Client> connected = pgbus::Client::Connect(target, options);
  pgbus::Client& client = *connected;
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  std::string topic = absl::StrCat("bench-", NowNanos());
  if (!client.CreateTopic(topic).ok() || !client.CreateSubscription(topic, topic).ok()) {
    std::fprintf(stderr, "cannot create the bench topic\n");
    return 1;
  }
  // Publish throughput has no subscriber draining it; use a topic without
  // subscriptions so the fan-out cost is measured separately below.
  std::string pub_topic = topic + "-pub";
  if (!client.CreateTopic(pub_topic).ok()) return 1;
  const std::string payload(kPayloadBytes, 'x');

  std::vector<double> noop_rps, publish_rps, ratios;
  for (int r = 0; r < rounds; ++r) {
    double noop = Throughput(seconds, [&] {
      grpc::ClientContext ctx;
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      return health->Check(&ctx, req, &resp).ok();
    });
    double pub = Throughput(seconds, [&] { return client.Publish(pub_topic, payload).ok(); });
    noop_rps.push_back(noop);
    publish_rps.push_back(pub);
    ratios.push_back(pub / noop);
    std::fprintf(stderr, "round %d: publish %.0f/s, no-op %.0f/s\n", r + 1, pub, noop);
  }

  // Latency: a paced publisher at kLatencyRate msg/s, one stream
  // receiving and acking; the reference is the no-op call's round trip at
  // the same pace.
  std::vector<double> latencies_ms, noop_ms;
  {
    auto sub = client.Subscribe(topic);
    std::atomic<bool> stop{false};
    std::thread receiver([&] {
      std::vector<std::string> acks;
      auto last_ack = Clock::now();
      while (!stop) {
        auto next = sub->Next(absl::Milliseconds(50));
        if (next.ok() && next->has_value()) {
          const auto& m = **next;
          int64_t sent = 0;
          auto it = m.message().attributes().find("sent_ns");
          if (it != m.message().attributes().end() && absl::SimpleAtoi(it->second, &sent)) {
            latencies_ms.push_back((NowNanos() - sent) / 1e6);
          }
          acks.push_back(m.ack_id());
        }
        if (!acks.empty() && (acks.size() >= 100 || Clock::now() - last_ack > std::chrono::milliseconds(100))) {
          (void)client.Ack(topic, acks);
          acks.clear();
          last_ack = Clock::now();
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int total = static_cast<int>(kLatencyRate * seconds * 2);
    const auto interval = std::chrono::nanoseconds(1000000000 / kLatencyRate);
    // Publishes are paced from several threads (a Publish takes longer than
    // the interval); each thread owns every Nth tick.
    constexpr int kPacers = 16;
    auto start = Clock::now();
    std::vector<std::thread> pacers;
    for (int p = 0; p < kPacers; ++p) {
      pacers.emplace_back([&, p] {
        for (int i = p; i < total; i += kPacers) {
          std::this_thread::sleep_until(start + interval * i);
          pgbus::v1::PublishMessage m;
          m.set_payload(payload);
          (*m.mutable_attributes())["sent_ns"] = std::to_string(NowNanos());
          std::vector<pgbus::v1::PublishMessage> one;
          one.push_back(std::move(m));
          (void)client.Publish(topic, std::move(one));
        }
      });
    }
    for (auto& t : pacers) t.join();
    std::this_thread::sleep_for(std::chrono::seconds(2));  // drain
    stop = true;
    receiver.join();
    // Reference: no-op round trips at the same pace.
    start = Clock::now();
    for (int i = 0; i < total / 2; ++i) {
      std::this_thread::sleep_until(start + interval * i);
      auto t0 = Clock::now();
      grpc::ClientContext ctx;
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      (void)health->Check(&ctx, req, &resp);
      noop_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  }
  if (latencies_ms.empty()) {
    std::fprintf(stderr, "no message was received in the latency run\n");
    return 1;
  }

  std::printf("\npgbus bench: %d rounds of %.0f s, medians; 1 KiB payloads\n\n", rounds, seconds);
  std::printf("| figure | pgbus | reference (same run) | ratio |\n|---|---|---|---|\n");
  std::printf("| Publish RPCs/s, 64 concurrent callers, 1 message each | %.0f | %.0f (no-op unary gRPC call) | %.3f |\n",
              Median(publish_rps), Median(noop_rps), Median(ratios));
  double p50 = Percentile(latencies_ms, 0.50), p99 = Percentile(latencies_ms, 0.99);
  double r50 = Percentile(noop_ms, 0.50), r99 = Percentile(noop_ms, 0.99);
  std::printf("| publish -> receive latency p50 at %d msg/s (ms) | %.2f | %.2f (no-op round trip) | %.1f |\n",
              kLatencyRate, p50, r50, p50 / r50);
  std::printf("| publish -> receive latency p99 at %d msg/s (ms) | %.2f | %.2f (no-op round trip) | %.1f |\n",
              kLatencyRate, p99, r99, p99 / r99);
  std::printf("\n(%zu messages received in the latency run)\n", latencies_ms.size());

  // Large payloads.
  if (owner_dsn.empty() || large_mib <= 0) return 0;
  const std::string big = RandomBytes(static_cast<size_t>(large_mib) << 20);
  auto start = Clock::now();
  std::istringstream in(big);
  auto up = client.UploadPayload(pub_topic, in);
  if (!up.ok()) {
    std::fprintf(stderr, "upload failed: %s\n", up.status().ToString().c_str());
    return 1;
  }
  pgbus::v1::PublishMessage handle;
  handle.set_payload_handle(up->payload_handle());
  std::vector<pgbus::v1::PublishMessage> one;
  one.push_back(handle);
  auto ids = client.Publish(pub_topic, std::move(one));
  double up_mbs = big.size() / Seconds(start) / 1e6;
  if (!ids.ok()) return 1;
  start = Clock::now();
  NullBuf sink_buf;
  std::ostream sink(&sink_buf);
  auto n = client.RetrievePayloadTo((*ids)[0], sink);
  double down_mbs = big.size() / Seconds(start) / 1e6;
  if (!n.ok()) {
    std::fprintf(stderr, "retrieve failed: %s\n", n.status().ToString().c_str());
    return 1;
  }
  auto [ref_up, ref_down] = PlainPostgres(owner_dsn, big);
  std::printf("\n| large payloads (%lld MiB, random bytes) | pgbus | plain Postgres, same bytes as 1 MiB bytea chunks | ratio |\n|---|---|---|---|\n",
              static_cast<long long>(large_mib));
  std::printf("| upload MB/s (UploadPayload + Publish, SHA-256 both ends) | %.0f | %.0f (INSERT per chunk) | %.2f |\n",
              up_mbs, ref_up, up_mbs / ref_up);
  std::printf("| download MB/s (ranged Retrieve, verified) | %.0f | %.0f (SELECT per chunk, binary) | %.2f |\n",
              down_mbs, ref_down, down_mbs / ref_down);

  if (pgbusd_pid <= 0 || rss_mib <= 0) return 0;
  const int64_t rss_before = StatusKiB(pgbusd_pid, "VmRSS");
  {
    const std::string huge = RandomBytes(static_cast<size_t>(rss_mib) << 20);
    std::istringstream huge_in(huge);
    auto huge_up = client.UploadPayload(pub_topic, huge_in);
    if (!huge_up.ok()) return 1;
    pgbus::v1::PublishMessage h;
    h.set_payload_handle(huge_up->payload_handle());
    std::vector<pgbus::v1::PublishMessage> v;
    v.push_back(h);
    auto huge_ids = client.Publish(pub_topic, std::move(v));
    if (!huge_ids.ok()) return 1;
    if (!client.RetrievePayloadTo((*huge_ids)[0], sink).ok()) return 1;
  }
  const int64_t peak = StatusKiB(pgbusd_pid, "VmHWM");
  std::printf("\npgbusd peak RSS growth during a %lld MiB round trip: %.1f MiB (RSS before: %.1f MiB)\n",
              static_cast<long long>(rss_mib), (peak - rss_before) / 1024.0, rss_before / 1024.0);
  return 0;
}
