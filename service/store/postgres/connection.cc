#include "service/store/postgres/connection.h"

#include <endian.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"
#include "service/obs/metrics.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {
namespace {

// Microseconds from the Unix epoch to Postgres's epoch, 2000-01-01.
constexpr int64_t kPgEpochUnixMicros = 946684800LL * 1000000;

// First line of a server message: the DETAIL/CONTEXT lines below it can
// quote row values.
std::string FirstLine(absl::string_view message) {
  std::string line(message.substr(0, message.find('\n')));
  if (absl::StartsWith(line, "ERROR:  ")) line = line.substr(8);
  return line;
}

}  // namespace

CapturingPolicy::handle CapturingPolicy::do_startconnect(handle orig) {
  raw_ = pqxx::connect_direct::do_startconnect(orig);
  return raw_;
}
CapturingPolicy::handle CapturingPolicy::do_completeconnect(handle orig) {
  raw_ = pqxx::connect_direct::do_completeconnect(orig);
  return raw_;
}
CapturingPolicy::handle CapturingPolicy::do_dropconnect(handle orig) noexcept {
  raw_ = pqxx::connect_direct::do_dropconnect(orig);
  return raw_;
}
CapturingPolicy::handle CapturingPolicy::do_disconnect(handle orig) noexcept {
  raw_ = pqxx::connect_direct::do_disconnect(orig);
  return raw_;
}

Connection::Connection(const std::string& opts)
    : pqxx::connection_base(policy_), options_(opts), policy_(options_) {
  init();
}

Connection::~Connection() noexcept { close(); }

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const std::string& dsn,
                                                             int statement_timeout_ms) {
  std::unique_ptr<Connection> conn;
  try {
    conn.reset(new Connection(dsn));
    pqxx::nontransaction setup(*conn);
    setup.exec(absl::StrCat("SET statement_timeout = ", statement_timeout_ms));
    setup.exec("SET idle_in_transaction_session_timeout = '60s'");
    setup.exec("SET application_name = 'pgbusd'");
    // pgbusd's statements are short and planned for index access; JIT only
    // pays off for long scans. A plan costed over jit_above_cost (a generic
    // claim plan on a large backlog is, at 428,000) would be compiled on
    // every execution: 30-80 ms instead of 0.5 ms.
    setup.exec("SET jit = off");
    conn->backend_pid = conn->backendpid();
  } catch (const pqxx::broken_connection& e) {
    // libpq's text can name the host and user; keep the reason only.
    return absl::UnavailableError(
        absl::StrCat("cannot connect to Postgres: ", FirstLine(e.what())));
  } catch (const std::exception& e) {
    return StatusFromException(e, nullptr);
  }
  return conn;
}

absl::StatusOr<std::string> Connection::Prepared(const char* sql,
                                                 const std::vector<Oid>& types) {
  auto key = std::make_pair(sql, types);
  if (auto it = prepared_.find(key); it != prepared_.end()) return it->second;
  std::string name = absl::StrCat("pgbus_", prepared_.size() + 1);
  Result res(PQprepare(raw(), name.c_str(), sql, static_cast<int>(types.size()), types.data()),
             &PQclear);
  if (PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
    const char* state = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
    if (PQstatus(raw()) != CONNECTION_OK) broken = true;
    return StatusFromSqlState(state ? state : "", PQresultErrorMessage(res.get()));
  }
  prepared_.emplace(std::move(key), name);
  return name;
}

