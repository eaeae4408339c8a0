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

#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <streambuf>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
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
double Throughput(double seconds, Call call, int callers = kCallers) {
  std::atomic<bool> go{false}, stop{false};
  std::atomic<int64_t> done{0}, failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < callers; ++i) {
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

// Runs `pgbench -n <args>` against `dsn`, its output to `log`; false (and
// says so) when it fails.
bool RunPgbench(const std::string& pgbench, const std::string& args, const std::string& dsn,
                const std::string& log) {
  const std::string cmd = pgbench + " -n " + args + " '" + dsn + "' >" + log + " 2>&1";
  if (std::system(cmd.c_str()) == 0) return true;
  std::fprintf(stderr, "pgbench failed (see %s)\n", log.c_str());
  return false;
}

// Rows a claim takes: pgbusd's (Dispatcher::Options::max_claim_batch), so
// that the queue reference claims as many rows a transaction as pgbus does.
constexpr int kClaimBatch = 200;

// The floor of a Postgres queue without pgbus: pgbench clients each
// claiming kClaimBatch rows of 1 KiB with FOR UPDATE SKIP LOCKED and
// deleting them (returning the payloads), until the `n` rows are gone.
// messages/s.
double PgbenchQueue(const std::string& dsn, const std::string& pgbench, int64_t n, int clients,
                    const std::string& dir) {
  Sql(dsn, "DROP TABLE IF EXISTS pgbus_bench_queue");
  Sql(dsn, "CREATE TABLE pgbus_bench_queue (id bigserial PRIMARY KEY, payload bytea NOT NULL)");
  Sql(dsn, "INSERT INTO pgbus_bench_queue (payload) SELECT decode(repeat('ab', 1024), 'hex') "
           "FROM generate_series(1, " + std::to_string(n) + ")");
  Sql(dsn, "VACUUM ANALYZE pgbus_bench_queue");
  std::string script = dir + "/claim.sql";
  std::ofstream(script) << "WITH c AS (SELECT id FROM pgbus_bench_queue ORDER BY id LIMIT "
                        << kClaimBatch << " "
                           "FOR UPDATE SKIP LOCKED) DELETE FROM pgbus_bench_queue q USING c "
                           "WHERE q.id = c.id RETURNING q.id, q.payload;\n";
  auto start = Clock::now();
  const bool ok = RunPgbench(pgbench,
                             "-f " + script + " -c " + std::to_string(clients) + " -j " +
                                 std::to_string(clients) + " -t " +
                                 std::to_string(n / kClaimBatch / clients),
                             dsn, dir + "/pgbench.log");
  double elapsed = Seconds(start);
  std::string left = Sql(dsn, "SELECT count(*) FROM pgbus_bench_queue");
  Sql(dsn, "DROP TABLE pgbus_bench_queue");
  if (!ok) return 0;
  return (n - std::stoll(left.empty() ? "0" : left)) / elapsed;
}

// The plain-SQL floor of the latency figure's Postgres CPU: pgbench paced at
// `rate` messages a second for `seconds`, each message one transaction that
// inserts a 1 KiB row and one that claims the oldest row (FOR UPDATE SKIP
// LOCKED) and deletes it, synchronous commit. Returns the messages inserted;
// `insert_ms` gets the latency of each INSERT transaction (pgbench's: from
// its scheduled start to its commit), the plain-SQL counterpart of a
// Publish call at that rate, which the host's commit stalls hit alike.
double PgbenchPacedQueue(const std::string& dsn, const std::string& pgbench, int rate,
                         double seconds, const std::string& dir,
                         std::vector<double>* insert_ms) {
  Sql(dsn, "DROP TABLE IF EXISTS pgbus_bench_paced");
  Sql(dsn, "CREATE TABLE pgbus_bench_paced (id bigserial PRIMARY KEY, published_at timestamptz "
           "NOT NULL DEFAULT now(), payload bytea NOT NULL)");
  const std::string insert = dir + "/paced-insert.sql", claim = dir + "/paced-claim.sql";
  std::ofstream(insert) << "INSERT INTO pgbus_bench_paced (payload) "
                           "VALUES (decode(repeat('ab', 1024), 'hex'));\n";
  std::ofstream(claim) << "WITH c AS (SELECT id FROM pgbus_bench_paced ORDER BY id LIMIT 1 "
                          "FOR UPDATE SKIP LOCKED) DELETE FROM pgbus_bench_paced q USING c "
                          "WHERE q.id = c.id RETURNING q.id, q.payload;\n";
  // Both scripts equally often, 2 × rate transactions a second in all, from
  // enough clients that waiting for commits does not hold the rate back
  // (as many as pgbench allows it still may not keep up: each message is
  // two synchronous commits).
  const int clients = std::clamp(rate / 250, 4, 64);
  const std::string log_prefix = "pgbench-paced-tx";
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind(log_prefix, 0) == 0) {
      std::filesystem::remove(entry.path());
    }
  }
  const bool ok = RunPgbench(pgbench,
                             "-f " + insert + "@1 -f " + claim + "@1 -R " +
                                 std::to_string(2 * rate) + " -c " + std::to_string(clients) +
                                 " -j 2 -T " + std::to_string(static_cast<int>(seconds + 0.5)) +
                                 " -l --log-prefix=" + dir + "/" + log_prefix,
                             dsn, dir + "/pgbench-paced.log");
  // One line a transaction, one file a thread: client, transaction, its
  // latency in µs, the script (0: the INSERT), ...
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind(log_prefix, 0) != 0) continue;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      std::istringstream fields(line);
      long long client = 0, transaction = 0, micros = 0;
      int script = -1;
      if (fields >> client >> transaction >> micros >> script && script == 0) {
        insert_ms->push_back(micros / 1000.0);
      }
    }
  }
  const std::string inserted = Sql(
      dsn, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgbus_bench_paced_id_seq");
  Sql(dsn, "DROP TABLE pgbus_bench_paced");
  if (!ok) return 0;
  return inserted.empty() ? 0 : std::stod(inserted);
}

