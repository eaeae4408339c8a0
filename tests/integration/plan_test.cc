// The plans of the hot statements, on a backlog and with statistics that
// are stale the way a fresh cluster's are: the tables were analysed while
// nearly empty, then filled, and autovacuum has not come back. Each
// statement runs as pgbusd runs it (its own session settings, prepared,
// and run six times by its generic plan) under EXPLAIN
// ANALYZE in a transaction that is rolled back. A plan fails when it scans
// a whole table (sequential or bitmap heap scan of deliveries or messages)
// or filters out more rows than the statement handles: that is a cost that
// grows with the backlog instead of with the work asked for.
#include <gtest/gtest.h>

#include <unistd.h>

#include <regex>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/store/postgres/migrator.h"
#include "service/store/postgres/sql.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

namespace sql = store::postgres::sql;

constexpr char kTenant[] = "plans";
constexpr int kBacklog = 50000;     // ready deliveries of subscription q
constexpr int kInFlight = 5000;     // of q, leased until later
constexpr int kDue = 500;           // of q, leased, lease run out
constexpr int kMaxFiltered = 1000;  // rows a plan may filter out
constexpr int kOtherTopics = 2000;  // of the tenant besides q and dlq, with a
                                    // subscription each; uploads too

class PlanTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A database of its own (CTest runs each test in its own process, in
    // parallel), whose statistics no other test touches.
    owner_dsn_ = testing::CreateEmptyDatabase(absl::StrCat("pgbus_plans_", getpid()),
                                              "pgbus_owner");
    app_dsn_ = absl::StrCat(owner_dsn_.substr(0, owner_dsn_.rfind("user=")), "user=pgbus_app");
    auto applied = store::postgres::Migrate(owner_dsn_, "pgbus_app");
    ASSERT_TRUE(applied.ok()) << applied.status();
    pqxx::connection conn(owner_dsn_);
    auto in_tenant = [&](const std::string& statement) {
      pqxx::work w(conn);
      // Setting up is not what is measured: hash joins for the bulk
      // updates, which the stale statistics would make nested loops.
      w.exec_params("SELECT set_config('pgbus.tenant_id', $1, true), "
                    "set_config('enable_nestloop', 'off', true)", kTenant);
      w.exec(statement);
      w.commit();
    };
    in_tenant(absl::StrCat(
        "INSERT INTO pgbus.tenants (tenant_id) VALUES ('plans');"
        "INSERT INTO pgbus.topics (tenant_id, name, retention, dedup_window)"
        "  VALUES ('plans', 'q', '1 day', '1 day'), ('plans', 'dlq', '1 day', '1 day');"
        // Other topics of the tenant: a statement finds its topics by key,
        // never by reading every topic of the tenant.
        "INSERT INTO pgbus.topics (tenant_id, name, retention, dedup_window)"
        "  SELECT 'plans', 'other-' || i, '1 day', '1 day' FROM generate_series(1, ",
        kOtherTopics, ") i;"
        "INSERT INTO pgbus.subscriptions (tenant_id, name, topic, ack_deadline, min_backoff,"
        "  max_backoff, max_delivery_attempts, dead_letter_topic)"
        "  VALUES ('plans', 'q', 'q', '30s', '0', '60s', 5, 'dlq'),"
        "         ('plans', 'other', 'q', '30s', '0', '60s', 0, '');"
        // And other subscriptions, one per other topic.
        "INSERT INTO pgbus.subscriptions (tenant_id, name, topic, ack_deadline, min_backoff,"
        "  max_backoff, max_delivery_attempts, dead_letter_topic)"
        "  SELECT 'plans', 'other-' || i, 'other-' || i, '30s', '0', '60s', 5, 'dlq'"
        "  FROM generate_series(1, ", kOtherTopics, ") i;"
        // A few rows, then statistics: what autovacuum saw of a new cluster.
        "WITH m AS (INSERT INTO pgbus.messages (tenant_id, topic, expires_at, size, sha256,"
        "  payload) SELECT 'plans', 'q', now() + interval '1 day', 5, sha256('hello'::bytea),"
        "  'hello'::bytea FROM generate_series(1, 10) RETURNING tenant_id, id, expires_at)"
        "INSERT INTO pgbus.deliveries (tenant_id, subscription, message_id, priority, size,"
        "  visible_at, expires_at) SELECT tenant_id, 'other', id, 0, 5, NULL, expires_at FROM m"));
    {
      pqxx::nontransaction n(conn);
      n.exec("ANALYZE pgbus.messages");
      n.exec("ANALYZE pgbus.deliveries");
      n.exec("ANALYZE pgbus.payloads");  // none yet
    }
    // The backlog, never analysed.
    in_tenant(absl::StrCat(
        // Uploads in progress (payloads without a message yet): a publish
        // probes the payload it names, never the uploads of the tenant.
        "INSERT INTO pgbus.payloads (tenant_id, topic, chunk_size)"
        "  SELECT 'plans', 'q', 65536 FROM generate_series(1, ", kOtherTopics, ");"
        "WITH m AS (INSERT INTO pgbus.messages (tenant_id, topic, expires_at, size, sha256,"
        "  payload) SELECT 'plans', 'q', now() + interval '1 day', 5, sha256('hello'::bytea),"
        "  'hello'::bytea FROM generate_series(1, ", kBacklog + kInFlight + kDue,
        ") RETURNING tenant_id, id, expires_at)"
        "INSERT INTO pgbus.deliveries (tenant_id, subscription, message_id, priority, size,"
        "  visible_at, expires_at) SELECT tenant_id, 'q', id, 0, 5, NULL, expires_at FROM m;"
        // The oldest are in flight (ahead of the ready ones in claim order),
        // some of them with their lease run out.
        "UPDATE pgbus.deliveries SET attempts = 1, lease = 7,"
        "  visible_at = now() + interval '10 minutes'"
        " WHERE subscription = 'q' AND message_id IN (SELECT message_id FROM pgbus.deliveries"
        "   WHERE subscription = 'q' ORDER BY message_id LIMIT ", kInFlight + kDue, ");",
        "UPDATE pgbus.deliveries SET visible_at = now() - interval '1 minute'"
        " WHERE subscription = 'q' AND message_id IN (SELECT message_id FROM pgbus.deliveries"
        "   WHERE subscription = 'q' ORDER BY message_id LIMIT ", kDue, ");"));
    pqxx::work w(conn);
    w.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", kTenant);
    pqxx::row keys = w.exec1(
        "SELECT array_agg(message_id)::text, array_agg(attempts)::text, array_agg(lease)::text,"
        "  array_agg(ctid)::text"
        " FROM (SELECT *, ctid FROM pgbus.deliveries WHERE subscription = 'q'"
        "       AND visible_at > now() ORDER BY message_id DESC LIMIT 100) s");
    lease_keys_ = absl::StrCat("'", keys[0].as<std::string>(), "', '",
                               keys[1].as<std::string>(), "', '", keys[2].as<std::string>(), "'");
    lease_rows_ = absl::StrCat("'", keys[3].as<std::string>(), "'");
  }

  // EXPLAIN ANALYZE of the statement, prepared once, executed `runs` times
  // as pgbusd's role in pgbusd's transaction settings (each rolled back);
  // returns the last plan's lines.
  static std::vector<std::string> Plan(const std::string& types, const char* statement,
                                       const std::string& args, int runs = 6,
                                       const std::string& setup = "",
                                       const std::string& dsn = app_dsn_) {
    pqxx::connection conn(dsn);
    {
      pqxx::nontransaction n(conn);
      n.exec(absl::StrCat("PREPARE s(", types, ") AS ", statement));
    }
    std::vector<std::string> lines;
    for (int i = 0; i < runs; ++i) {
      pqxx::work w(conn);
      w.exec_params(sql::kSetTenant, kTenant);
      if (!setup.empty()) w.exec(setup);
      lines.clear();
      for (const auto& row : w.exec(absl::StrCat("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE s(",
                                                 args, ")"))) {
        lines.push_back(row[0].as<std::string>());
      }
      w.abort();
    }
    // Every execution ran the generic plan, made once: the plan checked is
    // the one pgbusd runs at every execution (set_tenant.sql), whatever the
    // arguments. Left to choose, Postgres planned the publish insert anew
    // for each execution, and planning took 80% of its time.
    pqxx::nontransaction n(conn);
    auto counts = n.exec1(
        "SELECT custom_plans, generic_plans FROM pg_prepared_statements WHERE name = 's'");
    EXPECT_EQ(counts[0].as<int64_t>(), 0) << statement;
    EXPECT_EQ(counts[1].as<int64_t>(), runs) << statement;
    return lines;
  }

  // Rows the statement changed (or returned) on its last of `runs`
  // executions, as Plan() runs it, after `setup` in the same transaction.
  static int64_t RowsTaken(const std::string& types, const char* statement,
                           const std::string& args, const std::string& setup = "",
                           int runs = 6) {
    pqxx::connection conn(app_dsn_);
    {
      pqxx::nontransaction n(conn);
      n.exec(absl::StrCat("PREPARE s(", types, ") AS ", statement));
    }
    int64_t rows = -1;
    for (int i = 0; i < runs; ++i) {
      pqxx::work w(conn);
      w.exec_params(sql::kSetTenant, kTenant);
      if (!setup.empty()) w.exec(setup);
      pqxx::result r = w.exec(absl::StrCat("EXECUTE s(", args, ")"));
      rows = r.columns() > 0 ? static_cast<int64_t>(r.size()) : r.affected_rows();
      w.abort();
    }
    return rows;
  }

  // The statement of function `function`'s body that `pattern` matches
  // (so that a test follows the migrations); "" when none does.
  static std::string StatementOf(const std::string& function, const std::string& pattern) {
    pqxx::connection conn(owner_dsn_);
    pqxx::nontransaction n(conn);
    const std::string body =
        n.exec_params1("SELECT prosrc FROM pg_proc WHERE proname = $1", function)[0]
            .as<std::string>();
    std::smatch found;
    if (!std::regex_search(body, found, std::regex(pattern))) {
      ADD_FAILURE() << "no statement of " << function << " matches " << pattern << ":\n" << body;
      return "";
    }
    return found[0].str();
  }

  static std::string owner_dsn_, app_dsn_, lease_keys_;
  static std::string lease_rows_;  // the ctids of lease_keys_' rows, as tid[]

 public:
  // The plan reads only what the statement works on.
  static void ExpectBounded(const std::vector<std::string>& plan) {
    const std::string text = absl::StrJoin(plan, "\n");
    static const std::regex kWholeTable(
        R"((Seq Scan|Bitmap Heap Scan) on (deliveries|messages)\b)");
    EXPECT_FALSE(std::regex_search(text, kWholeTable)) << text;
    static const std::regex kFiltered(R"(Rows Removed by (Filter|Join Filter): (\d+))");
    for (std::sregex_iterator it(text.begin(), text.end(), kFiltered), end; it != end; ++it) {
      EXPECT_LE(std::stoi((*it)[2]), kMaxFiltered) << text;
    }
  }
};
std::string PlanTest::owner_dsn_, PlanTest::app_dsn_, PlanTest::lease_keys_,
    PlanTest::lease_rows_;