namespace {

// The status of a failed statement's result; marks `conn` broken when the
// session is gone.
absl::Status StatusFromResult(Connection& conn, const PGresult* res) {
  if (PQstatus(conn.raw()) != CONNECTION_OK) {
    conn.broken = true;
    return absl::UnavailableError("lost the connection to Postgres");
  }
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const char* msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  return StatusFromSqlState(state ? state : "", msg ? msg : PQresultErrorMessage(res));
}

// A prepared statement and its parameters, as libpq takes them (pointers
// into the Values, which outlive the call).
struct Prepared {
  Prepared(std::string statement, const std::vector<Value>& params) : name(std::move(statement)) {
    for (const Value& v : params) {
      values.push_back(v.bytes ? v.bytes->data() : nullptr);
      lengths.push_back(v.bytes ? static_cast<int>(v.bytes->size()) : 0);
      formats.push_back(1);
    }
  }
  int count() const { return static_cast<int>(values.size()); }
  std::string name;
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
};

// Runs `statements` in order in one round trip (libpq's pipeline mode) and
// returns their binary results. The first error is returned and the
// statements after it are skipped by Postgres; inside a transaction block
// that leaves the transaction failed, for the caller to roll back.
// Postgres may start sending a result while later statements are still
// being written, and this connection does not read meanwhile: only the last
// statements of a pipeline may have large results.
absl::StatusOr<std::vector<Result>> ExecPipelined(Connection& conn,
                                                  const std::vector<Prepared>& statements) {
  PGconn* raw = conn.raw();
  // Whatever goes wrong below leaves the session in an unknown state of the
  // protocol: the pool drops it.
  auto lost = [&conn](absl::string_view what) {
    conn.broken = true;
    return absl::UnavailableError(
        absl::StrCat("lost the connection to Postgres (", what, ")"));
  };
  if (PQenterPipelineMode(raw) != 1) return lost("cannot enter pipeline mode");
  for (const Prepared& s : statements) {
    if (PQsendQueryPrepared(raw, s.name.c_str(), s.count(), s.values.data(), s.lengths.data(),
                            s.formats.data(), /*resultFormat=*/1) != 1) {
      return lost("send failed");
    }
  }
  if (PQpipelineSync(raw) != 1) return lost("sync failed");
  std::vector<Result> out;
  out.reserve(statements.size());
  absl::Status first_error;
  for (size_t i = 0; i < statements.size(); ++i) {
    Result res(PQgetResult(raw), &PQclear);
    if (res == nullptr) return lost("no result");
    ExecStatusType st = PQresultStatus(res.get());
    if (st == PGRES_FATAL_ERROR && first_error.ok()) {
      first_error = StatusFromResult(conn, res.get());
      if (conn.broken) return first_error;
    }
    // Each statement's results end with a null (an aborted one has
    // PGRES_PIPELINE_ABORTED: an earlier statement failed).
    Result end(PQgetResult(raw), &PQclear);
    if (end != nullptr) return lost("unexpected result");
    out.push_back(std::move(res));
  }
  Result sync(PQgetResult(raw), &PQclear);
  if (sync == nullptr || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) {
    return lost("no pipeline sync");
  }
  if (PQexitPipelineMode(raw) != 1) return lost("cannot leave pipeline mode");
  if (!first_error.ok()) return first_error;
  return out;
}

int32_t ReadInt4(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return static_cast<int32_t>(be32toh(v));
}

int64_t ReadInt8(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return static_cast<int64_t>(be64toh(v));
}

}  // namespace

const char* RowReader::NextOf(std::initializer_list<Oid> types) {
  const int col = col_++;
  const Oid type = PQftype(r_, col);
  for (Oid t : types) {
    if (t == type) return PQgetvalue(r_, row_, col);
  }
  obs::Error("statement_reader_mismatch",
             {{"column", std::to_string(col)},
              {"name", PQfname(r_, col) ? PQfname(r_, col) : "?"},
              {"type", std::to_string(type)},
              {"expected", std::to_string(*types.begin())}});
  std::abort();  // a bug in pgbusd (see RowReader)
}

const char* RowReader::Next(Oid type, int bytes) {
  const char* p = NextOf({type});
  if (bytes >= 0 && PQgetlength(r_, row_, col_ - 1) != bytes) {
    obs::Error("statement_reader_mismatch", {{"column", std::to_string(col_ - 1)}});
    std::abort();
  }
  return p;
}

int64_t RowReader::Int8() { return ReadInt8(Next(kInt8, 8)); }
int32_t RowReader::Int4() { return ReadInt4(Next(kInt4, 4)); }
bool RowReader::Bool() { return Next(kBool, 1)[0] != 0; }

double RowReader::Float8() {
  const int64_t bits = ReadInt8(Next(kFloat8, 8));
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}

