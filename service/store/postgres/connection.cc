#include "service/store/postgres/connection.h"

#include <endian.h>

#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "service/common/status_macros.h"
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
    conn->prepare("pgbus_set_tenant", sql::kSetTenant);
  } catch (const pqxx::broken_connection& e) {
    // libpq's text can name the host and user; keep the reason only.
    return absl::UnavailableError(
        absl::StrCat("cannot connect to Postgres: ", FirstLine(e.what())));
  } catch (const std::exception& e) {
    return StatusFromException(e, nullptr);
  }
  return conn;
}

absl::Status Connection::PrepareRaw(const char* name, const char* sql,
                                    const std::vector<Oid>& types) {
  if (raw_prepared_.count(name)) return absl::OkStatus();
  Result res(PQprepare(raw(), name, sql, static_cast<int>(types.size()), types.data()),
             &PQclear);
  if (PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
    const char* state = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
    if (PQstatus(raw()) != CONNECTION_OK) broken = true;
    return StatusFromSqlState(state ? state : "",
                              PQresultErrorMessage(res.get()));
  }
  raw_prepared_.insert(name);
  return absl::OkStatus();
}

namespace {

// A statement's parameters as libpq takes them (pointers into `params`).
struct LibpqParams {
  explicit LibpqParams(const std::vector<Param>& params) {
    values.reserve(params.size());
    lengths.reserve(params.size());
    formats.reserve(params.size());
    for (const Param& p : params) {
      values.push_back(p.data);
      lengths.push_back(p.length);
      formats.push_back(p.format);
    }
  }
  int count() const { return static_cast<int>(values.size()); }
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
};

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

}  // namespace

absl::StatusOr<Result> ExecRaw(Connection& conn, const char* name,
                               const std::vector<Param>& params) {
  LibpqParams p(params);
  Result res(PQexecPrepared(conn.raw(), name, p.count(), p.values.data(), p.lengths.data(),
                            p.formats.data(), /*resultFormat=*/1),
             &PQclear);
  ExecStatusType st = PQresultStatus(res.get());
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return res;
  return StatusFromResult(conn, res.get());
}

