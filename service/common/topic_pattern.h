// Topic patterns, as NATS subjects: a topic name is split at '.' into
// tokens; in a pattern `*` stands for exactly one token and a final `>` for
// one or more. `orders.*` matches `orders.eu` but not `orders.eu.paid`;
// `orders.>` matches both; `>` matches every topic. A pattern without
// wildcards matches only that name.
#ifndef PGBUS_SERVICE_COMMON_TOPIC_PATTERN_H_
#define PGBUS_SERVICE_COMMON_TOPIC_PATTERN_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pgbus {

// INVALID_ARGUMENT naming `field` and the position of the first fault.
absl::Status ValidateTopicPattern(absl::string_view field, absl::string_view pattern);

// Whether `topic` matches the (valid) `pattern`.
bool TopicMatches(absl::string_view pattern, absl::string_view topic);

// Whether every topic that `inner` (a valid pattern, or a plain name)
// matches also matches `outer`: `orders.>` covers `orders.*` and
// `orders.eu`, `orders.*` does not cover `orders.>`.
bool PatternCovers(absl::string_view outer, absl::string_view inner);

bool IsTopicPattern(absl::string_view name);

// A POSIX regular expression (Postgres `~`) matching what `pattern` does.
std::string TopicPatternRegex(absl::string_view pattern);

}  // namespace pgbus

#endif  // PGBUS_SERVICE_COMMON_TOPIC_PATTERN_H_
