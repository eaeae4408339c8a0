#include "service/bus/validation.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "service/bus/filter.h"
#include "service/common/topic_pattern.h"

namespace pgbus::bus {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", rule));
}

bool IsNameChar(char c) { return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-'; }

// Quotes user text in errors, shortened so that an error never echoes a
// large value back.
std::string Quote(absl::string_view s) {
  if (s.size() > 64) return absl::StrCat("\"", s.substr(0, 64), "...\"");
  return absl::StrCat("\"", s, "\"");
}

absl::Status CheckDuration(absl::string_view field, absl::Duration d, absl::Duration min,
                           absl::Duration max) {
  if (d < min || d > max) {
    return Invalid(field, absl::StrCat("must be from ", absl::FormatDuration(min), " to ",
                                       absl::FormatDuration(max), "; got ",
                                       absl::FormatDuration(d)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateName(absl::string_view field, absl::string_view name) {
  if (name.empty()) return Invalid(field, "is required");
  if (name.size() > kMaxNameLength) {
    return Invalid(field, absl::StrCat("must be at most ", kMaxNameLength, " characters; got ",
                                       name.size()));
  }
  if (!absl::ascii_isalnum(name[0])) {
    return Invalid(field, absl::StrCat("must start with a letter or digit; got ", Quote(name)));
  }
  for (char c : name) {
    if (!IsNameChar(c)) {
      return Invalid(field, absl::StrCat("may contain only letters, digits, '.', '_' and '-'; "
                                         "got ",
                                         Quote(name)));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTopic(const model::TopicRecord& t) {
  if (auto st = ValidateName("topic.name", t.name); !st.ok()) return st;
  if (auto st = CheckDuration("topic.retention", t.retention, absl::Minutes(1),
                              absl::Hours(24 * 366));
      !st.ok()) {
    return st;
  }
  if (t.message_ttl != absl::ZeroDuration()) {
    if (auto st = CheckDuration("topic.message_ttl", t.message_ttl, absl::Seconds(1),
                                t.retention);
        !st.ok()) {
      return st;
    }
  }
  if (auto st = CheckDuration("topic.dedup_window", t.dedup_window, absl::Seconds(1),
                              absl::Hours(24 * 7));
      !st.ok()) {
    return st;
  }
  if (t.max_message_bytes < 0) {
    return Invalid("topic.max_message_bytes", "must not be negative (0: the server's limit)");
  }
  return absl::OkStatus();
}

absl::Status ValidateSubscription(const model::SubscriptionRecord& s) {
  if (auto st = ValidateName("subscription.name", s.name); !st.ok()) return st;
  // A topic name, or a pattern (orders.*, orders.>) covering every matching
  // topic, also those created later.
  if (s.topic.find_first_of("*>") != std::string::npos) {
    if (auto st = ValidateTopicPattern("subscription.topic", s.topic); !st.ok()) return st;
  } else if (auto st = ValidateName("subscription.topic", s.topic); !st.ok()) {
    return st;
  }
  if (auto st = CheckDuration("subscription.ack_deadline", s.ack_deadline, absl::Seconds(1),
                              absl::Minutes(10));
      !st.ok()) {
    return st;
  }
  if (auto st = CheckDuration("subscription.min_backoff", s.min_backoff, absl::ZeroDuration(),
                              absl::Minutes(10));
      !st.ok()) {
    return st;
  }
  if (auto st = CheckDuration("subscription.max_backoff", s.max_backoff, s.min_backoff,
                              absl::Minutes(10));
      !st.ok()) {
    return st;
  }
  if (s.max_delivery_attempts != 0 &&
      (s.max_delivery_attempts < 2 || s.max_delivery_attempts > 1000)) {
    return Invalid("subscription.max_delivery_attempts",
                   absl::StrCat("must be 0 (never dead-letter) or from 2 to 1000; got ",
                                s.max_delivery_attempts));
  }
  if ((s.max_delivery_attempts != 0) != !s.dead_letter_topic.empty()) {
    return Invalid("subscription.dead_letter_topic",
                   "set together with max_delivery_attempts (both, or neither)");
  }
  if (!s.dead_letter_topic.empty()) {
    if (auto st = ValidateName("subscription.dead_letter_topic", s.dead_letter_topic); !st.ok()) {
      return st;
    }
    if (TopicMatches(s.topic, s.dead_letter_topic)) {
      return Invalid("subscription.dead_letter_topic",
                     "must not be a topic the subscription receives (dead letters would come "
                     "back to it)");
    }
  }
  return CompileFilter(s.filter).status();
}

absl::Status ValidateMessage(int index, const model::NewMessage& m, int64_t max_payload) {
  std::string at = absl::StrCat("messages[", index, "]");
  if (static_cast<int64_t>(m.payload.size()) > max_payload) {
    return Invalid(absl::StrCat(at, ".payload"),
                   absl::StrCat("is ", m.payload.size(), " bytes; at most ", max_payload,
                                " bytes are accepted here"));
  }
  if (m.priority < -kMaxPriority || m.priority > kMaxPriority) {
    return Invalid(absl::StrCat(at, ".priority"),
                   absl::StrCat("must be from -", kMaxPriority, " to ", kMaxPriority, "; got ",
                                m.priority));
  }
  if (m.attributes.size() > static_cast<size_t>(kMaxAttributes)) {
    return Invalid(absl::StrCat(at, ".attributes"),
                   absl::StrCat("at most ", kMaxAttributes, " entries; got ",
                                m.attributes.size()));
  }
  // Postgres text cannot hold NUL; say so instead of failing in the store.
  auto has_nul = [](const std::string& s) { return s.find('\0') != std::string::npos; };
  for (const auto& [k, v] : m.attributes) {
    if (has_nul(k) || has_nul(v)) {
      return Invalid(absl::StrCat(at, ".attributes"), "keys and values must not contain NUL bytes");
    }
    if (k.empty() || k.size() > kMaxAttributeKey) {
      return Invalid(absl::StrCat(at, ".attributes"),
                     absl::StrCat("keys must be 1 to ", kMaxAttributeKey, " bytes"));
    }
    if (absl::StartsWith(k, "pgbus.")) {
      return Invalid(absl::StrCat(at, ".attributes"),
                     absl::StrCat("key ", Quote(k), " uses the reserved prefix \"pgbus.\""));
    }
    if (v.size() > kMaxAttributeValue) {
      return Invalid(absl::StrCat(at, ".attributes[", Quote(k), "]"),
                     absl::StrCat("values must be at most ", kMaxAttributeValue, " bytes"));
    }
  }
  struct {
    const char* field;
    const std::string* value;
  } keys[] = {{"correlation_id", &m.correlation_id},
              {"ordering_key", &m.ordering_key},
              {"idempotency_key", &m.idempotency_key}};
  for (const auto& k : keys) {
    if (has_nul(*k.value)) {
      return Invalid(absl::StrCat(at, ".", k.field), "must not contain NUL bytes");
    }
    if (k.value->size() > kMaxKeyLength) {
      return Invalid(absl::StrCat(at, ".", k.field),
                     absl::StrCat("must be at most ", kMaxKeyLength, " bytes"));
    }
  }
  if (m.ttl && *m.ttl <= absl::ZeroDuration()) {
    return Invalid(absl::StrCat(at, ".ttl"), "must be positive when set");
  }
  return absl::OkStatus();
}

}  // namespace pgbus::bus
