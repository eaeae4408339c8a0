// Postgres connections for the store: a libpqxx connection that also hands
// out libpq's handle, a bounded pool of them, the tenant transaction, and
// the mapping of Postgres errors to absl::Status.
//
// Why libpq beside libpqxx: libpqxx 6.4 returns every result as text, so a
// bytea comes back hex-encoded (twice the bytes, then decoded). Statements
// that carry payload bytes (publish, claim, retrieve) therefore go through
// libpq's PQexecPrepared with binary parameters and binary results, on the
// same connection and inside the same transaction as the libpqxx work.
// libpqxx's own extension point, a connection policy, sees the PGconn.
//
// libpqxx exceptions stop in this directory: everything here returns Status.
#ifndef PGBUS_SERVICE_STORE_POSTGRES_CONNECTION_H_
#define PGBUS_SERVICE_STORE_POSTGRES_CONNECTION_H_

#include <libpq-fe.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
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

  // Prepares `sql` under `name` for libpq use, once per session.
  // `types` are parameter type OIDs (0: let the server infer).
  absl::Status PrepareRaw(const char* name, const char* sql, const std::vector<Oid>& types);

  // Set when an error showed the session is unusable; the pool drops it.
  bool broken = false;

 private:
  explicit Connection(const std::string& opts);
  std::string options_;  // must precede policy_
  CapturingPolicy policy_;
  std::set<std::string> raw_prepared_;
};

// Type OIDs of raw statements' parameters.
inline constexpr Oid kBool = 16, kInt4 = 23, kInt8 = 20, kText = 25, kBytea = 17;
inline constexpr Oid kTextArray = 1009, kInt4Array = 1007, kInt8Array = 1016,
                     kByteaArray = 1001;

// A libpq result that clears itself.
using Result = std::unique_ptr<PGresult, decltype(&PQclear)>;

// One parameter of a raw statement: text (format 0) or binary (format 1).
struct Param {
  static Param Null() { return Param{nullptr, 0, 0}; }
  static Param Text(const std::string& s) { return Param{s.data(), static_cast<int>(s.size()), 0}; }
  static Param Binary(const std::string& s) {
    return Param{s.data(), static_cast<int>(s.size()), 1};
  }
  const char* data;
  int length;
  int format;
};

// Runs a statement prepared with PrepareRaw, asking for binary results.
absl::StatusOr<Result> ExecRaw(Connection& conn, const char* name,
                               const std::vector<Param>& params);

// A statement prepared with PrepareRaw and its parameters, whose bytes the
// caller keeps alive until it has run.
struct Statement {
  const char* name;
  std::vector<Param> params;
};

// Runs `statements` in order in one round trip (libpq's pipeline mode) and
// returns their binary results. The first error is returned and the
// statements after it are skipped by Postgres; inside a transaction block
// that leaves the transaction failed, for the caller to roll back.
// Postgres may start sending a result while later statements are still
// being written, and this connection does not read meanwhile: only the last
// statements of a pipeline may have large results.
absl::StatusOr<std::vector<Result>> ExecPipelined(Connection& conn,
                                                  const std::vector<Statement>& statements);

// Reads columns of a binary-format result row.
class BinaryRow {
 public:
  BinaryRow(const PGresult* result, int row) : r_(result), row_(row) {}
  bool IsNull(int col) const { return PQgetisnull(r_, row_, col); }
  int64_t Int8(int col) const;
  int32_t Int4(int col) const;
  bool Bool(int col) const;
  std::string Bytes(int col) const;  // bytea and text
  absl::Time Timestamp(int col) const;
  std::vector<std::string> TextArray(int col) const;  // one-dimensional text[]

 private:
  const PGresult* r_;
  int row_;
};

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

 private:
  Oid element_type_;
  size_t count_ = 0;
  bool has_null_ = false;
  static constexpr size_t kHeaderBytes = 20;
  std::string elements_;  // header room, then the elements
};
// Encodes int8 as a binary parameter.
std::string EncodeInt8(int64_t v);
std::string EncodeInt4(int32_t v);
std::string EncodeBool(bool v);

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

 private:
  void Release(std::unique_ptr<Connection> conn);

  const std::string dsn_;
  const int size_;
  const int statement_timeout_ms_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle + leased
};

// An explicit transaction whose pgbus.tenant_id is `tenant` (set with
// set_config(..., true): local to the transaction, so a pooled connection
// never carries it to the next request), begun in one round trip with its
// settings ("BEGIN; SELECT set_config(...)"; as pqxx::work plus the setting
// it took two: each round trip is latency and Postgres CPU on the hot path).
// Statements run through a pqxx::nontransaction or ExecRaw on the same
// connection, or through Exec, which pipelines them: Start() instead of
// Begin() queues the BEGIN and its settings to go with the first Exec, and
// Exec(..., /*commit=*/true) sends the COMMIT with its statements, so a
// transaction of independent statements costs one round trip instead of
// three or more (each a wake-up of Postgres and of pgbusd on the hot path).
// Rolls back when destroyed uncommitted.
// With `async_commit`, the commit does not wait for the WAL flush: only for
// work whose loss in a crash is harmless (see sql::kSetTenantAsyncCommitLiteral).
class TenantTransaction {
 public:
  explicit TenantTransaction(Connection& conn) : conn_(conn) {}
  TenantTransaction(const TenantTransaction&) = delete;
  TenantTransaction& operator=(const TenantTransaction&) = delete;
  ~TenantTransaction();
  absl::Status Begin(const std::string& tenant, bool async_commit);
  // Like Begin, but sent with the first Exec or Commit.
  absl::Status Start(const std::string& tenant, bool async_commit);
  // Queues a statement whose result only has to succeed; it goes with the
  // next Exec or Commit.
  void Queue(Statement statement) { queued_.push_back(std::move(statement)); }
  // Sends what is queued and `statements` (then COMMIT with `commit`) in one
  // round trip; returns the results of `statements`.
  absl::StatusOr<std::vector<Result>> Exec(std::vector<Statement> statements,
                                           bool commit = false);
  // ABORTED when Postgres rolled back instead (an error went unnoticed).
  absl::Status Commit();

 private:
  Connection& conn_;
  bool open_ = false;
  std::string tenant_;  // the queued settings' parameter
  std::vector<Statement> queued_;
};

// Runs `fn` in a TenantTransaction. Commits when `fn` returns OK and rolls
// back otherwise; exceptions become a Status.
absl::Status InTenantTransaction(
    ConnectionPool& pool, const std::string& tenant,
    const std::function<absl::Status(pqxx::transaction_base&, Connection&)>& fn,
    bool async_commit = false);

}  // namespace pgbus::store::postgres

#endif  // PGBUS_SERVICE_STORE_POSTGRES_CONNECTION_H_