std::string RowReader::Text() {
  const char* p = NextOf({kText, kVarchar});
  return std::string(p, PQgetlength(r_, row_, col_ - 1));
}

std::string RowReader::Bytes() { return std::string(BytesView()); }

absl::string_view RowReader::BytesView() {
  const char* p = Next(kBytea, -1);
  return absl::string_view(p, PQgetlength(r_, row_, col_ - 1));
}

absl::Time RowReader::Timestamp() {
  return absl::FromUnixMicros(ReadInt8(Next(kTimestamptz, 8)) + kPgEpochUnixMicros);
}

std::string RowReader::RowId() {
  // Block number (4 bytes) and line pointer (2 bytes).
  return std::string(Next(kTid, 6), 6);
}

std::vector<std::string> RowReader::TextArray() {
  // ndim, has-null flag, element type, then per dimension (size, lower
  // bound), then per element (length or -1, bytes).
  const char* p = Next(kTextArray, -1);
  auto read4 = [&p]() {
    int32_t v = ReadInt4(p);
    p += 4;
    return v;
  };
  std::vector<std::string> out;
  int32_t ndim = read4();
  read4();  // has nulls
  read4();  // element oid
  if (ndim == 0) return out;
  int32_t n = read4();
  read4();  // lower bound
  out.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    int32_t len = read4();
    if (len < 0) {
      out.emplace_back();
      continue;
    }
    out.emplace_back(p, len);
    p += len;
  }
  return out;
}

Value Bind(const std::string& v) { return Value{kText, v}; }
Value Bind(std::string&& v) { return Value{kText, std::move(v)}; }
Value Bind(const char* v) { return Value{kText, std::string(v)}; }
Value Bind(int64_t v) { return Value{kInt8, EncodeInt8(v)}; }
Value Bind(int32_t v) { return Value{kInt4, EncodeInt4(v)}; }
Value Bind(bool v) { return Value{kBool, EncodeBool(v)}; }
Value Bind(Bytea v) { return Value{kBytea, std::string(v.bytes)}; }

Value Bind(ArrayBuilder&& array) {
  Oid type = 0;
  switch (array.element_type()) {
    case kBool: type = kBoolArray; break;
    case kInt4: type = kInt4Array; break;
    case kInt8: type = kInt8Array; break;
    case kText: type = kTextArray; break;
    case kBytea: type = kByteaArray; break;
    case kTid: type = kTidArray; break;
    default:
      obs::Error("array_type_unknown", {{"type", std::to_string(array.element_type())}});
      std::abort();  // a bug in pgbusd: add the array type above
  }
  return Value{type, array.Finish()};
}

std::string EncodeInt8(int64_t v) {
  uint64_t be = htobe64(static_cast<uint64_t>(v));
  return std::string(reinterpret_cast<const char*>(&be), 8);
}

std::string EncodeInt4(int32_t v) {
  uint32_t be = htobe32(static_cast<uint32_t>(v));
  return std::string(reinterpret_cast<const char*>(&be), 4);
}

std::string EncodeBool(bool v) { return std::string(1, v ? '\1' : '\0'); }

void ArrayBuilder::Add(absl::string_view binary_element) {
  elements_ += EncodeInt4(static_cast<int32_t>(binary_element.size()));
  elements_.append(binary_element.data(), binary_element.size());
  ++count_;
}

void ArrayBuilder::AddNull() {
  elements_ += EncodeInt4(-1);
  has_null_ = true;
  ++count_;
}

std::string ArrayBuilder::Finish() {
  // ndim, has-null flag, element type, then (size, lower bound) for the one
  // dimension, then the elements. An empty array has no dimensions.
  std::string header = EncodeInt4(count_ ? 1 : 0) + EncodeInt4(has_null_ ? 1 : 0) +
                       EncodeInt4(static_cast<int32_t>(element_type_));
  if (count_ == 0) return header;
  header += EncodeInt4(static_cast<int32_t>(count_)) + EncodeInt4(1);
  elements_.replace(0, kHeaderBytes, header);
  return std::move(elements_);
}