TEST_F(PlanTest, ClaimReadsOnlyReadyRows) {
  auto plan = Plan("text, int4, int8, int8, int8, bool", sql::kClaim,
                   "'q', 100, 1000000, 9, 30000, true");
  ExpectBounded(plan);
  const std::string text = absl::StrJoin(plan, "\n");
  EXPECT_NE(text.find("deliveries_ready"), std::string::npos) << text;
  EXPECT_NE(text.find("Tid Scan on deliveries"), std::string::npos) << text;
}

TEST_F(PlanTest, ReleaseReadsOnlyDueRows) {
  auto plan = Plan("text, int4", sql::kReleaseDue, "'q', 1000");
  ExpectBounded(plan);
  const std::string text = absl::StrJoin(plan, "\n");
  EXPECT_NE(text.find("deliveries_held"), std::string::npos) << text;
}

// Locking leases (nack, extend, give-back) and looking them up (the
// Dispatcher's check of leases settled on another replica).
TEST_F(PlanTest, LeasesAreLockedOrLookedUpByOneProbeOfEachKey) {
  for (const char* statement : {sql::kLockLeases, sql::kHeldLeases}) {
    auto plan = Plan("text, int8[], int4[], int8[]", statement,
                     absl::StrCat("'q', ", lease_keys_));
    ExpectBounded(plan);
    const std::string text = absl::StrJoin(plan, "\n");
    // All 100 keys matched, each by one index probe that finds its row.
    EXPECT_NE(text.find("rows=100 loops=1"), std::string::npos) << text;
    static const std::regex kProbe(
        R"(Index Scan using deliveries_pkey on deliveries e \(actual time=\S+ )"
        R"(rows=1 loops=100\))");
    EXPECT_TRUE(std::regex_search(text, kProbe)) << text;
  }
}

