// Postgres connections for the store: a connection, a bounded pool of them,
// the transaction every statement runs in (Transaction), and the mapping of
// Postgres errors to absl::Status.
//
// libpqxx opens the session (and carries LISTEN, pg_notifications.cc, and
// the migrations' scripts, migrator.cc); every statement of sql/ goes
// through libpq's extended protocol here instead, as a named prepared
// statement with binary parameters and binary results: libpqxx 6.4 has text
// results only, so a bytea would come back hex-encoded (twice the bytes,
// then decoded), and no pipeline mode. libpqxx's own extension point, a
// connection policy, hands out the PGconn.
//
// libpqxx exceptions stop in this directory: everything here returns Status.
#ifndef PGBUS_SERVICE_STORE_POSTGRES_CONNECTION_H_
#define PGBUS_SERVICE_STORE_POSTGRES_CONNECTION_H_

#include <libpq-fe.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pgbus::store::postgres {

// Remembers the PGconn that libpqxx's connect_direct opens.
class CapturingPolicy : public pqxx::connect_direct {
 public:
  explicit CapturingPolicy(const std::string& opts) : pqxx::connect_direct(opts) {}
  handle do_startconnect(handle orig) override;
  handle do_completeconnect(handle orig) override;
  handle do_dropconnect(handle orig) noexcept override;
  handle do_disconnect(handle orig) noexcept override;
  PGconn* raw() const { return raw_; }

 private:
  PGconn* raw_ = nullptr;
};

// One Postgres session. Not thread-safe: one thread at a time (the pool
// hands it to one caller).
class Connection : public pqxx::connection_base {
 public:
  // Connects and applies the session settings every pgbusd session has.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const std::string& dsn,
                                                          int statement_timeout_ms);
  ~Connection() noexcept;

  PGconn* raw() const { return policy_.raw(); }

  // The name of `sql` prepared with parameters of `types` in this session;
  // prepares it on first use. `sql` is one of sql.h's constants (each a
  // file of sql/): prepared statements are found by its address.
  absl::StatusOr<std::string> Prepared(const char* sql, const std::vector<Oid>& types);

  // Set when an error showed the session is unusable; the pool drops it.
  bool broken = false;
  // The process ID of the session's Postgres backend (as a notification
  // names its sender), kept from the start: backendpid() says 0 once the
  // session has broken, when the pool still has to forget it.
  int backend_pid = 0;

 private:
  explicit Connection(const std::string& opts);
  std::string options_;  // must precede policy_
  CapturingPolicy policy_;
  std::map<std::pair<const char*, std::vector<Oid>>, std::string> prepared_;
};

// Type OIDs of the parameters and columns pgbusd reads and writes.
inline constexpr Oid kBool = 16, kInt4 = 23, kInt8 = 20, kText = 25, kBytea = 17,
                     kFloat8 = 701, kVarchar = 1043, kTimestamptz = 1184, kTid = 27;
inline constexpr Oid kBoolArray = 1000, kTextArray = 1009, kInt4Array = 1007,
                     kInt8Array = 1016, kByteaArray = 1001, kTidArray = 1010;

// A libpq result that clears itself.
using Result = std::unique_ptr<PGresult, decltype(&PQclear)>;

// A statement parameter: its type and its value in that type's binary
// format, or NULL. Made by Bind from the C++ value, so a statement's
// parameter types follow from what its call passes.
struct Value {
  Oid type;
  std::optional<std::string> bytes;  // nullopt: NULL
};
Value Bind(const std::string& v);  // text
Value Bind(std::string&& v);       // text
Value Bind(const char* v);         // text
Value Bind(int64_t v);             // int8
Value Bind(int32_t v);             // int4
Value Bind(bool v);                // bool
// A bytea parameter (a string binds as text).
struct Bytea {
  absl::string_view bytes;
};
Value Bind(Bytea v);
inline Value Bind(Value v) { return v; }
// NULL when empty, of the type T binds to.
template <typename T>
Value Bind(const std::optional<T>& v) {
  if (v) return Bind(*v);
  Value null = Bind(T{});
  null.bytes.reset();
  return null;
}

