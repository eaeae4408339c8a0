// pgbus benchmarks. Each figure is printed beside a reference measured in
// the same run against the same pgbusd, and as a ratio to it; every figure
// is the median of several rounds. Machines are shared and noisy: compare
// ratios, not absolute numbers.
//
//   pgbus_bench --target 127.0.0.1:PORT [--seconds 3] [--rounds 3]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include <fstream>
#include <map>
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

// Runs one SQL statement as the owner; returns the first value of the first row.
std::string Sql(const std::string& dsn, const std::string& sql) {
  PGconn* conn = PQconnectdb(dsn.c_str());
  PGresult* r = PQexec(conn, sql.c_str());
  std::string out;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
    std::fprintf(stderr, "bench sql: %s", PQerrorMessage(conn));
  }
  PQclear(r);
  PQfinish(conn);
  return out;
}

// Receives and acks (in batches of up to 100) with `streams` Subscribe
// streams until `n` messages are acked; returns messages/s.
double Drain(pgbus::Client& client, const std::string& subscription, int64_t n, int streams) {
  std::atomic<int64_t> acked{0};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int i = 0; i < streams; ++i) {
    threads.emplace_back([&] {
      pgbus::v1::SubscribeRequest req;
      req.set_subscription(subscription);
      req.set_max_outstanding_messages(1000);
      auto sub = client.Subscribe(req);
      std::vector<std::string> ids;
      while (acked.load() < n) {
        auto next = sub->Next(absl::Milliseconds(20));
        bool got = next.ok() && next->has_value();
        if (got) ids.push_back((*next)->ack_id());
        if (!ids.empty() && (ids.size() >= 100 || !got)) {
          auto r = client.Ack(subscription, ids);
          if (r.ok()) {
            for (auto s : *r) acked += s == pgbus::v1::ACK_STATUS_OK;
          }
          ids.clear();
        }
        if (!next.ok()) break;
      }
      sub->Cancel();
    });
  }
  for (auto& t : threads) t.join();
  return acked.load() / Seconds(start);
}

// Fills the subscription's topic with `n` 1 KiB messages (untimed).
bool Fill(pgbus::Client& client, const std::string& topic, int64_t n) {
  const std::string payload(1024, 'c');
  for (int64_t done = 0; done < n;) {
    std::vector<pgbus::v1::PublishMessage> batch;
    for (int i = 0; i < 500 && done < n; ++i, ++done) {
      pgbus::v1::PublishMessage m;
      m.set_payload(payload);
      batch.push_back(std::move(m));
    }
    if (!client.Publish(topic, std::move(batch)).ok()) return false;
  }
  return true;
}

// The floor of a Postgres queue without pgbus: pgbench clients each
// claiming 100 rows of 1 KiB with FOR UPDATE SKIP LOCKED and deleting them
// (returning the payloads), until the `n` rows are gone. messages/s.
double PgbenchQueue(const std::string& dsn, const std::string& pgbench, int64_t n, int clients,
                    const std::string& dir) {
  Sql(dsn, "DROP TABLE IF EXISTS pgbus_bench_queue");
  Sql(dsn, "CREATE TABLE pgbus_bench_queue (id bigserial PRIMARY KEY, payload bytea NOT NULL)");
  Sql(dsn, "INSERT INTO pgbus_bench_queue (payload) SELECT decode(repeat('ab', 1024), 'hex') "
           "FROM generate_series(1, " + std::to_string(n) + ")");
  Sql(dsn, "VACUUM ANALYZE pgbus_bench_queue");
  std::string script = dir + "/claim.sql";
  std::ofstream(script) << "WITH c AS (SELECT id FROM pgbus_bench_queue ORDER BY id LIMIT 100 "
                           "FOR UPDATE SKIP LOCKED) DELETE FROM pgbus_bench_queue q USING c "
                           "WHERE q.id = c.id RETURNING q.id, q.payload;\n";
  std::string cmd = pgbench + " -n -f " + script + " -c " + std::to_string(clients) +
                    " -j " + std::to_string(clients) + " -t " +
                    std::to_string(n / 100 / clients) + " '" + dsn + "' >" + dir +
                    "/pgbench.log 2>&1";
  auto start = Clock::now();
  int rc = std::system(cmd.c_str());
  double elapsed = Seconds(start);
  std::string left = Sql(dsn, "SELECT count(*) FROM pgbus_bench_queue");
  Sql(dsn, "DROP TABLE pgbus_bench_queue");
  if (rc != 0) {
    std::fprintf(stderr, "pgbench failed (see %s/pgbench.log)\n", dir.c_str());
    return 0;
  }
  return (n - std::stoll(left.empty() ? "0" : left)) / elapsed;
}