TEST_F(PlanTest, AckProbesEachKeyOnceAndDeletesByCtid) {
  auto plan = Plan("text, int8[], int4[], int8[]", sql::kAck, absl::StrCat("'q', ", lease_keys_));
  ExpectBounded(plan);
  const std::string text = absl::StrJoin(plan, "\n");
  static const std::regex kProbe(
      R"(Index Scan using deliveries_pkey on deliveries e \(actual time=\S+ )"
      R"(rows=1 loops=100\))");
  EXPECT_TRUE(std::regex_search(text, kProbe)) << text;
  EXPECT_TRUE(std::regex_search(
      text, std::regex(R"(Tid Scan on deliveries d \(actual time=\S+ rows=1 loops=100\))")))
      << text;
  // Every key named its row.
  EXPECT_EQ(RowsTaken("text, int8[], int4[], int8[]", sql::kAck,
                      absl::StrCat("'q', ", lease_keys_)),
            100);
}

TEST_F(PlanTest, NackAndExtendChangeTheLockedRowsByCtid) {
  for (const auto& [types, statement] :
       std::vector<std::pair<std::string, const char*>>{{"tid[], text, text", sql::kNack},
                                                        {"tid[], int8", sql::kExtendLease},
                                                        {"tid[], text", sql::kReleaseLeases}}) {
    std::string args = lease_rows_;
    if (statement == sql::kNack) args += ", 'q', 'why'";
    if (statement == sql::kExtendLease) args += ", 60000";
    if (statement == sql::kReleaseLeases) args += ", 'q'";
    auto plan = Plan(types, statement, args);
    ExpectBounded(plan);
    const std::string text = absl::StrJoin(plan, "\n");
    EXPECT_TRUE(std::regex_search(
        text, std::regex(R"(Tid Scan on deliveries d \(actual time=\S+ rows=1 loops=100\))")))
        << text;
  }
}

