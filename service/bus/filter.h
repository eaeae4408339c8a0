// Subscription filters over message attributes, in Google Pub/Sub's syntax:
//
//   attributes.KEY = "value"        equal
//   attributes.KEY != "value"       not equal (also true when KEY is absent)
//   hasPrefix(attributes.KEY, "p")  starts with
//   attributes:KEY                  KEY is present
//   NOT x, x AND y, x OR y, ( x )   NOT binds tightest, then AND, then OR
//
// KEY is letters, digits, '_', '-' and '.', or a "quoted string". A filter
// is parsed once, when the subscription is created, and compiled into a
// Postgres jsonpath predicate that the publish statement evaluates against
// each message's attributes: a message the filter rejects gets no delivery,
// so it is never pending.
#ifndef PGBUS_SERVICE_BUS_FILTER_H_
#define PGBUS_SERVICE_BUS_FILTER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pgbus::bus {

inline constexpr size_t kMaxFilterLength = 4096;

// The jsonpath predicate for `filter` ("" for an empty filter: everything
// passes). INVALID_ARGUMENT naming the position of the first error.
absl::StatusOr<std::string> CompileFilter(absl::string_view filter);

}  // namespace pgbus::bus

#endif  // PGBUS_SERVICE_BUS_FILTER_H_