// Builds a one-dimensional array parameter in Postgres's binary array
// format. Elements are appended already in the element type's binary form
// (raw bytes for text and bytea, EncodeInt8/EncodeInt4 for integers).
class ArrayBuilder {
 public:
  // The elements follow room for the header, so that Finish() does not
  // copy them (a publish's payloads are most of a batch's bytes).
  explicit ArrayBuilder(Oid element_type)
      : element_type_(element_type), elements_(kHeaderBytes, '\0') {}
  // Room for elements of `bytes` in all (no reallocation while adding).
  void Reserve(size_t elements, size_t bytes) { elements_.reserve(elements_.size() + 4 * elements + bytes); }
  void Add(absl::string_view binary_element);
  void AddNull();
  size_t size() const { return count_; }
  // The encoded array; the builder is spent.
  std::string Finish();
  Oid element_type() const { return element_type_; }

 private:
  Oid element_type_;
  size_t count_ = 0;
  bool has_null_ = false;
  static constexpr size_t kHeaderBytes = 20;
  std::string elements_;  // header room, then the elements
};
// The array parameter; the builder is spent.
Value Bind(ArrayBuilder&& array);

// Encodes int8 as a binary parameter.
std::string EncodeInt8(int64_t v);
std::string EncodeInt4(int32_t v);
std::string EncodeBool(bool v);

// Reads one row of a binary-format result, column after column, in the
// order of the statement's select list. Each read names the column's type;
// a column of another type is a statement and its reader disagreeing, a
// bug in pgbusd that no input can cause: it aborts the process with both
// named (every statement runs in `make test`).
class RowReader {
 public:
  RowReader(const PGresult* result, int row) : r_(result), row_(row) {}
  bool NextIsNull() const { return PQgetisnull(r_, row_, col_); }
  void Skip() { ++col_; }
  int64_t Int8();
  int32_t Int4();
  bool Bool();
  double Float8();
  std::string Text();            // text, varchar
  std::string Bytes();           // bytea
  absl::string_view BytesView();  // bytea, valid while the result lives
  absl::Time Timestamp();        // timestamptz
  std::vector<std::string> TextArray();  // one-dimensional text[]
  // A row's physical address (tid) in its binary form, opaque: only for an
  // ArrayBuilder(kTid) of a later statement of the same transaction, while
  // that transaction holds the row's lock (a locked row cannot move).
  std::string RowId();
  // The next column, or nullopt (and skipped) when it is NULL:
  // row.Maybe(&RowReader::Text).
  template <typename T>
  std::optional<T> Maybe(T (RowReader::*read)()) {
    if (NextIsNull()) {
      Skip();
      return std::nullopt;
    }
    return (this->*read)();
  }

 private:
  const char* Next(Oid type, int bytes);  // the column's bytes; -1: any length
  const char* NextOf(std::initializer_list<Oid> types);
  const PGresult* r_;
  int row_;
  int col_ = 0;
};

// A statement's result rows.
class Rows {
 public:
  explicit Rows(Result result) : result_(std::move(result)) {}
  int size() const { return PQntuples(result_.get()); }
  bool empty() const { return size() == 0; }
  RowReader operator[](int row) const { return RowReader(result_.get(), row); }
  // Every row, read by `read` (RowReader& -> T), in order.
  template <typename F>
  auto Map(F read) const {
    std::vector<std::decay_t<decltype(read(std::declval<RowReader&>()))>> out;
    out.reserve(size());
    for (int i = 0; i < size(); ++i) {
      RowReader row = (*this)[i];
      out.push_back(read(row));
    }
    return out;
  }

 private:
  Result result_;
};

// Maps a SQLSTATE and message to a Status (see store.h for the codes).
absl::Status StatusFromSqlState(const std::string& sqlstate, const std::string& message);
// Maps a libpqxx (or std) exception; marks `conn` broken when it must go.
absl::Status StatusFromException(const std::exception& e, Connection* conn);

// A fixed-size set of connections; Acquire() waits for a free one.
// Thread safety: safe from any thread.
class ConnectionPool {
 public:
  ConnectionPool(std::string dsn, int size, int statement_timeout_ms);
  ~ConnectionPool();

  // Returns the connection to the pool (or drops it when broken).
  class Lease {
   public:
    Lease(ConnectionPool* pool, std::unique_ptr<Connection> conn)
        : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = default;
    ~Lease();
    Connection& operator*() const { return *conn_; }
    Connection* operator->() const { return conn_.get(); }