// Without offers, and with a stream of subscription q offering its credit
// (the delivery to q is inserted leased; the one to `other` ready).
TEST_F(PlanTest, PublishFansOutByKey) {
  constexpr char kTypes[] =
      "text[], int8[], int8[], int4[], text[], text[], text[], int8[], bytea[], bytea[], "
      "text[], text[], int8[], int8[], bool, text[], int8[], int8[], int8[], int8[], bool[]";
  constexpr char kMessage[] =
      "'{q}', '{NULL}', '{NULL}', '{0}', '{NULL}', '{NULL}', '{NULL}', '{5}', "
      "ARRAY[sha256('hello'::bytea)], ARRAY['hello'::bytea], '{}', '{}', '{0}', '{NULL}', false";
  ExpectBounded(Plan(kTypes, sql::kInsertMessages,
                     absl::StrCat(kMessage, ", '{}', '{}', '{}', '{}', '{}', '{}'").c_str()));
  auto offered = Plan(kTypes, sql::kInsertMessages,
                      absl::StrCat(kMessage, ", '{q}', '{7}', '{30000}', '{100}', '{1000}', "
                                             "'{false}'").c_str());
  ExpectBounded(offered);
  const std::string text = absl::StrJoin(offered, "\n");
  EXPECT_NE(text.find("Insert on deliveries"), std::string::npos) << text;
  // A message with an ordering key: whether it heads its key is one probe.
  auto keyed = Plan(kTypes, sql::kInsertMessages,
                    "'{q}', '{NULL}', '{NULL}', '{0}', '{NULL}', '{k}', '{NULL}', '{5}', "
                    "ARRAY[sha256('hello'::bytea)], ARRAY['hello'::bytea], '{}', '{}', '{0}', "
                    "'{NULL}', false, '{q}', '{7}', '{30000}', '{100}', '{1000}', '{false}'");
  ExpectBounded(keyed);
  const std::string keyed_text = absl::StrJoin(keyed, "\n");
  EXPECT_NE(keyed_text.find("deliveries_by_ordering_key"), std::string::npos) << keyed_text;
}