// CPU seconds the Postgres cluster has used so far: the postmaster and
// its live children (backends, autovacuum, checkpointer, ...), plus the
// children it has reaped (cutime/cstime), so backends that exit between two
// readings still count.
double ClusterCpuSeconds(const std::string& data_dir) {
  std::ifstream pid_file(data_dir + "/postmaster.pid");
  long postmaster = 0;
  if (!(pid_file >> postmaster)) return 0;
  long ticks = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f;  // f[0] is field 3 (state)
    for (std::string x; fields >> x && f.size() < 15;) f.push_back(x);
    if (f.size() < 15) continue;
    const long pid = std::stol(name), ppid = std::stol(f[1]);
    const long utime = std::stol(f[11]), stime = std::stol(f[12]);
    if (pid == postmaster) {
      ticks += utime + stime + std::stol(f[13]) + std::stol(f[14]);
    } else if (ppid == postmaster) {
      ticks += utime + stime;
    }
  }
  return static_cast<double>(ticks) / sysconf(_SC_CLK_TCK);
}

// A rate and what it cost Postgres.
struct Figure {
  double per_second = 0;
  double pg_cpu_us = 0;  // Postgres CPU µs per message
};

// Runs `work` (returns the messages it handled) and measures the rate and
// Postgres's CPU per message.
template <typename Work>
Figure Measure(const std::string& data_dir, Work work) {
  const double cpu0 = ClusterCpuSeconds(data_dir);
  auto start = Clock::now();
  const double messages = work();
  const double elapsed = Seconds(start);
  const double cpu = ClusterCpuSeconds(data_dir) - cpu0;
  Figure f;
  f.per_second = messages / elapsed;
  f.pg_cpu_us = messages > 0 ? cpu * 1e6 / messages : 0;
  return f;
}

// Runs pgbench `script` from `clients` clients for `seconds` (`protocol`:
// pgbench's -M), then counts the rows of `table` and drops `tables`. The
// rows stored (0 if pgbench failed).
double PgbenchStored(const std::string& dsn, const std::string& pgbench, const std::string& script,
                     const std::string& protocol, int clients, double seconds,
                     const std::string& log, const std::string& table, const std::string& tables) {
  const bool ok = RunPgbench(pgbench,
                             "-M " + protocol + " -f " + script + " -c " +
                                 std::to_string(clients) + " -j 2 -T " +
                                 std::to_string(static_cast<int>(seconds + 0.5)),
                             dsn, log);
  std::string stored = Sql(dsn, "SELECT count(*) FROM " + table);
  Sql(dsn, "DROP TABLE " + tables);
  if (!ok) return 0;
  return stored.empty() ? 0 : std::stod(stored);
}

// The plain-SQL floor of a publish: pgbench clients inserting `rows` 1 KiB
// rows per transaction into a table with a bigserial key, synchronous
// commit, nothing in front. Returns messages (rows) handled.
double PgbenchInsert(const std::string& dsn, const std::string& pgbench, int rows, int clients,
                     double seconds, const std::string& dir) {
  Sql(dsn, "DROP TABLE IF EXISTS pgbus_bench_pub");
  Sql(dsn, "CREATE TABLE pgbus_bench_pub (id bigserial PRIMARY KEY, published_at timestamptz "
           "NOT NULL DEFAULT now(), payload bytea NOT NULL)");
  std::string script = dir + "/insert.sql";
  std::ofstream(script) << "INSERT INTO pgbus_bench_pub (payload) SELECT "
                           "decode(repeat('ab', 1024), 'hex') FROM generate_series(1, "
                        << rows << ");\n";
  return PgbenchStored(dsn, pgbench, script, "simple", clients, seconds,
                       dir + "/pgbench-insert.log", "pgbus_bench_pub", "pgbus_bench_pub");
}