   private:
    ConnectionPool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  // UNAVAILABLE when Postgres cannot be reached or no connection frees up
  // within `wait`.
  absl::StatusOr<Lease> Acquire(absl::Duration wait = absl::Seconds(10));

  // Whether `pid` is the backend of one of this pool's open sessions: a
  // notification sent by this replica, whose work it has already done.
  bool IsOwnBackend(int pid);

 private:
  void Release(std::unique_ptr<Connection> conn);

  const std::string dsn_;
  const int size_;
  const int statement_timeout_ms_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle + leased
  std::set<int> backend_pids_ ABSL_GUARDED_BY(mu_);  // of those
};

// For the statements that work across tenants (SECURITY DEFINER functions:
// the key lookup, the reaper, the backlog metrics) and the operator's.
struct NoTenant {};

// The one way pgbusd runs statements: an explicit transaction on one
// connection, of named prepared statements with typed binary parameters
// and binary results, sent in pipelines (libpq's pipeline mode).
//
// Add() queues a statement; Send() sends everything queued in one round
// trip and returns each statement's rows in the order added. BEGIN and the
// transaction's settings go with the first round trip, COMMIT with the
// last (SendAndCommit): a transaction of independent statements costs one
// round trip (each is a wake-up of Postgres and of pgbusd on the hot path).
// Rolls back when destroyed uncommitted; after an error the transaction is
// failed, and only destroying it makes sense.
//
// The settings: pgbus.tenant_id, which row-level security reads, local to
// the transaction (set_config(..., true): a pooled connection never carries
// it to the next request), and the plan settings (sql/set_tenant.sql).
// With `async_commit`, the commit does not wait for the WAL flush: only for
// work whose loss in a crash is harmless (see
// sql/set_tenant_async_commit.sql).
class Transaction {
 public:
  Transaction(Connection& conn, const std::string& tenant, bool async_commit = false);
  Transaction(Connection& conn, NoTenant);
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // Queues `sql` (a constant of sql.h) with `args` bound by Bind(); returns
  // the index of its rows in the next Send's result.
  template <typename... A>
  size_t Add(const char* sql, A&&... args) {
    std::vector<Value> values;
    values.reserve(sizeof...(A));
    (values.push_back(Bind(std::forward<A>(args))), ...);
    return AddValues(sql, std::move(values));
  }
  // As Add, with the parameters already bound.
  size_t AddValues(const char* sql, std::vector<Value> values) {
    return Queue(sql, std::move(values), /*returned=*/true);
  }
  // Sends what is queued in one round trip.
  absl::StatusOr<std::vector<Rows>> Send() { return Flush(/*commit=*/false); }
  // The same, with the COMMIT: ABORTED when Postgres rolled back instead.
  absl::StatusOr<std::vector<Rows>> SendAndCommit() { return Flush(/*commit=*/true); }
  absl::Status Commit() { return Flush(/*commit=*/true).status(); }
  // Add, then Send: this statement's rows.
  template <typename... A>
  absl::StatusOr<Rows> Run(const char* sql, A&&... args) {
    return FlushOne(/*commit=*/false, Add(sql, std::forward<A>(args)...));
  }
  // Add, then SendAndCommit: this statement's rows.
  template <typename... A>
  absl::StatusOr<Rows> RunAndCommit(const char* sql, A&&... args) {
    return FlushOne(/*commit=*/true, Add(sql, std::forward<A>(args)...));
  }

 private:
  // Flush, then the rows of the statement at `index`.
  absl::StatusOr<Rows> FlushOne(bool commit, size_t index);
  struct Queued {
    const char* sql;
    std::vector<Value> values;
    bool returned;  // its rows go to the caller
  };
  size_t Queue(const char* sql, std::vector<Value> values, bool returned);
  absl::StatusOr<std::vector<Rows>> Flush(bool commit);

  Connection& conn_;
  std::vector<Queued> queued_;
  size_t returned_ = 0;  // queued statements whose rows go to the caller
  bool begun_ = false;   // BEGIN was sent
  bool open_ = true;     // neither committed nor found rolled back
};

}  // namespace pgbus::store::postgres

#endif  // PGBUS_SERVICE_STORE_POSTGRES_CONNECTION_H_
