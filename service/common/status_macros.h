// Abseil 20220623 (Debian's) has no status_macros.h; these are the two we use.
#ifndef PGBUS_SERVICE_COMMON_STATUS_MACROS_H_
#define PGBUS_SERVICE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PGBUS_CONCAT_INNER_(a, b) a##b
#define PGBUS_CONCAT_(a, b) PGBUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    if (absl::Status pgbus_status_ = (expr); !pgbus_status_.ok()) \
      return pgbus_status_;                              \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, StatusOrExpr());` declares/assigns x from the
// value, or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(PGBUS_CONCAT_(pgbus_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // PGBUS_SERVICE_COMMON_STATUS_MACROS_H_