// The storage floor of a publish of `rows` messages a transaction to a
// topic with `subscriptions` subscriptions: the rows pgbus stores, in tables
// shaped like its own (`LIKE pgbus.messages` / `pgbus.deliveries`
// `INCLUDING ALL`: the same columns, identity and indexes; no row security,
// no triggers), written by one plain statement per transaction from
// pgbench (prepared, as pgbusd's are), synchronous commit, nothing in
// front. What stands between pgbus and the plain INSERT splits into this
// floor's distance from it (the storage: a message row with its three index
// entries, a delivery row per subscription with two) and pgbus's distance
// from the floor (its statement, the server, the client, and its group
// commit, which the floor has not). Returns messages stored.
double PgbenchStorageFloor(const std::string& dsn, const std::string& pgbench, int rows,
                           int subscriptions, int clients, double seconds,
                           const std::string& dir) {
  Sql(dsn, "DROP TABLE IF EXISTS pgbus_bench_messages, pgbus_bench_deliveries");
  Sql(dsn, "CREATE TABLE pgbus_bench_messages (LIKE pgbus.messages INCLUDING ALL)");
  Sql(dsn, "CREATE TABLE pgbus_bench_deliveries (LIKE pgbus.deliveries INCLUDING ALL)");
  // Names as long as the bench's own (bench-<ns>-pub1, its -s0, -s1, ...).
  const std::string topic = absl::StrCat("bench-", NowNanos(), "-pub1");
  std::string script = dir + "/floor.sql";
  std::ofstream(script)
      << "WITH m AS (INSERT INTO pgbus_bench_messages (tenant_id, topic, expires_at, priority, "
         "size, sha256, payload) SELECT 'bench', '"
      << topic
      << "', now() + interval '7 days', 0, 1024, decode(repeat('cd', 32), 'hex'), "
         "decode(repeat('ab', 1024), 'hex') FROM generate_series(1, "
      << rows << ") RETURNING tenant_id, id, priority, size, expires_at, ordering_key) "
         "INSERT INTO pgbus_bench_deliveries (tenant_id, subscription, message_id, priority, "
         "size, expires_at, ordering_key) SELECT m.tenant_id, '"
      << topic << "-s' || s, m.id, m.priority, m.size, m.expires_at, m.ordering_key FROM m, "
      << "generate_series(0, " << subscriptions - 1 << ") s;\n";
  return PgbenchStored(dsn, pgbench, script, "prepared", clients, seconds,
                       dir + "/pgbench-floor.log",
                       "pgbus_bench_messages", "pgbus_bench_messages, pgbus_bench_deliveries");
}

// "median (min–max, ±spread% of the median)" of a figure's rounds.
std::string Spread(const std::vector<double>& v, int decimals = 0) {
  if (v.empty()) return "-";
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  const double med = Median(v);
  const double spread = med != 0 ? 100 * std::max(med - *lo, *hi - med) / med : 0;
  return absl::StrFormat("%.*f (%.*f–%.*f, ±%.0f%%)", decimals, med, decimals, *lo, decimals,
                         *hi, spread);
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

// The SDK figures (issue 11): each `--sdk NAME=COMMAND` runs `COMMAND N`
// (its stdout: `publish_msgs_per_s=X consume_msgs_per_s=Y`) against the same
// pgbusd, `rounds` times, the SDKs in turn within each round; the first
// (C++) is the reference of the ratios. 0, or 1 when a program failed.
int SdkFigures(const std::vector<std::pair<std::string, std::string>>& sdks,
               const std::string& target, int64_t messages, int rounds) {
  if (sdks.empty()) return 0;
  setenv("PGBUS_SERVER", target.c_str(), 1);  // the programs' clients read it
  struct Rates {
    std::vector<double> publish, consume, publish_ratio, consume_ratio;
  };
  std::vector<Rates> rates(sdks.size());
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::pair<double, double>> round;
    for (const auto& [name, command] : sdks) {
      std::string cmd = absl::StrCat(command, " ", messages);
      std::string out;
      if (FILE* p = popen(cmd.c_str(), "r")) {
        char buf[512];
        while (std::fgets(buf, sizeof buf, p)) out += buf;
        if (pclose(p) != 0) out.clear();
      }
      double publish = 0, consume = 0;
      if (std::sscanf(out.c_str(), "publish_msgs_per_s=%lf consume_msgs_per_s=%lf", &publish,
                      &consume) != 2) {
        std::fprintf(stderr, "SDK bench %s failed: %s -> %s\n", name.c_str(), cmd.c_str(),
                     out.c_str());
        return 1;
      }
      std::fprintf(stderr, "round %d: SDK %s: publish %.0f msg/s, subscribe + ack %.0f msg/s\n",
                   r + 1, name.c_str(), publish, consume);
      round.emplace_back(publish, consume);
    }
    for (size_t i = 0; i < sdks.size(); ++i) {
      rates[i].publish.push_back(round[i].first);
      rates[i].consume.push_back(round[i].second);
      rates[i].publish_ratio.push_back(round[i].first / round[0].first);
      rates[i].consume_ratio.push_back(round[i].second / round[0].second);
    }
  }
  std::printf("\n| SDK (%lld messages of 1 KiB, %d rounds) | batched publish msg/s | ratio to %s | "
              "subscribe + ack msg/s | ratio to %s |\n|---|---|---|---|---|\n",
              static_cast<long long>(messages), rounds, sdks[0].first.c_str(),
              sdks[0].first.c_str());
  for (size_t i = 0; i < sdks.size(); ++i) {
    std::printf("| %s | %s | %s | %s | %s |\n", sdks[i].first.c_str(),
                Spread(rates[i].publish).c_str(), Spread(rates[i].publish_ratio, 2).c_str(),
                Spread(rates[i].consume).c_str(), Spread(rates[i].consume_ratio, 2).c_str());
  }
  std::printf("\n(each SDK's own program, sdk/<language>/bench*, through its batching publisher "
              "and its subscriber, acking without waiting for each answer, the acks batched into "
              "few calls; the ratio is that of the same round. Goals: Go and TypeScript >= 0.5, "
              "Python >= 0.25 of C++)\n");
  return 0;
}

