#include "service/bus/filter.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pgbus::bus {
namespace {

constexpr int kMaxDepth = 64;

class Parser {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  absl::StatusOr<std::string> Parse() {
    std::string out;
    if (!Or(&out, 0)) return error_;
    SkipSpace();
    if (pos_ != text_.size()) {
      Fail("expected AND, OR or the end of the filter");
      return error_;
    }
    return out;
  }

 private:
  bool Fail(absl::string_view what) {
    if (error_.ok()) {
      error_ = absl::InvalidArgumentError(
          absl::StrCat("subscription.filter: at position ", pos_, ": ", what));
    }
    return false;
  }

  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(text_[pos_])) ++pos_;
  }

  // A keyword (AND, OR, NOT) as a whole word.
  bool Keyword(absl::string_view word) {
    SkipSpace();
    if (text_.substr(pos_, word.size()) != word) return false;
    size_t end = pos_ + word.size();
    if (end < text_.size() && (absl::ascii_isalnum(text_[end]) || text_[end] == '_')) {
      return false;
    }
    pos_ = end;
    return true;
  }

  bool Punct(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool Or(std::string* out, int depth) {
    if (depth > kMaxDepth) return Fail("nested too deeply");
    std::string left;
    if (!And(&left, depth)) return false;
    while (Keyword("OR")) {
      std::string right;
      if (!And(&right, depth)) return false;
      left = absl::StrCat("(", left, " || ", right, ")");
    }
    *out = std::move(left);
    return true;
  }

  bool And(std::string* out, int depth) {
    std::string left;
    if (!Not(&left, depth)) return false;
    while (Keyword("AND")) {
      std::string right;
      if (!Not(&right, depth)) return false;
      left = absl::StrCat("(", left, " && ", right, ")");
    }
    *out = std::move(left);
    return true;
  }

  bool Not(std::string* out, int depth) {
    if (depth > kMaxDepth) return Fail("nested too deeply");
    if (Keyword("NOT")) {
      std::string inner;
      if (!Not(&inner, depth + 1)) return false;
      *out = absl::StrCat("!(", inner, ")");
      return true;
    }
    return Primary(out, depth);
  }

  bool Primary(std::string* out, int depth) {
    SkipSpace();
    if (Punct('(')) {
      std::string inner;
      if (!Or(&inner, depth + 1)) return false;
      if (!Punct(')')) return Fail("expected ')'");
      *out = absl::StrCat("(", inner, ")");
      return true;
    }
    if (Keyword("hasPrefix")) {
      if (!Punct('(')) return Fail("expected '(' after hasPrefix");
      std::string key, prefix;
      if (!Attribute(&key, '.')) return false;
      if (!Punct(',')) return Fail("expected ',' in hasPrefix(attributes.KEY, \"prefix\")");
      if (!String(&prefix)) return false;
      if (!Punct(')')) return Fail("expected ')' to close hasPrefix");
      *out = absl::StrCat("($", key, " starts with ", prefix, ")");
      return true;
    }
    SkipSpace();
    if (text_.substr(pos_, 11) == "attributes:") {
      std::string key;
      if (!Attribute(&key, ':')) return false;
      *out = absl::StrCat("exists($", key, ")");
      return true;
    }
    std::string key, value;
    if (!Attribute(&key, '.')) return false;
    SkipSpace();
    bool negate = false;
    if (text_.substr(pos_, 2) == "!=") {
      negate = true;
      pos_ += 2;
    } else if (pos_ < text_.size() && text_[pos_] == '=') {
      ++pos_;
    } else {
      return Fail("expected '=' or '!=' after the attribute");
    }
    if (!String(&value)) return false;
    std::string eq = absl::StrCat("($", key, " == ", value, ")");
    *out = negate ? absl::StrCat("!", eq) : eq;
    return true;
  }

  // attributes<sep>KEY; `key` becomes the jsonpath member accessor ."...".
  bool Attribute(std::string* key, char sep) {
    SkipSpace();
    if (text_.substr(pos_, 10) != "attributes" || pos_ + 10 >= text_.size() ||
        text_[pos_ + 10] != sep) {
      return Fail(sep == ':' ? "expected attributes:KEY"
                             : "expected attributes.KEY, hasPrefix(...), NOT or '('");
    }
    pos_ += 11;
    std::string name;
    if (pos_ < text_.size() && text_[pos_] == '"') {
      if (!QuotedText(&name)) return false;
    } else {
      size_t start = pos_;
      while (pos_ < text_.size() && (absl::ascii_isalnum(text_[pos_]) || text_[pos_] == '_' ||
                                     text_[pos_] == '-' || text_[pos_] == '.')) {
        ++pos_;
      }
      name = std::string(text_.substr(start, pos_ - start));
    }
    if (name.empty()) return Fail("expected an attribute name");
    *key = absl::StrCat(".", JsonString(name));
    return true;
  }

  // A "string" literal, as a jsonpath string.
  bool String(std::string* out) {
    SkipSpace();
    if (pos_ >= text_.size() || text_[pos_] != '"') return Fail("expected a \"quoted string\"");
    std::string value;
    if (!QuotedText(&value)) return false;
    *out = JsonString(value);
    return true;
  }

  // "...": \" and \\ escape; the closing quote ends it.
  bool QuotedText(std::string* out) {
    ++pos_;  // the opening quote
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == '"') return true;
      if (c == '\\') {
        if (pos_ >= text_.size()) break;
        c = text_[pos_++];
        if (c != '"' && c != '\\') return Fail("only \\\" and \\\\ are escapes in a string");
      }
      out->push_back(c);
    }
    return Fail("unterminated string");
  }

  // JSON string syntax, which jsonpath shares.
  static std::string JsonString(absl::string_view s) {
    std::string out = "\"";
    for (unsigned char c : s) {
      if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else if (c < 0x20) {
        out += absl::StrFormat("\\u%04x", c);
      } else {
        out.push_back(static_cast<char>(c));
      }
    }
    out.push_back('"');
    return out;
  }

  absl::string_view text_;
  size_t pos_ = 0;
  absl::Status error_;
};

}  // namespace

absl::StatusOr<std::string> CompileFilter(absl::string_view filter) {
  if (absl::StripAsciiWhitespace(filter).empty()) return std::string();
  if (filter.size() > kMaxFilterLength) {
    return absl::InvalidArgumentError(absl::StrCat("subscription.filter: at most ",
                                                   kMaxFilterLength, " characters; got ",
                                                   filter.size()));
  }
  if (filter.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("subscription.filter: must not contain NUL bytes");
  }
  return Parser(filter).Parse();
}

}  // namespace pgbus::bus