absl::Status StatusFromSqlState(const std::string& sqlstate, const std::string& message) {
  obs::CountPostgresError(sqlstate);
  std::string text = absl::StrCat(FirstLine(message), " (SQLSTATE ", sqlstate, ")");
  if (sqlstate == "23505") return absl::AlreadyExistsError(text);
  if (sqlstate == "23503") return absl::FailedPreconditionError(text);
  if (sqlstate == "40000" || sqlstate == "40001" || sqlstate == "40P01") {
    return absl::AbortedError(text);
  }
  // statement_completion_unknown: the outcome is unknown, as with a lost link.
  if (sqlstate == "40003") return absl::UnavailableError(text);
  if (sqlstate == "57014") return absl::DeadlineExceededError(text);
  if (absl::StartsWith(sqlstate, "08") || sqlstate == "57P01" || sqlstate == "57P02" ||
      sqlstate == "57P03" || sqlstate == "53300") {
    return absl::UnavailableError(text);
  }
  if (sqlstate == "54000") return absl::ResourceExhaustedError(text);
  // invalid_parameter_value: what pgbus's own SQL functions raise for a
  // caller's bad value (reject_handle). Other data exceptions come from
  // values pgbusd built itself (the API validates the caller's first), so
  // they are pgbusd's bug, not the caller's: INTERNAL.
  if (sqlstate == "22023") return absl::InvalidArgumentError(text);
  return absl::InternalError(text);
}

absl::Status StatusFromException(const std::exception& e, Connection* conn) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
    if (conn) conn->broken = true;
    return absl::UnavailableError("lost the connection to Postgres");
  }
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
    if (conn) conn->broken = true;
    return absl::UnavailableError(
        "lost the connection to Postgres during commit; the outcome is unknown");
  }
  // libpqxx 6.4 throws these for SQLSTATE class 40 and derives them from
  // pqxx::failure, not sql_error: without this a deadlock became INTERNAL
  // and cost the session. The transaction is rolled back; the session stays.
  if (dynamic_cast<const pqxx::transaction_rollback*>(&e) != nullptr) {
    const char* state = "40000";
    if (dynamic_cast<const pqxx::serialization_failure*>(&e)) state = "40001";
    if (dynamic_cast<const pqxx::deadlock_detected*>(&e)) state = "40P01";
    if (dynamic_cast<const pqxx::statement_completion_unknown*>(&e)) state = "40003";
    return StatusFromSqlState(state, e.what());
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    // libpqxx 6.4 drops the SQLSTATE in some of its exception constructors;
    // its exception class still tells the condition.
    std::string state = sql->sqlstate();
    if (state.empty()) {
      if (dynamic_cast<const pqxx::unique_violation*>(&e)) state = "23505";
      else if (dynamic_cast<const pqxx::foreign_key_violation*>(&e)) state = "23503";
      else if (dynamic_cast<const pqxx::data_exception*>(&e)) state = "22000";
      else if (dynamic_cast<const pqxx::insufficient_privilege*>(&e)) state = "42501";
      else if (absl::StrContains(sql->what(), "canceling statement due to statement timeout")) {
        state = "57014";
      }
    }
    absl::Status st = StatusFromSqlState(state, sql->what());
    if (conn && st.code() == absl::StatusCode::kUnavailable) conn->broken = true;
    return st;
  }
  if (conn) conn->broken = true;  // unknown state: do not reuse the session
  return absl::InternalError(absl::StrCat("database error: ", FirstLine(e.what())));
}

ConnectionPool::ConnectionPool(std::string dsn, int size, int statement_timeout_ms)
    : dsn_(std::move(dsn)), size_(size), statement_timeout_ms_(statement_timeout_ms) {}

ConnectionPool::~ConnectionPool() = default;

ConnectionPool::Lease::~Lease() {
  if (pool_ && conn_) pool_->Release(std::move(conn_));
}

