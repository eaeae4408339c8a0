// pgbus benchmarks. Each figure is printed beside a reference measured in
// the same run against the same pgbusd, and as a ratio to it; every figure
// is the median of several rounds. Machines are shared and noisy: compare
// ratios, not absolute numbers.
//
//   pgbus_bench --target 127.0.0.1:PORT [--seconds 3] [--rounds 3]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "pgbus/client.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kCallers = 64;
constexpr size_t kPayloadBytes = 1024;
constexpr int kLatencyRate = 1000;  // msg/s

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Runs `call` from kCallers threads for `seconds`; returns calls/s.
template <typename Call>
double Throughput(double seconds, Call call) {
  std::atomic<bool> go{false}, stop{false};
  std::atomic<int64_t> done{0}, failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&] {
      while (!go) std::this_thread::yield();
      while (!stop) {
        if (call()) {
          done++;
        } else {
          failed++;
        }
      }
    });
  }
  auto start = Clock::now();
  go = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed > 0) std::fprintf(stderr, "warning: %ld calls failed\n", static_cast<long>(failed.load()));
  return done / elapsed;
}

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string target;
  double seconds = 3;
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--target") target = argv[i + 1];
    if (flag == "--seconds") seconds = std::stod(argv[i + 1]);
    if (flag == "--rounds") rounds = std::stoi(argv[i + 1]);
  }
  if (target.empty()) {
    std::fprintf(stderr, "usage: pgbus_bench --target host:port [--seconds S] [--rounds N]\n");
    return 2;
  }
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  pgbus::Client client(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);
  std::string topic = absl::StrCat("bench-", NowNanos());
  if (!client.CreateTopic(topic).ok() || !client.CreateSubscription(topic, topic).ok()) {
    std::fprintf(stderr, "cannot create the bench topic\n");
    return 1;
  }
  // Publish throughput has no subscriber draining it; use a topic without
  // subscriptions so the fan-out cost is measured separately below.
  std::string pub_topic = topic + "-pub";
  if (!client.CreateTopic(pub_topic).ok()) return 1;
  const std::string payload(kPayloadBytes, 'x');

  std::vector<double> noop_rps, publish_rps, ratios;
  for (int r = 0; r < rounds; ++r) {
    double noop = Throughput(seconds, [&] {
      grpc::ClientContext ctx;
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      return health->Check(&ctx, req, &resp).ok();
    });
    double pub = Throughput(seconds, [&] { return client.Publish(pub_topic, payload).ok(); });
    noop_rps.push_back(noop);
    publish_rps.push_back(pub);
    ratios.push_back(pub / noop);
    std::fprintf(stderr, "round %d: publish %.0f/s, no-op %.0f/s\n", r + 1, pub, noop);
  }

  // Latency: a paced publisher at kLatencyRate msg/s, one stream
  // receiving and acking; the reference is the no-op call's round trip at
  // the same pace.
  std::vector<double> latencies_ms, noop_ms;
  {
    auto sub = client.Subscribe(topic);
    std::atomic<bool> stop{false};
    std::thread receiver([&] {
      std::vector<std::string> acks;
      auto last_ack = Clock::now();
      while (!stop) {
        auto next = sub->Next(absl::Milliseconds(50));
        if (next.ok() && next->has_value()) {
          const auto& m = **next;
          int64_t sent = 0;
          auto it = m.message().attributes().find("sent_ns");
          if (it != m.message().attributes().end() && absl::SimpleAtoi(it->second, &sent)) {
            latencies_ms.push_back((NowNanos() - sent) / 1e6);
          }
          acks.push_back(m.ack_id());
        }
        if (!acks.empty() && (acks.size() >= 100 || Clock::now() - last_ack > std::chrono::milliseconds(100))) {
          (void)client.Ack(topic, acks);
          acks.clear();
          last_ack = Clock::now();
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const int total = static_cast<int>(kLatencyRate * seconds * 2);
    const auto interval = std::chrono::nanoseconds(1000000000 / kLatencyRate);
    // Publishes are paced from several threads (a Publish takes longer than
    // the interval); each thread owns every Nth tick.
    constexpr int kPacers = 16;
    auto start = Clock::now();
    std::vector<std::thread> pacers;
    for (int p = 0; p < kPacers; ++p) {
      pacers.emplace_back([&, p] {
        for (int i = p; i < total; i += kPacers) {
          std::this_thread::sleep_until(start + interval * i);
          pgbus::v1::PublishMessage m;
          m.set_payload(payload);
          (*m.mutable_attributes())["sent_ns"] = std::to_string(NowNanos());
          std::vector<pgbus::v1::PublishMessage> one;
          one.push_back(std::move(m));
          (void)client.Publish(topic, std::move(one));
        }
      });
    }
    for (auto& t : pacers) t.join();
    std::this_thread::sleep_for(std::chrono::seconds(2));  // drain
    stop = true;
    receiver.join();
    // Reference: no-op round trips at the same pace.
    start = Clock::now();
    for (int i = 0; i < total / 2; ++i) {
      std::this_thread::sleep_until(start + interval * i);
      auto t0 = Clock::now();
      grpc::ClientContext ctx;
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      (void)health->Check(&ctx, req, &resp);
      noop_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  }
  if (latencies_ms.empty()) {
    std::fprintf(stderr, "no message was received in the latency run\n");
    return 1;
  }

  std::printf("\npgbus bench: %d rounds of %.0f s, medians; 1 KiB payloads\n\n", rounds, seconds);
  std::printf("| figure | pgbus | reference (same run) | ratio |\n|---|---|---|---|\n");
  std::printf("| Publish RPCs/s, 64 concurrent callers, 1 message each | %.0f | %.0f (no-op unary gRPC call) | %.3f |\n",
              Median(publish_rps), Median(noop_rps), Median(ratios));
  double p50 = Percentile(latencies_ms, 0.50), p99 = Percentile(latencies_ms, 0.99);
  double r50 = Percentile(noop_ms, 0.50), r99 = Percentile(noop_ms, 0.99);
  std::printf("| publish -> receive latency p50 at %d msg/s (ms) | %.2f | %.2f (no-op round trip) | %.1f |\n",
              kLatencyRate, p50, r50, p50 / r50);
  std::printf("| publish -> receive latency p99 at %d msg/s (ms) | %.2f | %.2f (no-op round trip) | %.1f |\n",
              kLatencyRate, p99, r99, p99 / r99);
  std::printf("\n(%zu messages received in the latency run)\n", latencies_ms.size());
  return 0;
}