int main(int argc, char** argv) {
  // Line by line, so that the tables and the progress lines on stderr do
  // not cut into each other when both go to one file (make bench > log).
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string target, owner_dsn;
  int pgbusd_pid = 0;
  int64_t large_mib = 256, rss_mib = 1024;
  int64_t consume_messages = 20000;
  int64_t backlog = 1000000;
  double soak_seconds = 600;
  std::string pgbench = "/usr/lib/postgresql/15/bin/pgbench", work_dir = "/tmp";
  double seconds = 3;
  int rounds = 3;
  // Which figures to take (all by default): one alone is what a profile of
  // it wants.
  std::string figures = "publish,latency,consume,sdk";
  std::vector<std::pair<std::string, std::string>> sdks;  // name, command
  int64_t sdk_messages = 10000;
  // The paced rates of the latency figure, msg/s (one alone for a profile).
  std::string latency_rates = absl::StrCat(kLatencyRate, ",", 10 * kLatencyRate);
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--sdk") {
      std::pair<std::string, std::string> sdk = absl::StrSplit(argv[i + 1], absl::MaxSplits('=', 1));
      sdks.push_back(std::move(sdk));
    }
    if (flag == "--sdk-messages") sdk_messages = std::stoll(argv[i + 1]);
    if (flag == "--latency-rates") latency_rates = argv[i + 1];
    if (flag == "--target") target = argv[i + 1];
    if (flag == "--seconds") seconds = std::stod(argv[i + 1]);
    if (flag == "--rounds") rounds = std::stoi(argv[i + 1]);
    if (flag == "--owner-dsn") owner_dsn = argv[i + 1];
    if (flag == "--pgbusd-pid") pgbusd_pid = std::stoi(argv[i + 1]);
    if (flag == "--large-mib") large_mib = std::stoll(argv[i + 1]);
    if (flag == "--rss-mib") rss_mib = std::stoll(argv[i + 1]);
    if (flag == "--consume-messages") consume_messages = std::stoll(argv[i + 1]);
    if (flag == "--soak-seconds") soak_seconds = std::stod(argv[i + 1]);
    if (flag == "--backlog") backlog = std::stoll(argv[i + 1]);
    if (flag == "--pgbench") pgbench = argv[i + 1];
    if (flag == "--work-dir") work_dir = argv[i + 1];
    if (flag == "--figures") figures = argv[i + 1];
  }
  auto wanted = [&figures](absl::string_view name) {
    for (absl::string_view f : absl::StrSplit(figures, ',')) {
      if (f == name) return true;
    }
    return false;
  };
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
  // The reference call: a unary gRPC call that does no work.
  auto noop_call = [&] {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    return health->Check(&ctx, req, &resp).ok();
  };
  std::string topic = absl::StrCat("bench-", NowNanos());
  const std::string data_dir = work_dir + "/data";
  const std::string payload(kPayloadBytes, 'x');
  // A topic and its subscriptions (named TOPIC-s0, TOPIC-s1, ...).
  auto make_topic = [&](const std::string& name, int subscriptions) {
    if (!client.CreateTopic(name).ok()) return false;
    for (int i = 0; i < subscriptions; ++i) {
      if (!client.CreateSubscription(absl::StrCat(name, "-s", i), name).ok()) return false;
    }
    return true;
  };
  // Publish figures are taken on topics with subscriptions (fan-out is part
  // of a publish): one with 1, one with 10. Nothing consumes them.
  const std::string pub_topic = topic + "-pub1", pub10_topic = topic + "-pub10";
  if (!make_topic(topic, 1) || !make_topic(pub_topic, 1) || !make_topic(pub10_topic, 10)) {
    std::fprintf(stderr, "cannot create the bench topics\n");
    return 1;
  }
  auto batch_of = [&](int n, int priority) {
    std::vector<pgbus::v1::PublishMessage> batch(n);
    for (auto& m : batch) {
      m.set_payload(payload);
      m.set_priority(priority);
    }
    return batch;
  };
  // Publish from kCallers threads for `seconds`, `per_call` messages a call.
  auto publish_figure = [&](const std::string& t, int per_call) {
    return Measure(data_dir, [&] {
      std::atomic<int64_t> messages{0};
      Throughput(seconds, [&] {
        bool ok = per_call == 1 ? client.Publish(t, payload).ok()
                                : client.Publish(t, batch_of(per_call, 0)).ok();
        if (ok) messages += per_call;
        return ok;
      });
      return static_cast<double>(messages.load());
    });
  };
  auto insert_reference = [&](int rows) {
    return Measure(data_dir, [&] {
      return PgbenchInsert(owner_dsn, pgbench, rows, kCallers, seconds, work_dir);
    });
  };

  struct Row {
    Row(std::string n, std::string r) : name(std::move(n)), reference(std::move(r)) {}
    std::string name, reference;
    std::vector<double> mine, ref, ratio, cpu, ref_cpu, cpu_ratio;
    void Add(const Figure& m, const Figure& r) {
      mine.push_back(m.per_second);
      ref.push_back(r.per_second);
      ratio.push_back(r.per_second > 0 ? m.per_second / r.per_second : 0);
      cpu.push_back(m.pg_cpu_us);
      ref_cpu.push_back(r.pg_cpu_us);
      cpu_ratio.push_back(r.pg_cpu_us > 0 ? m.pg_cpu_us / r.pg_cpu_us : 0);
    }
  };
  std::vector<Row> rows;
  std::vector<double> noop_rps, pub1_vs_noop;
  const struct {
    const std::string* topic;
    int subscriptions, per_call;
  } kPublishCases[] = {{&pub_topic, 1, 1}, {&pub10_topic, 10, 1}, {&pub_topic, 1, 100},
                       {&pub10_topic, 10, 100}};
  for (const auto& c : kPublishCases) {
    rows.push_back(Row{absl::StrCat("publish, ", c.per_call, " msg/call, ", c.subscriptions,
                                    c.subscriptions == 1 ? " subscription" : " subscriptions"),
                       absl::StrCat("pgbench INSERT of ", c.per_call,
                                    c.per_call == 1 ? " row" : " rows", " a transaction")});
  }
  // The storage floor of each publish case (PgbenchStorageFloor), and the
  // rounds' ratios.
  struct Floor {
    std::vector<double> floor, floor_vs_insert, mine_vs_floor, cpu, cpu_vs_insert,
        mine_cpu_vs_floor;
  };
  std::vector<Floor> floors(std::size(kPublishCases));
  for (int r = 0; r < rounds && wanted("publish"); ++r) {
    double noop = Throughput(seconds, noop_call);
    noop_rps.push_back(noop);
    const Figure ref1 = insert_reference(1), ref100 = insert_reference(100);
    for (size_t i = 0; i < std::size(kPublishCases); ++i) {
      const auto& c = kPublishCases[i];
      const Figure mine = publish_figure(*c.topic, c.per_call);
      const Figure& insert = c.per_call == 1 ? ref1 : ref100;
      rows[i].Add(mine, insert);
      if (!owner_dsn.empty()) {
        const Figure floor = Measure(data_dir, [&] {
          return PgbenchStorageFloor(owner_dsn, pgbench, c.per_call, c.subscriptions, kCallers,
                                     seconds, work_dir);
        });
        Floor& f = floors[i];
        f.floor.push_back(floor.per_second);
        f.floor_vs_insert.push_back(insert.per_second > 0 ? floor.per_second / insert.per_second
                                                          : 0);
        f.mine_vs_floor.push_back(floor.per_second > 0 ? mine.per_second / floor.per_second : 0);
        f.cpu.push_back(floor.pg_cpu_us);
        f.cpu_vs_insert.push_back(insert.pg_cpu_us > 0 ? floor.pg_cpu_us / insert.pg_cpu_us : 0);
        f.mine_cpu_vs_floor.push_back(floor.pg_cpu_us > 0 ? mine.pg_cpu_us / floor.pg_cpu_us : 0);
      }
      if (i == 0) pub1_vs_noop.push_back(mine.per_second / noop);
      std::fprintf(stderr, "round %d: %s: %.0f msg/s (%.0f µs Postgres CPU/msg)\n", r + 1,
                   rows[i].name.c_str(), mine.per_second, mine.pg_cpu_us);
    }
  }

  // Latency: a paced publisher at `rate` msg/s, one stream receiving and
  // acking; the reference is the no-op call's round trip at 1000/s.
  struct Latency {
    std::vector<double> p50, p99, cpu;
    // The Publish call alone (publish to its answer).
    std::vector<double> call_p50, call_p99;
    // The plain-SQL reference at the same rate: its CPU a message, its rate,
    // and its INSERT transactions' latency.
    std::vector<double> ref_cpu, ref_rate, ref_insert_p50, ref_insert_p99;
  };
  auto latency_run = [&](const std::string& t, const std::string& subscription, int rate,
                         int priority, Latency* out) {
    std::vector<double> latencies_ms;
    absl::Mutex calls_mu;
    std::vector<double> call_ms;  // the Publish call alone: where the time goes
    // The receiving side is a consumer of its own, on its own connection:
    // on the publishers' (one connection takes its frames one at a time,
    // at each end) the stream's messages waited behind 10,000 Publish
    // calls a second (at that rate p50 7.9-10.0 against 9.6-12.7 ms, p99
    // 23.6-27.7 against 25.6-35.5 ms, three alternated runs each).
    pgbus::ClientOptions receiving_options = options;
    receiving_options.own_connection = true;
    auto receiving_client = pgbus::Client::Connect(target, receiving_options);
    auto sub = receiving_client->Subscribe(subscription);
    std::atomic<bool> stop{false};
    // Acks go from a thread of their own, in batches of up to 100 or every
    // 100 ms, as the SDKs' receivers send them: an Ack call takes
    // milliseconds, and made from the receiving thread it held back every
    // message that arrived meanwhile, so the figure measured the bench's own
    // acks (at 10,000 msg/s, ~40% of the receiver's time).
    absl::Mutex acks_mu;
    std::vector<std::string> pending_acks;
    bool receiving = true;
    std::thread acker([&] {
      for (;;) {
        std::vector<std::string> batch;
        {
          absl::MutexLock lock(&acks_mu);
          acks_mu.AwaitWithTimeout(absl::Condition(
                                       +[](std::vector<std::string>* p) { return p->size() >= 100; },
                                       &pending_acks),
                                   absl::Milliseconds(100));
          batch.swap(pending_acks);
          if (batch.empty() && !receiving) return;
        }
        if (!batch.empty()) (void)receiving_client->Ack(subscription, batch);
      }
    });
    std::thread receiver([&] {
      while (!stop) {
        auto next = sub->Next(absl::Milliseconds(50));
        if (next.ok() && next->has_value()) {
          const auto& m = **next;
          int64_t sent = 0;
          auto it = m.message().attributes().find("sent_ns");
          if (it != m.message().attributes().end() && absl::SimpleAtoi(it->second, &sent)) {
            latencies_ms.push_back((NowNanos() - sent) / 1e6);
          }
          absl::MutexLock lock(&acks_mu);
          pending_acks.push_back(m.ack_id());
        }
      }
      absl::MutexLock lock(&acks_mu);
      receiving = false;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int total = static_cast<int>(rate * seconds * 2);
    const auto interval = std::chrono::nanoseconds(1000000000 / rate);
    // Publishes are paced from several threads (a Publish takes longer than
    // the interval); each thread owns every Nth tick.
    const int pacers = std::max(16, rate / 100);
    const double cpu0 = ClusterCpuSeconds(data_dir);
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int p = 0; p < pacers; ++p) {
      threads.emplace_back([&, p] {
        for (int i = p; i < total; i += pacers) {
          std::this_thread::sleep_until(start + interval * i);
          pgbus::v1::PublishMessage m;
          m.set_payload(payload);
          m.set_priority(priority);
          (*m.mutable_attributes())["sent_ns"] = std::to_string(NowNanos());
          std::vector<pgbus::v1::PublishMessage> one;
          one.push_back(std::move(m));
          const int64_t before = NowNanos();
          (void)client.Publish(t, std::move(one));
          const double took = (NowNanos() - before) / 1e6;
          absl::MutexLock lock(&calls_mu);
          call_ms.push_back(took);
        }
      });
    }
    for (auto& th : threads) th.join();
    std::this_thread::sleep_for(std::chrono::seconds(2));  // drain
    stop = true;
    receiver.join();
    acker.join();
    sub->Cancel();
    const double cpu = ClusterCpuSeconds(data_dir) - cpu0;
    if (latencies_ms.empty()) return false;
    std::fprintf(stderr, "  publish call alone at %d msg/s: p50 %.2f ms, p99 %.2f ms\n", rate,
                 Percentile(call_ms, 0.50), Percentile(call_ms, 0.99));
    out->call_p50.push_back(Percentile(call_ms, 0.50));
    out->call_p99.push_back(Percentile(call_ms, 0.99));
    out->p50.push_back(Percentile(latencies_ms, 0.50));
    out->p99.push_back(Percentile(latencies_ms, 0.99));
    out->cpu.push_back(cpu * 1e6 / latencies_ms.size());
    return true;
  };
  std::vector<double> noop_ms;
  if (wanted("latency")) {
    auto start = Clock::now();
    const auto interval = std::chrono::milliseconds(1);
    for (int i = 0; i < static_cast<int>(1000 * seconds); ++i) {
      std::this_thread::sleep_until(start + interval * i);
      auto t0 = Clock::now();
      (void)noop_call();
      noop_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  }
  std::vector<int> kLatencyRates;
  for (absl::string_view r : absl::StrSplit(latency_rates, ',')) {
    int rate = 0;
    if (absl::SimpleAtoi(r, &rate) && rate > 0) kLatencyRates.push_back(rate);
  }
  std::map<int, Latency> latency;
  for (int r = 0; r < rounds && wanted("latency"); ++r) {
    for (int rate : kLatencyRates) {
      if (!latency_run(topic, topic + "-s0", rate, 0, &latency[rate])) {
        std::fprintf(stderr, "no message was received in the latency run at %d msg/s\n", rate);
        return 1;
      }
      std::fprintf(stderr, "latency round %d at %d msg/s: p50 %.2f ms, p99 %.2f ms\n", r + 1,
                   rate, latency[rate].p50.back(), latency[rate].p99.back());
    }
  }
  // The references' rounds after all of pgbus's, so that their churn (the
  // paced pgbench at 10,000 msg/s has 40 clients) cannot slow the rounds
  // that follow. Interleaved, the 1,000 msg/s rounds after it were slower
  // than the first in two runs (p50 3.2 against 1.8 ms); not confirmed as
  // the cause, the machine's speed varied as much between runs.
  for (int r = 0; r < rounds && wanted("latency") && !owner_dsn.empty(); ++r) {
    for (int rate : kLatencyRates) {
      std::vector<double> insert_ms;
      const Figure ref = Measure(data_dir, [&] {
        return PgbenchPacedQueue(owner_dsn, pgbench, rate, 2 * seconds, work_dir, &insert_ms);
      });
      latency[rate].ref_cpu.push_back(ref.pg_cpu_us);
      latency[rate].ref_rate.push_back(ref.per_second);
      if (!insert_ms.empty()) {
        latency[rate].ref_insert_p50.push_back(Percentile(insert_ms, 0.50));
        latency[rate].ref_insert_p99.push_back(Percentile(insert_ms, 0.99));
      }
      std::fprintf(stderr, "plain SQL paced at %d msg/s, round %d: %.0f msg/s, %.0f µs Postgres "
                   "CPU/msg, INSERT p50 %.2f ms, p99 %.2f ms\n",
                   rate, r + 1, ref.per_second, ref.pg_cpu_us,
                   insert_ms.empty() ? 0.0 : Percentile(insert_ms, 0.50),
                   insert_ms.empty() ? 0.0 : Percentile(insert_ms, 0.99));
    }
  }

  // Consume: deliver + ack of 1 KiB messages, against a pgbench queue.
  Row consume{"consume (deliver + ack), 2 streams",
              absl::StrCat("pgbench, 2 clients: claim ", kClaimBatch,
                           " with FOR UPDATE SKIP LOCKED, delete, return payloads")};
  const std::string ctopic = topic + "-consume";
  const bool consuming = !owner_dsn.empty() && consume_messages > 0 && wanted("consume");
  if (consuming) {
    if (!make_topic(ctopic, 1)) return 1;
    for (int r = 0; r < rounds; ++r) {
      if (!Fill(client, ctopic, consume_messages)) return 1;
      const Figure c = Measure(data_dir, [&] {
        Drain(client, ctopic + "-s0", consume_messages, 2);
        return static_cast<double>(consume_messages);
      });
      const Figure f = Measure(data_dir, [&] {
        const double rate = PgbenchQueue(owner_dsn, pgbench, consume_messages, 2, work_dir);
        return rate > 0 ? static_cast<double>(consume_messages) : 0.0;
      });
      consume.Add(c, f);
      std::fprintf(stderr, "consume round %d: pgbus %.0f/s, pgbench queue %.0f/s\n", r + 1,
                   c.per_second, f.per_second);
    }
  }

  // Backlog: the same operations with `backlog` messages waiting in a
  // subscription and 10,000 of them leased to a stream that does not ack:
  // a figure whose cost followed the backlog would drop here.
  struct BacklogRow {
    explicit BacklogRow(std::string n) : name(std::move(n)) {}
    std::string name;
    std::vector<double> backlog, empty;
  };
  std::vector<BacklogRow> backlog_rows;
  if (!owner_dsn.empty() && backlog > 0 && wanted("publish") && wanted("latency")) {
    const std::string bt = topic + "-backlog", bsub = bt + "-s0";
    if (!make_topic(bt, 1)) return 1;
    const char* tenant_env = std::getenv("PGBUS_BENCH_TENANT");
    const std::string tenant = tenant_env ? tenant_env : "bench";
    std::fprintf(stderr, "backlog: inserting %lld messages...\n", static_cast<long long>(backlog));
    for (int64_t done = 0; done < backlog; done += 100000) {
      const int64_t n = std::min<int64_t>(100000, backlog - done);
      Sql(owner_dsn, absl::StrCat(
          "BEGIN; SELECT set_config('pgbus.tenant_id', '", tenant, "', true); "
          "WITH m AS (INSERT INTO pgbus.messages (tenant_id, topic, expires_at, size, sha256, "
          "payload) SELECT '", tenant, "', '", bt, "', now() + interval '1 day', 1024, "
          "sha256(decode(repeat('ab', 1024), 'hex')), decode(repeat('ab', 1024), 'hex') "
          "FROM generate_series(1, ", n, ") RETURNING tenant_id, id, expires_at) "
          "INSERT INTO pgbus.deliveries (tenant_id, subscription, message_id, priority, size, "
          "visible_at, expires_at) SELECT tenant_id, '", bsub, "', id, 0, 1024, NULL, "
          "expires_at FROM m; COMMIT"));
    }
    const std::string stored = Sql(owner_dsn, absl::StrCat(
        "BEGIN; SELECT set_config('pgbus.tenant_id', '", tenant, "', true); "
        "SELECT count(*) FROM pgbus.deliveries WHERE subscription = '", bsub, "'"));
    if (stored.empty() || std::stoll(stored) < backlog) {
      std::fprintf(stderr, "backlog: only %s of %lld messages were stored\n", stored.c_str(),
                   static_cast<long long>(backlog));
      return 1;
    }
    // 10,000 in flight: leased to a stream that holds them.
    pgbus::v1::SubscribeRequest hold_req;
    hold_req.set_subscription(bsub);
    hold_req.set_max_outstanding_messages(10000);
    hold_req.mutable_ack_deadline()->set_seconds(600);
    auto holder = client.Subscribe(hold_req);
    int held = 0;
    while (held < 10000) {
      auto next = holder->Next(absl::Seconds(10));
      if (!next.ok() || !next->has_value()) break;
      ++held;
    }
    if (held < 10000) {
      std::fprintf(stderr, "backlog: only %d of 10000 messages could be leased\n", held);
      return 1;
    }
    BacklogRow pub{"publish, 1 msg/call, 1 subscription (msg/s)"}, con{"consume (msg/s)"},
        p50{"latency p50 at 1000 msg/s (ms)"}, p99{"latency p99 at 1000 msg/s (ms)"};
    for (int r = 0; r < rounds; ++r) {
      // Publish and latency on the empty-case topics, with the backlog in
      // the same tables; consume drains the backlogged subscription itself.
      pub.backlog.push_back(publish_figure(pub_topic, 1).per_second);
      if (consuming) {
        con.backlog.push_back(Drain(client, bsub, consume_messages, 2));
      }
      Latency l;
      if (latency_run(topic, topic + "-s0", kLatencyRate, 0, &l)) {
        p50.backlog.push_back(l.p50.back());
        p99.backlog.push_back(l.p99.back());
      }
    }
    holder->Cancel();
    pub.empty = rows[0].mine;
    con.empty = consume.mine;
    p50.empty = latency[kLatencyRate].p50;
    p99.empty = latency[kLatencyRate].p99;
    backlog_rows = {pub, con, p50, p99};
  }

  std::printf("\npgbus bench: %d rounds of %.0f s; each cell is the median of the rounds "
              "(min–max, ±largest distance from the median); 1 KiB payloads, %d concurrent "
              "callers, synchronous commit everywhere\n\n",
              rounds, seconds, kCallers);
  std::printf("| figure | pgbus msg/s | reference msg/s (same run) | ratio | Postgres CPU µs/msg: pgbus | reference | ratio |\n|---|---|---|---|---|---|---|\n");
  auto print_row = [](const Row& row) {
    std::printf("| %s | %s | %s: %s | %s | %s | %s | %s |\n", row.name.c_str(),
                Spread(row.mine).c_str(), row.reference.c_str(), Spread(row.ref).c_str(),
                Spread(row.ratio, 2).c_str(), Spread(row.cpu).c_str(), Spread(row.ref_cpu).c_str(),
                Spread(row.cpu_ratio, 2).c_str());
  };
  for (const Row& row : rows) {
    if (!row.mine.empty()) print_row(row);
  }
  if (consuming) print_row(consume);
  bool floor_header = false;
  for (size_t i = 0; i < floors.size(); ++i) {
    const Floor& f = floors[i];
    if (f.floor.empty()) continue;
    if (!floor_header) {
      std::printf("\n| figure | the same rows by plain SQL msg/s (storage floor) | floor ÷ plain "
                  "INSERT | pgbus ÷ floor | Postgres CPU µs/msg: floor | floor ÷ plain INSERT | "
                  "pgbus ÷ floor |\n|---|---|---|---|---|---|---|\n");
      floor_header = true;
    }
    std::printf("| %s | %s | %s | %s | %s | %s | %s |\n", rows[i].name.c_str(),
                Spread(f.floor).c_str(), Spread(f.floor_vs_insert, 2).c_str(),
                Spread(f.mine_vs_floor, 2).c_str(), Spread(f.cpu).c_str(),
                Spread(f.cpu_vs_insert, 2).c_str(), Spread(f.mine_cpu_vs_floor, 2).c_str());
  }
  std::printf("\n| figure | pgbus | reference (same run) | ratio |\n|---|---|---|---|\n");
  if (!noop_rps.empty()) {
    std::printf("| Publish RPCs/s, 1 msg/call, 1 subscription | %s | %s (no-op unary gRPC call) | %s |\n",
                Spread(rows[0].mine).c_str(), Spread(noop_rps).c_str(),
                Spread(pub1_vs_noop, 2).c_str());
  }
  const double r50 = noop_ms.empty() ? 0 : Percentile(noop_ms, 0.50),
               r99 = noop_ms.empty() ? 0 : Percentile(noop_ms, 0.99);
  for (int rate : kLatencyRates) {
    const Latency& l = latency[rate];
    if (l.p50.empty()) continue;
    std::printf("| publish -> receive latency p50 at %d msg/s (ms) | %s | %.2f (no-op round trip) | %.1f |\n",
                rate, Spread(l.p50, 2).c_str(), r50, Median(l.p50) / r50);
    std::printf("| publish -> receive latency p99 at %d msg/s (ms) | %s | %.2f (no-op round trip) | %.1f |\n",
                rate, Spread(l.p99, 2).c_str(), r99, Median(l.p99) / r99);
    // A reference that fell behind its schedule (each message is two
    // synchronous commits: ~5,000 msg/s here) measures its own queueing,
    // not a commit: its latency is left out then.
    if (!l.ref_insert_p99.empty() && Median(l.ref_rate) >= 0.95 * rate) {
      std::printf("| Publish call alone p50 / p99 at %d msg/s (ms) | %s / %s | %s / %s (the paced "
                  "reference's INSERT transactions, synchronous commit) | %.1f / %.1f |\n",
                  rate, Spread(l.call_p50, 2).c_str(), Spread(l.call_p99, 2).c_str(),
                  Spread(l.ref_insert_p50, 2).c_str(), Spread(l.ref_insert_p99, 2).c_str(),
                  Median(l.call_p50) / Median(l.ref_insert_p50),
                  Median(l.call_p99) / Median(l.ref_insert_p99));
    }
    std::string ref, ratio;  // none without the owner's DSN
    if (!l.ref_cpu.empty()) {
      ref = absl::StrFormat(
          "%s (pgbench paced at the same rate: INSERT a row, then claim it with FOR UPDATE "
          "SKIP LOCKED and DELETE it, a transaction each; it kept up %.0f msg/s)",
          Spread(l.ref_cpu), Median(l.ref_rate));
      ratio = absl::StrFormat("%.2f", Median(l.cpu) / Median(l.ref_cpu));
    }
    std::printf("| Postgres CPU µs/msg at %d msg/s (publish + deliver + ack) | %s | %s | %s |\n",
                rate, Spread(l.cpu).c_str(), ref.c_str(), ratio.c_str());
  }
  if (!backlog_rows.empty()) {
    std::printf("\n| with %lld messages waiting and 10,000 in flight | backlog | empty | backlog / empty |\n|---|---|---|---|\n",
                static_cast<long long>(backlog));
    for (const BacklogRow& b : backlog_rows) {
      if (b.backlog.empty()) continue;
      const double ratio = Median(b.backlog) / Median(b.empty);
      std::printf("| %s | %s | %s | %.2f |\n", b.name.c_str(), Spread(b.backlog, 2).c_str(),
                  Spread(b.empty, 2).c_str(), ratio);
    }
    std::printf("\n(the backlog waits in another subscription of the same tables; consume "
                "drains the backlogged subscription from its head, behind the 10,000 in flight. "
                "For rates a ratio above 1 is better, for latencies below 1)\n");
  }

  if (wanted("sdk")) {
    if (int rc = SdkFigures(sdks, target, sdk_messages, rounds)) return rc;
  }
  if (int rc = LargePayloads(client, owner_dsn, pub_topic, large_mib, rss_mib, pgbusd_pid)) {
    return rc;
  }
  std::fflush(stdout);
  return Soak(client, owner_dsn, topic, soak_seconds);
}