absl::StatusOr<ConnectionPool::Lease> ConnectionPool::Acquire(absl::Duration wait) {
  {
    absl::MutexLock lock(&mu_);
    auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !idle_.empty() || open_ < size_;
    };
    if (!available()) {
      const absl::Time waiting = absl::Now();
      const bool got = mu_.AwaitWithTimeout(absl::Condition(&available), wait);
      obs::CountPoolWait(absl::Now() - waiting);
      if (!got) return absl::UnavailableError("all database connections are busy");
    }
    if (!idle_.empty()) {
      std::unique_ptr<Connection> conn = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(conn));
    }
    ++open_;  // reserve a slot; connect without holding the lock
  }
  auto conn = Connection::Open(dsn_, statement_timeout_ms_);
  absl::MutexLock lock(&mu_);
  if (!conn.ok()) {
    --open_;
    return conn.status();
  }
  backend_pids_.insert((*conn)->backend_pid);
  return Lease(this, *std::move(conn));
}

bool ConnectionPool::IsOwnBackend(int pid) {
  absl::MutexLock lock(&mu_);
  return backend_pids_.count(pid) > 0;
}

void ConnectionPool::Release(std::unique_ptr<Connection> conn) {
  absl::MutexLock lock(&mu_);
  if (conn->broken || !conn->is_open()) {
    --open_;
    backend_pids_.erase(conn->backend_pid);
    return;  // closed by its destructor
  }
  idle_.push_back(std::move(conn));
}

namespace {

// Rolls back on a session in any state of a transaction.
void RollBack(Connection& conn) {
  Result res(PQexec(conn.raw(), "ROLLBACK"), &PQclear);
  if (PQresultStatus(res.get()) != PGRES_COMMAND_OK) conn.broken = true;
}

}  // namespace

Transaction::Transaction(Connection& conn, const std::string& tenant, bool async_commit)
    : conn_(conn) {
  Queue(sql::kBegin, {}, false);
  Queue(async_commit ? sql::kSetTenantAsyncCommit : sql::kSetTenant, {Bind(tenant)}, false);
}

Transaction::Transaction(Connection& conn, NoTenant) : conn_(conn) {
  Queue(sql::kBegin, {}, false);
}

Transaction::~Transaction() {
  // After an error the transaction is failed (or its COMMIT was refused):
  // the ROLLBACK at worst only warns.
  if (open_ && begun_) RollBack(conn_);
}

size_t Transaction::Queue(const char* sql, std::vector<Value> values, bool returned) {
  queued_.push_back(Queued{sql, std::move(values), returned});
  return returned ? returned_++ : returned_;
}

absl::StatusOr<Rows> Transaction::FlushOne(bool commit, size_t index) {
  absl::StatusOr<std::vector<Rows>> rows = Flush(commit);
  if (!rows.ok()) return rows.status();
  return std::move((*rows)[index]);
}

absl::StatusOr<std::vector<Rows>> Transaction::Flush(bool commit) {
  if (!open_) return absl::FailedPreconditionError("the transaction has ended");
  if (commit) Queue(sql::kCommit, {}, false);
  std::vector<Queued> queued = std::move(queued_);
  queued_.clear();
  returned_ = 0;
  std::vector<Prepared> statements;
  statements.reserve(queued.size());
  for (const Queued& q : queued) {
    std::vector<Oid> types;
    types.reserve(q.values.size());
    for (const Value& v : q.values) types.push_back(v.type);
    absl::StatusOr<std::string> name = conn_.Prepared(q.sql, types);
    if (!name.ok()) {
      open_ = begun_;  // a transaction begun is rolled back by the destructor
      return name.status();
    }
    statements.emplace_back(*std::move(name), q.values);
  }
  begun_ = true;
  absl::StatusOr<std::vector<Result>> results = ExecPipelined(conn_, statements);
  if (!results.ok()) return results.status();
  if (commit) {
    open_ = false;
    if (std::string(PQcmdStatus(results->back().get())) != "COMMIT") {
      return absl::AbortedError("the transaction failed and was rolled back; retry");
    }
  }
  std::vector<Rows> out;
  for (size_t i = 0; i < queued.size(); ++i) {
    if (queued[i].returned) out.emplace_back(std::move((*results)[i]));
  }
  return out;
}

}  // namespace pgbus::store::postgres