absl::StatusOr<std::vector<Result>> ExecPipelined(Connection& conn,
                                                  const std::vector<Statement>& statements) {
  PGconn* raw = conn.raw();
  // Whatever goes wrong below leaves the session in an unknown state of the
  // protocol: the pool drops it.
  auto lost = [&conn](absl::string_view what) {
    conn.broken = true;
    return absl::UnavailableError(
        absl::StrCat("lost the connection to Postgres (", what, ")"));
  };
  if (PQenterPipelineMode(raw) != 1) return lost("cannot enter pipeline mode");
  for (const Statement& s : statements) {
    LibpqParams p(s.params);
    if (PQsendQueryPrepared(raw, s.name, p.count(), p.values.data(), p.lengths.data(),
                            p.formats.data(), /*resultFormat=*/1) != 1) {
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

int64_t BinaryRow::Int8(int col) const {
  uint64_t v;
  std::memcpy(&v, PQgetvalue(r_, row_, col), 8);
  return static_cast<int64_t>(be64toh(v));
}

int32_t BinaryRow::Int4(int col) const {
  uint32_t v;
  std::memcpy(&v, PQgetvalue(r_, row_, col), 4);
  return static_cast<int32_t>(be32toh(v));
}

bool BinaryRow::Bool(int col) const { return PQgetvalue(r_, row_, col)[0] != 0; }

std::string BinaryRow::Bytes(int col) const {
  return std::string(PQgetvalue(r_, row_, col), PQgetlength(r_, row_, col));
}

absl::Time BinaryRow::Timestamp(int col) const {
  return absl::FromUnixMicros(Int8(col) + kPgEpochUnixMicros);
}

std::vector<std::string> BinaryRow::TextArray(int col) const {
  // ndim, has-null flag, element type, then per dimension (size, lower
  // bound), then per element (length or -1, bytes).
  const char* p = PQgetvalue(r_, row_, col);
  auto read4 = [&p]() {
    uint32_t v;
    std::memcpy(&v, p, 4);
    p += 4;
    return static_cast<int32_t>(be32toh(v));
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
  if (!conn.ok()) {
    absl::MutexLock lock(&mu_);
    --open_;
    return conn.status();
  }
  return Lease(this, *std::move(conn));
}

void ConnectionPool::Release(std::unique_ptr<Connection> conn) {
  absl::MutexLock lock(&mu_);
  if (conn->broken || !conn->is_open()) {
    --open_;
    return;  // closed by its destructor
  }
  idle_.push_back(std::move(conn));
}

namespace {

// Runs a simple (possibly multi-statement) query; returns the last result's
// command tag.
absl::StatusOr<std::string> ExecSimple(Connection& conn, const std::string& sql) {
  Result res(PQexec(conn.raw(), sql.c_str()), &PQclear);
  ExecStatusType status = PQresultStatus(res.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    if (PQstatus(conn.raw()) != CONNECTION_OK) {
      conn.broken = true;
      return absl::UnavailableError("lost the connection to Postgres");
    }
    const char* state = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
    return StatusFromSqlState(state ? state : "", PQresultErrorMessage(res.get()));
  }
  return std::string(PQcmdStatus(res.get()));
}

}  // namespace

TenantTransaction::~TenantTransaction() {
  if (!open_) return;
  if (!ExecSimple(conn_, "ROLLBACK").ok()) conn_.broken = true;
}

absl::Status TenantTransaction::Begin(const std::string& tenant, bool async_commit) {
  char* literal = PQescapeLiteral(conn_.raw(), tenant.data(), tenant.size());
  if (literal == nullptr) {
    conn_.broken = true;
    return absl::InternalError(PQerrorMessage(conn_.raw()));
  }
  std::string sql = absl::StrCat(
      "BEGIN; ", async_commit ? sql::kSetTenantAsyncCommitLiteral : sql::kSetTenantLiteral,
      literal, ", true)");
  PQfreemem(literal);
  open_ = true;  // a failed BEGIN leaves nothing open; ROLLBACK then only warns
  return ExecSimple(conn_, sql).status();
}

absl::Status TenantTransaction::Start(const std::string& tenant, bool async_commit) {
  const char* name = async_commit ? sql::kSetTenantAsyncCommitName : sql::kSetTenantName;
  RETURN_IF_ERROR(conn_.PrepareRaw(sql::kBeginName, sql::kBegin, {}));
  RETURN_IF_ERROR(conn_.PrepareRaw(
      name, async_commit ? sql::kSetTenantAsyncCommit : sql::kSetTenant, {kText}));
  tenant_ = tenant;
  queued_.push_back(Statement{sql::kBeginName, {}});
  queued_.push_back(Statement{name, {Param::Text(tenant_)}});
  open_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Result>> TenantTransaction::Exec(std::vector<Statement> statements,
                                                            bool commit) {
  if (commit) RETURN_IF_ERROR(conn_.PrepareRaw(sql::kCommitName, sql::kCommit, {}));
  std::vector<Statement> all = std::move(queued_);
  queued_.clear();
  const size_t first = all.size();
  for (Statement& s : statements) all.push_back(std::move(s));
  if (commit) all.push_back(Statement{sql::kCommitName, {}});
  // On an error the transaction stays open (failed, or ended by a failed
  // COMMIT): the destructor rolls it back, which at worst only warns.
  ASSIGN_OR_RETURN(std::vector<Result> results, ExecPipelined(conn_, all));
  if (commit) {
    open_ = false;
    if (std::string(PQcmdStatus(results.back().get())) != "COMMIT") {
      return absl::AbortedError("the transaction failed and was rolled back; retry");
    }
    results.pop_back();
  }
  results.erase(results.begin(), results.begin() + static_cast<std::ptrdiff_t>(first));
  return results;
}

absl::Status TenantTransaction::Commit() {
  if (!queued_.empty()) return Exec({}, /*commit=*/true).status();
  open_ = false;
  ASSIGN_OR_RETURN(std::string tag, ExecSimple(conn_, "COMMIT"));
  if (tag != "COMMIT") {
    return absl::AbortedError("the transaction failed and was rolled back; retry");
  }
  return absl::OkStatus();
}

absl::Status InTenantTransaction(
    ConnectionPool& pool, const std::string& tenant,
    const std::function<absl::Status(pqxx::transaction_base&, Connection&)>& fn,
    bool async_commit) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool.Acquire());
  TenantTransaction tx(*conn);  // rolls back unless committed, before the lease ends
  RETURN_IF_ERROR(tx.Begin(tenant, async_commit));
  try {
    pqxx::nontransaction txn(*conn);
    RETURN_IF_ERROR(fn(txn, *conn));
  } catch (const std::exception& e) {
    return StatusFromException(e, &*conn);
  }
  return tx.Commit();
}

}  // namespace pgbus::store::postgres
