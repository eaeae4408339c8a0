#include "service/auth/principal.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/common/topic_pattern.h"

namespace pgbus::auth {

const char* ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kPublish:
      return "publish";
    case Scope::kSubscribe:
      return "subscribe";
    case Scope::kAdmin:
      return "admin";
  }
  return "?";
}

absl::StatusOr<Scope> ParseScope(absl::string_view name) {
  for (Scope s : {Scope::kPublish, Scope::kSubscribe, Scope::kAdmin}) {
    if (name == ScopeName(s)) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown scope \"", name.substr(0, 32), "\": expected publish, subscribe or admin"));
}

bool Principal::AllTopics() const {
  for (const auto& p : topics) {
    if (p == ">") return true;
  }
  return false;
}

bool Principal::TopicAllowed(absl::string_view topic) const {
  if (AllTopics()) return true;  // also a malformed name: validation answers it
  // `topic` may itself be a pattern (a subscription's): every topic it
  // matches must be allowed.
  for (const auto& p : topics) {
    if (PatternCovers(p, topic)) return true;
  }
  return false;
}

absl::Status Principal::CheckScope(Scope scope) const {
  if (HasScope(scope)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "the caller (", identity, ") lacks the ", ScopeName(scope),
      " scope; use a key issued with --scopes including ", ScopeName(scope)));
}

absl::Status Principal::Check(Scope scope, absl::string_view topic) const {
  if (absl::Status st = CheckScope(scope); !st.ok()) return st;
  if (TopicAllowed(topic)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("the caller (", identity,
                                                  ") may not use topic \"", topic.substr(0, 200),
                                                  "\": its key is limited to topics matching ",
                                                  absl::StrJoin(topics, ", ")));
}

absl::Status Principal::CheckAny(Scope a, Scope b, absl::string_view topic) const {
  if (HasScope(a)) return Check(a, topic);
  return Check(b, topic);
}

}  // namespace pgbus::auth
