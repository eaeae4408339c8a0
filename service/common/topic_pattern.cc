#include "service/common/topic_pattern.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pgbus {

absl::Status ValidateTopicPattern(absl::string_view field, absl::string_view pattern) {
  auto bad = [&](size_t pos, absl::string_view why) {
    std::string shown(pattern.substr(0, 64));
    return absl::InvalidArgumentError(absl::StrCat(field, ": \"", shown,
                                                   pattern.size() > 64 ? "...\"" : "\"",
                                                   " at position ", pos, ": ", why));
  };
  if (pattern.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": is required"));
  if (pattern.size() > 200) return bad(200, "a pattern has at most 200 characters");
  size_t pos = 0;
  std::vector<absl::string_view> tokens = absl::StrSplit(pattern, '.');
  for (size_t i = 0; i < tokens.size(); ++i) {
    absl::string_view t = tokens[i];
    if (t.empty()) return bad(pos, "empty token (two dots, or a leading or trailing dot)");
    if (t == ">") {
      if (i + 1 != tokens.size()) return bad(pos, "'>' may only be the last token");
    } else if (t != "*") {
      for (size_t k = 0; k < t.size(); ++k) {
        char c = t[k];
        if (c == '*' || c == '>') {
          return bad(pos + k, "'*' and '>' must be whole tokens, as in \"orders.*\"");
        }
        if (!absl::ascii_isalnum(c) && c != '_' && c != '-') {
          return bad(pos + k, "only letters, digits, '_', '-', '.', '*' and '>' are allowed");
        }
      }
    }
    pos += t.size() + 1;
  }
  return absl::OkStatus();
}

bool TopicMatches(absl::string_view pattern, absl::string_view topic) {
  for (;;) {
    size_t pdot = pattern.find('.');
    absl::string_view ptok = pattern.substr(0, pdot);
    if (ptok == ">") return !topic.empty();
    if (topic.empty()) return false;
    size_t tdot = topic.find('.');
    absl::string_view ttok = topic.substr(0, tdot);
    if (ptok != "*" && ptok != ttok) return false;
    bool plast = pdot == absl::string_view::npos;
    bool tlast = tdot == absl::string_view::npos;
    if (plast || tlast) return plast && tlast;
    pattern.remove_prefix(pdot + 1);
    topic.remove_prefix(tdot + 1);
  }
}

bool PatternCovers(absl::string_view outer, absl::string_view inner) {
  std::vector<absl::string_view> o = absl::StrSplit(outer, '.');
  std::vector<absl::string_view> i = absl::StrSplit(inner, '.');
  for (size_t k = 0; k < o.size(); ++k) {
    if (o[k] == ">") return k < i.size();  // one or more tokens of any kind
    if (k >= i.size()) return false;
    if (i[k] == ">") return false;         // inner reaches deeper than outer
    if (o[k] == "*") continue;             // covers a literal or '*'
    if (i[k] == "*" || o[k] != i[k]) return false;
  }
  return o.size() == i.size();
}

bool IsTopicPattern(absl::string_view name) {
  for (absl::string_view t : absl::StrSplit(name, '.')) {
    if (t == "*" || t == ">") return true;
  }
  return false;
}

std::string TopicPatternRegex(absl::string_view pattern) {
  std::string out = "^";
  bool first = true;
  for (absl::string_view t : absl::StrSplit(pattern, '.')) {
    if (!first) out += "\\.";
    first = false;
    if (t == "*") {
      out += "[^.]+";
    } else if (t == ">") {
      out += ".+";
    } else {
      out.append(t.data(), t.size());  // letters, digits, '_', '-' only
    }
  }
  return out + "$";
}

}  // namespace pgbus