TEST_F(PlanTest, DeadLetteringReadsOnlyDueRows) {
  auto plan = Plan("text, int4", sql::kTakeExhausted, "'q', 100");
  ExpectBounded(plan);
}

// The reaper's delete of expired messages, read from pgbus.reap_expired
// (so the test follows the migration) and run as the function runs it: as
// the owner, with its plan settings. 300 of 55,500 messages have expired.
TEST_F(PlanTest, ReapReadsOnlyExpiredRows) {
  const std::string found = StatementOf("reap_expired", R"(DELETE FROM pgbus\.messages m[^;]*)");
  ASSERT_FALSE(found.empty());
  const std::string statement = std::regex_replace(found, std::regex(R"(\bbatch\b)"), "$$1");
  const std::string expire =
      "UPDATE pgbus.messages SET expires_at = now() - interval '1 second'"
      " WHERE id IN (SELECT id FROM pgbus.messages ORDER BY id LIMIT 300)";
  auto plan = Plan("int4", statement.c_str(), "1000", 6, expire, owner_dsn_);
  ExpectBounded(plan);
  const std::string text = absl::StrJoin(plan, "\n");
  EXPECT_NE(text.find("messages_expiry"), std::string::npos) << text;
  EXPECT_NE(text.find("Delete on messages m (actual time"), std::string::npos) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(Tid Scan on messages m \(actual time=\S+ rows=300 )")))
      << text;
  // The deliveries and payloads go by one statement-level cascade, not by a
  // referential trigger per reaped message (migrations 0013, 0019).
  EXPECT_EQ(text.find("Trigger for constraint"), std::string::npos) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(Trigger cascade_delete: time=\S+ calls=1\b)")))
      << text;
}

// The cascade from deleted messages to their deliveries, read from
// pgbus.cascade_delete (so the test follows the migrations) and run with a
// CTE standing in for the trigger's transition table, as pgbusd's role in
// its transaction settings: each delivery is one probe of the whole primary
// key (tenant, subscription, message). Planned as a join, the probe used
// (tenant, message) alone and walked every subscription's part of the key:
// reaping 20,000 messages took 13 s instead of 0.2.
TEST_F(PlanTest, CascadeProbesEachDeliveryByItsWholeKey) {
  const std::string found =
      StatementOf("cascade_delete", R"(DELETE FROM pgbus\.deliveries d\s+WHERE d\.ctid = ANY[^;]*)");
  ASSERT_FALSE(found.empty());
  pqxx::connection conn(app_dsn_);
  pqxx::work w(conn);
  w.exec_params(sql::kSetTenant, kTenant);
  std::vector<std::string> plan;
  for (const auto& row :
       w.exec("EXPLAIN (ANALYZE, COSTS OFF) WITH gone AS MATERIALIZED ("
              "SELECT * FROM pgbus.messages ORDER BY id LIMIT 300) " + found)) {
    plan.push_back(row[0].as<std::string>());
  }
  ExpectBounded(plan);
  const std::string text = absl::StrJoin(plan, "\n");
  // 300 messages, two subscriptions of their topic: 600 probes.
  static const std::regex kProbe(
      R"(Index Scan using deliveries_pkey on deliveries e \(actual time=\S+ rows=\d+ loops=600\))"
      R"(\s+Index Cond: \(\(tenant_id = g\.tenant_id\) AND \(subscription = s\.name\))"
      R"( AND \(message_id = g\.id\)\))");
  EXPECT_TRUE(std::regex_search(text, kProbe)) << text;
  EXPECT_NE(text.find("Tid Scan on deliveries d"), std::string::npos) << text;
}

// The backlog metrics (migration 0022) count a subscription's deliveries
// but read one message for the oldest age, not one per delivery (0017 did:
// 5.2 s on 907,000 deliveries, 1.1 s without). Measured by the tuples that
// messages_pkey returned to index scans, from the statistics Postgres
// keeps: the function runs inside Postgres, out of reach of EXPLAIN.
TEST_F(PlanTest, BacklogMetricsReadOneMessagePerSubscription) {
  pqxx::connection conn(app_dsn_), conn2(app_dsn_);
  pqxx::nontransaction n(conn);
  auto fetched = [&] {
    n.exec("SELECT pg_stat_force_next_flush()");  // this session's counts
    return n.exec1("SELECT idx_tup_fetch FROM pg_stat_user_indexes"
                   " WHERE schemaname = 'pgbus' AND indexrelname = 'messages_pkey'")[0]
        .as<int64_t>();
  };
  auto seq_scans = [&] {  // of deliveries; flushed by fetched()
    return n.exec1("SELECT seq_scan FROM pg_stat_user_tables"
                   " WHERE schemaname = 'pgbus' AND relname = 'deliveries'")[0]
        .as<int64_t>();
  };
  const int64_t before = fetched(), scans_before = seq_scans();
  pqxx::result rows = n.exec(
      "SELECT subscription, ready, in_flight, oldest_unacked_seconds"
      " FROM pgbus.subscription_backlog(10000) WHERE subscription IN ('other', 'q')"
      " ORDER BY subscription");
  const int64_t read = fetched() - before;
  // Each subscription's deliveries by their index: planned on the stale
  // statistics without enable_seqscan off, it scanned all of them once per
  // subscription of the tenant (2,002 scans, 24 s).
  EXPECT_EQ(seq_scans() - scans_before, 0);
  ASSERT_EQ(rows.size(), 2);
  EXPECT_EQ(rows[0][0].as<std::string>(), "other");
  EXPECT_EQ(rows[0][1].as<int64_t>(), 10);
  EXPECT_EQ(rows[1][0].as<std::string>(), "q");
  EXPECT_EQ(rows[1][1].as<int64_t>(), kBacklog + kDue);  // a run-out lease is ready again
  EXPECT_EQ(rows[1][2].as<int64_t>(), kInFlight);
  // The age of q's oldest message (all of its backlog was published by one
  // statement, at one time).
  pqxx::work w(conn2);
  w.exec_params(sql::kSetTenant, kTenant);
  const double age = w.exec1(
      "SELECT extract(epoch from now() - min(m.published_at))::float8 FROM pgbus.messages m"
      " JOIN pgbus.deliveries d ON d.message_id = m.id AND d.subscription = 'q'")[0].as<double>();
  EXPECT_NEAR(rows[1][3].as<double>(), age, 1.0);
  EXPECT_GT(age, 0);
  // One message per subscription with deliveries: the oldest of each.
  EXPECT_LE(read, 2) << "messages read by index for " << kBacklog + kInFlight + kDue + 10
                     << " deliveries";
}

// Every statement that takes LIMIT n rows with SKIP LOCKED takes exactly n
// when more are there (as `IN (subquery)` the subquery may run more than
// once and take more), with its generic plan.
TEST_F(PlanTest, EveryLimitTakesExactlyItsCount) {
  EXPECT_EQ(RowsTaken("text, int4", sql::kReleaseDue, "'q', 3"), 3);
  EXPECT_EQ(RowsTaken("text, int4, int8, int8, int8, bool", sql::kClaim,
                      "'q', 7, 1000000, 9, 30000, true"),
            7);
  // Only as many as fit the byte budget (5 bytes each).
  EXPECT_EQ(RowsTaken("text, int4, int8, int8, int8, bool", sql::kClaim,
                      "'q', 7, 12, 9, 30000, false"),
            2);
  const std::string exhaust =
      "UPDATE pgbus.deliveries SET attempts = 5"
      " WHERE subscription = 'q' AND visible_at <= now()";
  EXPECT_EQ(RowsTaken("text, int4", sql::kTakeExhausted, "'q', 4", exhaust), 4);
  const std::string expire =
      "UPDATE pgbus.messages SET expires_at = now() - interval '1 second'"
      " WHERE id IN (SELECT id FROM pgbus.messages ORDER BY id LIMIT 20)";
  {
    pqxx::connection conn(app_dsn_);
    pqxx::work w(conn);
    w.exec_params(sql::kSetTenant, kTenant);
    w.exec(expire);
    EXPECT_EQ(w.exec1("SELECT pgbus.reap_expired(3)")[0].as<int>(), 3);
    w.abort();
  }
}

// A fresh cluster: pgbusd's sessions prepare and run their statements
// while the tables are empty, so the generic plans they cache are made for
// empty tables; then the tables grow past any size those plans suit, with
// autovacuum off (on a real cluster it comes up to a minute later). The
// plans made on the empty tables must already suit the backlog (they are
// in use until the reaper's next pass, up to reap_interval_ms: at 10,000
// msg/s the claims took 86-145 ms each in that second when they found
// their rows by an index scan of the whole tenant filtered by ctid, and
// joined each to the messages by rescanning the tenant's messages; acks,
// nacks and the release of due rows did the first, 36-54 ms each with
// 60,000 queued). After the reaper's refresh of statistics the same
// session replans, and its plans must be those of a backlog too.
TEST(FreshClusterPlanTest, PlansCachedOnEmptyTablesFollowGrowth) {
  const std::string owner_dsn = testing::CreateEmptyDatabase(
      absl::StrCat("pgbus_fresh_plans_", getpid()), "pgbus_owner");
  const std::string app_dsn =
      absl::StrCat(owner_dsn.substr(0, owner_dsn.rfind("user=")), "user=pgbus_app");
  auto applied = store::postgres::Migrate(owner_dsn, "pgbus_app");
  ASSERT_TRUE(applied.ok()) << applied.status();
  pqxx::connection owner(owner_dsn);
  {
    pqxx::work w(owner);
    w.exec("ALTER TABLE pgbus.messages SET (autovacuum_enabled = false);"
           "ALTER TABLE pgbus.deliveries SET (autovacuum_enabled = false)");
    w.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", kTenant);
    w.exec("INSERT INTO pgbus.tenants (tenant_id) VALUES ('plans');"
           "INSERT INTO pgbus.topics (tenant_id, name, retention, dedup_window)"
           "  VALUES ('plans', 'q', '1 day', '1 day'), ('plans', 'dlq', '1 day', '1 day');"
           "INSERT INTO pgbus.subscriptions (tenant_id, name, topic, ack_deadline,"
           "  min_backoff, max_backoff, max_delivery_attempts, dead_letter_topic)"
           "  VALUES ('plans', 'q', 'q', '30s', '0', '60s', 5, 'dlq')");
    w.commit();
  }
  // pgbusd's statements that find rows in deliveries (and their messages),
  // each with its arguments on the empty tables and after the growth ($K:
  // the keys of 100 leased rows, $R: their ctids).
  struct Statement {
    const char* name;
    std::string types;
    const char* sql;
    std::string empty_args, args;
  };
  const std::vector<Statement> statements = {
      {"claim", "text, int4, int8, int8, int8, bool", sql::kClaim,
       "'q', 100, 1000000, 9, 30000, true", "'q', 100, 1000000, 9, 30000, true"},
      {"ack", "text, int8[], int4[], int8[]", sql::kAck, "'q', '{1}', '{1}', '{1}'", "'q', $K"},
      {"nack", "tid[], text, text", sql::kNack, "'{\"(0,1)\"}', 'q', ''", "$R, 'q', 'why'"},
      {"extend", "tid[], int8", sql::kExtendLease, "'{\"(0,1)\"}', 1000", "$R, 60000"},
      {"release_leases", "tid[], text", sql::kReleaseLeases, "'{\"(0,1)\"}', 'q'", "$R, 'q'"},
      {"release_due", "text, int4", sql::kReleaseDue, "'q', 100", "'q', 100"},
      {"take_exhausted", "text, int4", sql::kTakeExhausted, "'q', 100", "'q', 100"},
  };
  // pgbusd's session: the statements prepared and run on the empty tables.
  pqxx::connection app(app_dsn);
  for (const Statement& s : statements) {
    {
      pqxx::nontransaction n(app);
      n.exec(absl::StrCat("PREPARE ", s.name, "(", s.types, ") AS ", s.sql));
    }
    for (int i = 0; i < 6; ++i) {
      pqxx::work w(app);
      w.exec_params(sql::kSetTenant, kTenant);
      w.exec(absl::StrCat("EXECUTE ", s.name, "(", s.empty_args, ")"));
      w.abort();
    }
  }
  // The growth: 60,000 messages queued in q; the oldest 5,500 leased, 500
  // of those with their lease run out, 100 of those exhausted.
  std::string keys, rows;
  {
    pqxx::work w(owner);
    w.exec_params("SELECT set_config('pgbus.tenant_id', $1, true), "
                  "set_config('enable_nestloop', 'off', true)", kTenant);
    w.exec("WITH m AS (INSERT INTO pgbus.messages (tenant_id, topic, expires_at, size, sha256,"
           "  payload) SELECT 'plans', 'q', now() + interval '1 day', 5, sha256('hello'::bytea),"
           "  'hello'::bytea FROM generate_series(1, 60000) RETURNING tenant_id, id, expires_at)"
           "INSERT INTO pgbus.deliveries (tenant_id, subscription, message_id, priority, size,"
           "  visible_at, expires_at) SELECT tenant_id, 'q', id, 0, 5, NULL, expires_at FROM m");
    for (const auto& [count, change] : std::vector<std::pair<int, std::string>>{
             {5500, "attempts = 1, lease = 7, visible_at = now() + interval '10 minutes'"},
             {500, "visible_at = now() - interval '1 minute'"},
             {100, "attempts = 5"}}) {
      w.exec(absl::StrCat("UPDATE pgbus.deliveries SET ", change,
                          " WHERE subscription = 'q' AND message_id IN (SELECT message_id"
                          " FROM pgbus.deliveries WHERE subscription = 'q'"
                          " ORDER BY message_id LIMIT ", count, ")"));
    }
    pqxx::row leased = w.exec1(
        "SELECT array_agg(message_id)::text, array_agg(attempts)::text, array_agg(lease)::text,"
        "  array_agg(ctid)::text"
        " FROM (SELECT *, ctid FROM pgbus.deliveries WHERE subscription = 'q'"
        "       AND visible_at > now() ORDER BY message_id DESC LIMIT 100) s");
    keys = absl::StrCat("'", leased[0].as<std::string>(), "', '", leased[1].as<std::string>(),
                        "', '", leased[2].as<std::string>(), "'");
    rows = absl::StrCat("'", leased[3].as<std::string>(), "'");
    w.commit();
  }
  auto expect_backlog_plans = [&](const std::string& when) {
    SCOPED_TRACE(when);
    for (const Statement& s : statements) {
      std::string args = std::regex_replace(s.args, std::regex(R"(\$K)"), keys);
      args = std::regex_replace(args, std::regex(R"(\$R)"), rows);
      pqxx::work w(app);
      w.exec_params(sql::kSetTenant, kTenant);
      std::vector<std::string> plan;
      for (const auto& row : w.exec(absl::StrCat("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE ",
                                                 s.name, "(", args, ")"))) {
        plan.push_back(row[0].as<std::string>());
      }
      w.abort();
      SCOPED_TRACE(s.name);
      PlanTest::ExpectBounded(plan);
      const std::string text = absl::StrJoin(plan, "\n");
      // Each changed its 100 rows, one TID scan each.
      EXPECT_TRUE(std::regex_search(
          text, std::regex(R"(Tid Scan on deliveries \w+ \(actual time=\S+ rows=1 loops=100\))")))
          << text;
      if (s.sql == sql::kClaim || s.sql == sql::kTakeExhausted) {
        EXPECT_NE(text.find("Index Scan using messages_pkey"), std::string::npos) << text;
      }
    }
  };
  expect_backlog_plans("the plans cached on the empty tables");
  // What the reaper does each pass (as pgbusd's role).
  {
    pqxx::nontransaction n(app);
    EXPECT_GE(n.exec1(sql::kRefreshStatistics)[0].as<int>(), 2);  // messages, deliveries
  }
  expect_backlog_plans("replanned after the refresh of statistics");
}

}  // namespace
}  // namespace pgbus
