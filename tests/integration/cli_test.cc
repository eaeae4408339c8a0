// The pgbus CLI as a user runs it: a real process against a real pgbusd.
// (Payload upload and retrieval through the CLI: payload_test.cc.)
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/harness.h"

extern char** environ;

namespace pgbus {
namespace {

using testing::CountAsOwner;
using testing::Pgbusd;

// Runs the CLI to completion; returns (exit code, stdout and stderr).
std::pair<int, std::string> Cli(const Pgbusd& server, const std::string& args) {
  auto r = testing::RunShell(absl::StrCat(PGBUS_CLI, " --server ", server.target(), " ", args));
  return {r.exit_code, r.out};
}

TEST(Cli, CreatesTopics) {
  Pgbusd server;
  auto [rc, out] = Cli(server, "create-topic files --retention 3600");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "files\n");
  EXPECT_EQ(CountAsOwner(server.tenant(),
                         "SELECT 1 FROM pgbus.topics WHERE name = 'files'"
                         " AND retention = interval '1 hour'"),
            1);
  EXPECT_NE(Cli(server, "topics").second.find("files"), std::string::npos);
  // Again: the server's error, and a failing exit code.
  auto [rc2, out2] = Cli(server, "create-topic files");
  EXPECT_EQ(rc2, 1);
  EXPECT_TRUE(absl::StrContains(out2, "ALREADY_EXISTS")) << out2;
  // Bad usage says how to use it.
  auto [rc3, out3] = Cli(server, "create-topic");
  EXPECT_EQ(rc3, 2);
  EXPECT_TRUE(absl::StrContains(out3, "create-topic T")) << out3;
}

// `pgbus subscribe TOPIC` makes a temporary subscription; however the
// process is told to stop, the subscription goes with it.
TEST(Cli, TheTemporarySubscriptionGoesWhenTheProcessIsStopped) {
  Pgbusd server;
  ASSERT_TRUE(server.Connect()->CreateTopic("t").ok());
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    SCOPED_TRACE(strsignal(sig));
    std::vector<std::string> args = {PGBUS_CLI, "--server", server.target(), "subscribe", "t"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    ASSERT_EQ(posix_spawn(&pid, PGBUS_CLI, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    const std::string exists = absl::StrCat(
        "SELECT 1 FROM pgbus.subscriptions WHERE name = 'pgbus-cli-", pid, "'");
    for (int i = 0; i < 200 && CountAsOwner(server.tenant(), exists) == 0; ++i) {
      absl::SleepFor(absl::Milliseconds(25));
    }
    ASSERT_EQ(CountAsOwner(server.tenant(), exists), 1) << "the CLI made no subscription";
    ASSERT_EQ(kill(pid, sig), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status)) << "died of the signal instead of cleaning up";
    EXPECT_EQ(CountAsOwner(server.tenant(), exists), 0) << "the subscription outlived the CLI";
  }
}

}  // namespace
}  // namespace pgbus
