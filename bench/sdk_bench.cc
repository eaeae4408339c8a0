// The C++ client's figures for `make bench` (the reference of the SDK
// table): N messages of 1 KiB through pgbus::Publisher (batched), then
// received through pgbus::Receiver and acked without waiting (AckAsync). The Python, Go and
// TypeScript SDKs have the same program (sdk/<language>/bench*), run by
// pgbus_bench against the same server in the same run.
//
//   PGBUS_SERVER=host:port PGBUS_API_KEY=... pgbus_sdk_bench N
//
// Prints `publish_msgs_per_s=X consume_msgs_per_s=Y`.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "pgbus/publisher.h"
#include "pgbus/receiver.h"

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 10000;
  auto client = pgbus::Client::Connect();
  const std::string topic = absl::StrCat(
      "sdk-bench-cpp-", std::chrono::steady_clock::now().time_since_epoch().count());
  if (!client->CreateTopic(topic).ok() ||
      !client->CreateSubscription(topic + "-s", topic).ok()) {
    std::fprintf(stderr, "cannot create %s\n", topic.c_str());
    return 1;
  }
  pgbus::v1::PublishMessage message;
  message.set_payload(std::string(1024, 'x'));
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  {
    pgbus::Publisher publisher(client.get(), topic);
    std::vector<std::future<absl::StatusOr<std::string>>> ids;
    ids.reserve(n);
    for (int i = 0; i < n; ++i) ids.push_back(publisher.Publish(message));
    for (auto& id : ids) {
      if (!id.get().ok()) return 1;
    }
  }
  const double publish =
      n / std::chrono::duration<double>(Clock::now() - start).count();

  // Handlers ack without waiting (AckAsync): the Receiver sends the acks
  // queued meanwhile in one call at a time. The figure ends when every ack
  // is answered.
  absl::Mutex mu;
  std::vector<std::future<absl::Status>> acks;
  acks.reserve(n);
  start = Clock::now();
  pgbus::Receiver receiver(client.get(), topic + "-s", [&](pgbus::Received m) {
    auto f = m.AckAsync();
    absl::MutexLock lock(&mu);
    acks.push_back(std::move(f));
  });
  {
    absl::MutexLock lock(&mu);
    auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return acks.size() >= static_cast<size_t>(n);
    };
    mu.Await(absl::Condition(&all));
  }
  for (auto& f : acks) {
    if (!f.get().ok()) return 1;
  }
  const double consume =
      n / std::chrono::duration<double>(Clock::now() - start).count();
  (void)receiver.Stop();
  std::printf("publish_msgs_per_s=%.0f consume_msgs_per_s=%.0f\n", publish, consume);
  return 0;
}
