// The store's binary encoders (Postgres's binary parameter formats) and its
// mapping of SQLSTATEs and libpqxx exceptions to statuses (issue 13): no
// database needed.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include <string>

#include "service/store/postgres/connection.h"

namespace pgbus::store::postgres {
namespace {

std::string Bytes(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

TEST(Encoding, IntegersAreBigEndian) {
  EXPECT_EQ(EncodeInt8(1), Bytes({0, 0, 0, 0, 0, 0, 0, 1}));
  EXPECT_EQ(EncodeInt8(-2), Bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}));
  EXPECT_EQ(EncodeInt8(0x0102030405060708), Bytes({1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(EncodeInt4(0x01020304), Bytes({1, 2, 3, 4}));
  EXPECT_EQ(EncodeInt4(-1), Bytes({0xff, 0xff, 0xff, 0xff}));
  EXPECT_EQ(EncodeBool(true), Bytes({1}));
  EXPECT_EQ(EncodeBool(false), Bytes({0}));
}

// Postgres's array_recv: ndim, has-null flag, element type, then (size,
// lower bound) per dimension, then (length, bytes) per element, -1 for NULL.
TEST(Encoding, AnEmptyArrayHasNoDimensions) {
  ArrayBuilder empty(25);  // text
  EXPECT_EQ(empty.Finish(), EncodeInt4(0) + EncodeInt4(0) + EncodeInt4(25));
}

TEST(Encoding, ArraysCarryTheirElementsAndNulls) {
  ArrayBuilder a(20);  // int8
  a.Add(EncodeInt8(7));
  a.AddNull();
  a.Add(EncodeInt8(-1));
  EXPECT_EQ(a.size(), 3u);
  EXPECT_EQ(a.Finish(), EncodeInt4(1) + EncodeInt4(1) + EncodeInt4(20) + EncodeInt4(3) +
                            EncodeInt4(1) + EncodeInt4(8) + EncodeInt8(7) + EncodeInt4(-1) +
                            EncodeInt4(8) + EncodeInt8(-1));
  ArrayBuilder b(17);  // bytea, reserved ahead: the same bytes
  b.Reserve(1, 3);
  b.Add(std::string("a\0b", 3));
  EXPECT_EQ(b.Finish(), EncodeInt4(1) + EncodeInt4(0) + EncodeInt4(17) + EncodeInt4(1) +
                            EncodeInt4(1) + EncodeInt4(3) + std::string("a\0b", 3));
}

TEST(SqlState, EachClassHasItsCode) {
  const struct {
    const char* sqlstate;
    absl::StatusCode code;
  } cases[] = {
      {"23505", absl::StatusCode::kAlreadyExists},       // unique_violation
      {"23503", absl::StatusCode::kFailedPrecondition},  // foreign_key_violation
      {"40001", absl::StatusCode::kAborted},             // serialization_failure
      {"40P01", absl::StatusCode::kAborted},             // deadlock_detected
      {"40000", absl::StatusCode::kAborted},             // transaction_rollback
      {"40003", absl::StatusCode::kUnavailable},         // statement_completion_unknown
      {"57014", absl::StatusCode::kDeadlineExceeded},    // query_canceled
      {"08006", absl::StatusCode::kUnavailable},         // connection_failure
      {"57P01", absl::StatusCode::kUnavailable},         // admin_shutdown
      {"57P03", absl::StatusCode::kUnavailable},         // cannot_connect_now
      {"53300", absl::StatusCode::kUnavailable},         // too_many_connections
      {"54000", absl::StatusCode::kResourceExhausted},   // quotas raised by pgbus
      {"22023", absl::StatusCode::kInvalidArgument},     // raised by pgbus.reject_handle
      {"22P02", absl::StatusCode::kInternal},            // a literal pgbusd built
      {"42P01", absl::StatusCode::kInternal},            // undefined_table: our bug
      {"", absl::StatusCode::kInternal},
  };
  for (const auto& c : cases) {
    absl::Status st = StatusFromSqlState(c.sqlstate, "first line\nDETAIL: more");
    EXPECT_EQ(st.code(), c.code) << c.sqlstate;
    EXPECT_EQ(st.message(), std::string("first line (SQLSTATE ") + c.sqlstate + ")");
  }
}

TEST(SqlState, LibpqxxExceptionsWithoutASqlStateStillMap) {
  // libpqxx 6.4 drops the SQLSTATE in some constructors: its class tells.
  EXPECT_EQ(StatusFromException(pqxx::unique_violation("dup"), nullptr).code(),
            absl::StatusCode::kAlreadyExists);
  // Class 40 is not an sql_error in libpqxx 6.4.
  EXPECT_EQ(StatusFromException(pqxx::deadlock_detected("dl"), nullptr).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(StatusFromException(pqxx::serialization_failure("sf"), nullptr).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(StatusFromException(pqxx::data_exception("bad"), nullptr).code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(StatusFromException(pqxx::broken_connection("gone"), nullptr).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromException(pqxx::sql_error("boom", "SELECT 1", "54000"), nullptr).code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace pgbus::store::postgres
