#include "service/config/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace pgbus::config {
namespace {

TEST(Config, DefaultsWhenNothingIsSet) {
  auto c = Load({}, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:50051");
  EXPECT_EQ(c->workers, 8);
  EXPECT_EQ(c->inline_payload_limit, 256 * 1024);
  EXPECT_FALSE(c->dev_mode);  // authentication is on unless asked otherwise
}

TEST(Config, BooleanFlagsAndTlsSettings) {
  auto c = Load({"--dev-mode", "--workers", "2"}, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->dev_mode);
  EXPECT_EQ(c->workers, 2);
  c = Load({"--dev-mode", "--dev-mode=false"}, {{"PGBUS_DEV_MODE", "true"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->dev_mode);
  EXPECT_EQ(Load({"--dev-mode=maybe"}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--tls-cert-file", "a.pem"},
           {"--tls-key-file", "a.key"},
           {"--tls-client-ca-file", "ca.pem"},
           {"--tls-cert-file", "a.pem", "--tls-key-file", "a.key",
            "--tls-client-tenant-from-cert"}}) {
    auto bad = Load(args, {});
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << args[0];
    EXPECT_NE(bad.status().message().find("tls_"), std::string::npos) << bad.status();
  }
  EXPECT_TRUE(Load({"--tls-cert-file", "a.pem", "--tls-key-file", "a.key",
                    "--tls-client-ca-file", "ca.pem", "--tls-client-tenant-from-cert"},
                   {})
                  .ok());
}

TEST(Config, FlagsBeatEnvironmentBeatsFile) {
  std::string path = ::testing::TempDir() + "/pgbus.conf";
  std::ofstream(path) << "# comment\nworkers = 3\npoll_interval_ms = 250\nlisten=0.0.0.0:1\n";
  auto c = Load({"--config", path, "--listen=127.0.0.1:9"},
                {{"PGBUS_WORKERS", "5"}, {"PGBUS_DATABASE_URL", "host=/x"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:9");     // flag
  EXPECT_EQ(c->workers, 5);                // environment over file
  EXPECT_EQ(c->poll_interval_ms, 250);     // file
  EXPECT_EQ(c->database_url, "host=/x");   // environment
}

TEST(Config, ErrorsNameTheSetting) {
  struct Case {
    const char* desc;
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    const char* mention;
  } cases[] = {
      {"non-numeric", {"--workers", "many"}, {}, "workers"},
      {"out of range", {}, {{"PGBUS_POLL_INTERVAL_MS", "1"}}, "poll_interval_ms"},
      {"unknown flag", {"--nope", "1"}, {}, "--nope"},
      {"secret as flag", {"--database-url", "host=/x"}, {}, "PGBUS_DATABASE_URL"},
      {"missing value", {"--workers"}, {}, "--workers"},
      {"inline limit too large", {"--inline-payload-limit", "99999999"}, {}, "inline_payload_limit"},
  };
  for (const auto& c : cases) {
    auto r = Load(c.args, c.env);
    ASSERT_FALSE(r.ok()) << c.desc;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.desc;
    EXPECT_NE(r.status().message().find(c.mention), absl::string_view::npos)
        << c.desc << ": " << r.status();
  }
}

TEST(Config, BadFileLineIsReportedWithItsNumber) {
  std::string path = ::testing::TempDir() + "/bad.conf";
  std::ofstream(path) << "workers = 2\nnot a setting\n";
  auto r = Load({"--config", path}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(":2:"), absl::string_view::npos) << r.status();
}

}  // namespace
}  // namespace pgbus::config