struct RelationSample {
  int64_t bytes = 0;
  int64_t live = 0;
  int64_t dead = 0;
};

std::map<std::string, RelationSample> SampleTables(const std::string& dsn) {
  std::map<std::string, RelationSample> out;
  PGconn* conn = PQconnectdb(dsn.c_str());
  PGresult* r = PQexec(conn,
                       "SELECT relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup "
                       "FROM pg_stat_user_tables WHERE schemaname = 'pgbus' AND relname IN "
                       "('messages', 'deliveries', 'tenant_usage', 'counters', "
                       "'idempotency_keys') ORDER BY relname");
  for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); ++i) {
    out[PQgetvalue(r, i, 0)] = RelationSample{std::stoll(PQgetvalue(r, i, 1)),
                                              std::stoll(PQgetvalue(r, i, 2)),
                                              std::stoll(PQgetvalue(r, i, 3))};
  }
  PQclear(r);
  PQfinish(conn);
  return out;
}

}  // namespace

// Large payloads: upload and download against plain Postgres, then
// pgbusd's peak RSS over a bigger round trip. 0, or the exit code.
int LargePayloads(pgbus::Client& client, const std::string& owner_dsn,
                  const std::string& pub_topic, int64_t large_mib, int64_t rss_mib,
                  int pgbusd_pid) {
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

// Soak: steady publish (500 msg/s, 1 KiB, 30 s TTL) and consume for
// `seconds`; table sizes and dead tuples once the TTL has turned the data
// over (after 60 s) and at the end. Flat means the reaper and autovacuum
// keep up.
int Soak(pgbus::Client& client, const std::string& owner_dsn, const std::string& prefix,
         double seconds) {
  if (owner_dsn.empty() || seconds <= 60) return 0;
  std::string t = prefix + "-soak";
  pgbus::v1::Topic topic;
  topic.set_name(t);
  topic.mutable_message_ttl()->set_seconds(30);
  if (!client.CreateTopic(topic).ok() || !client.CreateSubscription(t, t).ok()) return 1;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> published{0}, acked{0};
  std::thread publisher([&] {
    const std::string payload(1024, 's');
    auto start = Clock::now();
    for (int64_t tick = 0; !stop; ++tick) {  // 50 batches of 10 a second
      std::this_thread::sleep_until(start + std::chrono::milliseconds(20) * tick);
      std::vector<pgbus::v1::PublishMessage> batch(10);
      for (auto& m : batch) m.set_payload(payload);
      if (client.Publish(t, std::move(batch)).ok()) published += 10;
    }
  });
  std::thread consumer([&] {
    auto sub = client.Subscribe(t);
    std::vector<std::string> ids;
    while (!stop) {
      auto next = sub->Next(absl::Milliseconds(50));
      bool got = next.ok() && next->has_value();
      if (got) ids.push_back((*next)->ack_id());
      if (!ids.empty() && (ids.size() >= 100 || !got)) {
        auto r = client.Ack(t, ids);
        if (r.ok()) acked += static_cast<int64_t>(ids.size());
        ids.clear();
      }
    }
  });
  // A sample a minute: the first after the TTL has turned the data over,
  // the one at the middle, and the last.
  std::vector<std::map<std::string, RelationSample>> samples;
  auto begin = Clock::now();
  for (int minute = 1; minute * 60 <= seconds; ++minute) {
    std::this_thread::sleep_until(begin + std::chrono::seconds(60 * minute));
    samples.push_back(SampleTables(owner_dsn));
  }
  stop = true;
  publisher.join();
  consumer.join();
  const auto& first = samples.front();
  const auto& middle = samples[samples.size() / 2];
  const auto& last = samples.back();
  const int mid_minute = static_cast<int>(samples.size() / 2) + 1;
  std::printf("\n| soak: %.0f s of 500 msg/s publish + consume, 30 s TTL; table + indexes, KiB (live rows) | at 1 min | at %d min | at %zu min | end / middle | dead tuples at 1 / %d / %zu min |\n|---|---|---|---|---|---|\n",
              seconds, mid_minute, samples.size(), mid_minute, samples.size());
  for (const auto& [name, a] : first) {
    const RelationSample& m = middle.at(name);
    const RelationSample& b = last.at(name);
    std::printf("| %s | %lld (%lld) | %lld (%lld) | %lld (%lld) | %.2f | %lld / %lld / %lld |\n",
                name.c_str(), static_cast<long long>(a.bytes / 1024),
                static_cast<long long>(a.live), static_cast<long long>(m.bytes / 1024),
                static_cast<long long>(m.live), static_cast<long long>(b.bytes / 1024),
                static_cast<long long>(b.live),
                m.bytes ? static_cast<double>(b.bytes) / m.bytes : 0.0,
                static_cast<long long>(a.dead), static_cast<long long>(m.dead),
                static_cast<long long>(b.dead));
  }
  std::printf("\n(per minute, messages KiB:");
  for (const auto& sample : samples) {
    auto it = sample.find("messages");
    std::printf(" %lld", static_cast<long long>(it == sample.end() ? 0 : it->second.bytes / 1024));
  }
  std::printf(")\n");
  std::printf("\n(%lld published, %lld acked during the soak)\n",
              static_cast<long long>(published.load()), static_cast<long long>(acked.load()));
  return 0;
}

int main(int argc, char** argv) {
  std::string target, owner_dsn;
  int pgbusd_pid = 0;
  int64_t large_mib = 256, rss_mib = 1024;
  int64_t consume_messages = 20000;
  double soak_seconds = 600;
  std::string pgbench = "/usr/lib/postgresql/15/bin/pgbench", work_dir = "/tmp";
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
    if (flag == "--consume-messages") consume_messages = std::stoll(argv[i + 1]);
    if (flag == "--soak-seconds") soak_seconds = std::stod(argv[i + 1]);
    if (flag == "--pgbench") pgbench = argv[i + 1];
    if (flag == "--work-dir") work_dir = argv[i + 1];
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

  // Consume: deliver + ack of 1 KiB messages, against a pgbench queue.
  if (!owner_dsn.empty() && consume_messages > 0) {
    std::string ctopic = topic + "-consume";
    if (!client.CreateTopic(ctopic).ok() || !client.CreateSubscription(ctopic, ctopic).ok()) {
      return 1;
    }
    std::vector<double> mine, floor, ratio;
    for (int r = 0; r < rounds; ++r) {
      if (!Fill(client, ctopic, consume_messages)) return 1;
      double c = Drain(client, ctopic, consume_messages, 2);
      double f = PgbenchQueue(owner_dsn, pgbench, consume_messages, 2, work_dir);
      mine.push_back(c);
      floor.push_back(f);
      ratio.push_back(f > 0 ? c / f : 0);
      std::fprintf(stderr, "consume round %d: pgbus %.0f/s, pgbench queue %.0f/s\n", r + 1, c, f);
    }
    std::printf("\n| consume (deliver + ack, 1 KiB, 2 streams; %lld messages a round) | pgbus | reference (same run) | ratio |\n|---|---|---|---|\n",
                static_cast<long long>(consume_messages));
    std::printf("| messages/s | %.0f | %.0f (pgbench, 2 clients: claim 100 with FOR UPDATE SKIP LOCKED, delete, return payloads) | %.3f |\n",
                Median(mine), Median(floor), Median(ratio));
  }

  if (int rc = LargePayloads(client, owner_dsn, pub_topic, large_mib, rss_mib, pgbusd_pid)) {
    return rc;
  }
  std::fflush(stdout);
  return Soak(client, owner_dsn, topic, soak_seconds);
}
