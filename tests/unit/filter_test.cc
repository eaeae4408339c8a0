#include "service/bus/filter.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace pgbus::bus {
namespace {

TEST(Filter, CompilesToJsonpath) {
  EXPECT_EQ(*CompileFilter(""), "");
  EXPECT_EQ(*CompileFilter("  "), "");
  EXPECT_EQ(*CompileFilter("attributes.region = \"eu\""), "($.\"region\" == \"eu\")");
  EXPECT_EQ(*CompileFilter("attributes.region != \"eu\""), "!($.\"region\" == \"eu\")");
  EXPECT_EQ(*CompileFilter("attributes:urgent"), "exists($.\"urgent\")");
  EXPECT_EQ(*CompileFilter("hasPrefix(attributes.kind, \"order.\")"),
            "($.\"kind\" starts with \"order.\")");
  EXPECT_EQ(*CompileFilter("attributes:a AND NOT attributes:b OR attributes:c"),
            "((exists($.\"a\") && !(exists($.\"b\"))) || exists($.\"c\"))");
  EXPECT_EQ(*CompileFilter("attributes:a AND (attributes:b OR attributes:c)"),
            "(exists($.\"a\") && ((exists($.\"b\") || exists($.\"c\"))))");
  // Quotes and backslashes cannot break out of the string.
  EXPECT_EQ(*CompileFilter(R"(attributes."we\"ird" = "a\\b\"c")"),
            R"(($."we\"ird" == "a\\b\"c"))");
}

TEST(Filter, ErrorsNameThePosition) {
  for (auto [filter, where] : std::vector<std::pair<std::string, std::string>>{
           {"a = b", "position 0"},
           {"attributes.region == \"eu\"", "position 19"},
           {"attributes.region = eu", "position 20"},
           {"attributes.region = \"eu", "position 23"},
           {"attributes:a AND", "position 16"},
           {"(attributes:a", "position 13"},
           {"attributes:a attributes:b", "position 13"},
           {"hasPrefix(attributes.k \"x\")", "position 23"}}) {
    auto st = CompileFilter(filter).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << filter;
    EXPECT_TRUE(absl::StrContains(st.message(), where)) << filter << ": " << st;
  }
  EXPECT_FALSE(CompileFilter(std::string(5000, ' ') + "attributes:a").ok());
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "(";
  EXPECT_FALSE(CompileFilter(deep + "attributes:a").ok());
}

}  // namespace
}  // namespace pgbus::bus
