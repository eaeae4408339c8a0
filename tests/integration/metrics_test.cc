// Prometheus metrics (--metrics-listen): a scrape of /metrics over HTTP
// after real calls shows them counted by method and code, the group
// commit, the claim, the acks, expired leases and dead letters.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <regex>
#include <string>

#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/numbers.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;
using testing::Receive;
using testing::SubscribeWithCredit;

// GET /metrics from 127.0.0.1:port; the body.
std::string Scrape(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

// The value of the sample named exactly `series` (name and labels as
// prometheus-cpp writes them), or -1.
double Sample(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  size_t from = at + series.size() + 2;
  double v;
  return absl::SimpleAtod(text.substr(from, text.find('\n', from) - from), &v) ? v : -1;
}

int MetricsPort(const Pgbusd& server) {
  std::smatch m;
  std::string log = server.Log();
  if (!std::regex_search(log, m, std::regex("event=metrics addr=[0-9.]+:([0-9]+)"))) return 0;
  return std::stoi(m[1]);
}

// pgbusd with metrics on (and `flags`), its metrics port, and a client
// that has created topic "t" with subscription "s".
struct WithSubscription {
  explicit WithSubscription(std::vector<std::string> flags = {})
      : server([&flags] {
          flags.insert(flags.end(), {"--metrics-listen", "127.0.0.1:0"});
          return flags;
        }()),
        port(MetricsPort(server)),
        client(server.Connect()) {
    created = client->CreateTopic("t").ok() && client->CreateSubscription("s", "t").ok();
  }
  Pgbusd server;
  const int port;
  std::unique_ptr<Client> client;
  bool created = false;
};

TEST(Metrics, ScrapeShowsCallsCommitsClaimsAndAcks) {
  WithSubscription w;
  ASSERT_GT(w.port, 0) << w.server.Log();
  ASSERT_TRUE(w.created);
  const int port = w.port;
  auto& client = w.client;
  auto sub = client->Subscribe("s");
  ASSERT_TRUE(client->Publish("t", "one").ok());
  ASSERT_TRUE(client->Publish("t", "two").ok());
  EXPECT_FALSE(client->Publish("missing", "x").ok());
  auto got = Receive(*sub, 2, absl::Seconds(10));
  ASSERT_EQ(got.size(), 2u);
  auto acked = client->Ack("s", {got[0].ack_id(), got[1].ack_id()});
  ASSERT_TRUE(acked.ok());
  auto again = client->Ack("s", {got[0].ack_id()});  // its lease is gone
  ASSERT_TRUE(again.ok());
  sub->Cancel();

  std::string text = "\n" + Scrape(port);
  const std::string publish = "method=\"/pgbus.v1.BusService/Publish\"";
  EXPECT_EQ(Sample(text, "pgbus_rpc_requests_total{code=\"OK\"," + publish + "}"), 2) << text;
  EXPECT_EQ(Sample(text, "pgbus_rpc_requests_total{code=\"NOT_FOUND\"," + publish + "}"), 1);
  EXPECT_EQ(Sample(text, "pgbus_rpc_duration_seconds_count{" + publish + "}"), 3);
  EXPECT_GE(Sample(text, "pgbus_publish_commit_seconds_count"), 2);
  EXPECT_GE(Sample(text, "pgbus_publish_batch_messages_sum"), 2);
  EXPECT_GE(Sample(text, "pgbus_claim_seconds_count"), 1);
  EXPECT_EQ(Sample(text, "pgbus_messages_delivered_total"), 2);
  EXPECT_EQ(Sample(text, "pgbus_leases_settled_total{outcome=\"acked\"}"), 2);
  EXPECT_EQ(Sample(text, "pgbus_leases_settled_total{outcome=\"expired\"}"), 1);
  EXPECT_GE(Sample(text, "pgbus_open_streams"), 0);
  EXPECT_GE(Sample(text, "pgbus_worker_queue_depth"), 0);
}

// A publish committed on this replica reaches its idle streams directly:
// the group commit leases them the deliveries (a hand-off, no claim). The
// NOTIFY that tells the other replicas comes back to this one's LISTEN
// too, and must not make each stream claim for nothing (at 1,000 msg/s a
// third of all claims were those). The poll is slowed to a minute, so
// every claim counted comes from a wake-up: one to start (and one for a
// first message published before that claim is over); each other message
// is handed off.
TEST(Metrics, OwnPublishesAreHandedOffNotClaimedAgainOnTheirNotification) {
  WithSubscription w({"--poll-interval-ms", "60000"});
  ASSERT_GT(w.port, 0) << w.server.Log();
  ASSERT_TRUE(w.created);
  auto& client = w.client;
  auto sub = client->Subscribe("s");
  constexpr int kMessages = 20;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(client->Publish("t", "m" + std::to_string(i)).ok());
    auto got = Receive(*sub, 1, absl::Seconds(10));
    ASSERT_EQ(got.size(), 1u) << "message " << i;
    // Time for the notification to come back and be acted on.
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string text = "\n" + Scrape(w.port);
  EXPECT_EQ(Sample(text, "pgbus_messages_delivered_total"), kMessages) << text;
  const double claims = Sample(text, "pgbus_claim_seconds_count");
  const double handed = Sample(text, "pgbus_messages_handed_off_total");
  EXPECT_GE(handed, kMessages - 1) << text;
  EXPECT_GE(claims, 1) << text;
  EXPECT_LE(claims, 2) << text;
  sub->Cancel();
}

// A message with everything a publisher may set (and an ordering key, or
// not).
v1::PublishMessage Full(const std::string& payload, const std::string& ordering_key = "") {
  v1::PublishMessage m;
  m.set_payload(payload);
  m.set_priority(3);
  m.set_correlation_id("order-7");
  m.set_ordering_key(ordering_key);
  (*m.mutable_attributes())["kind"] = "created";
  (*m.mutable_attributes())["region"] = "eu";
  m.mutable_ttl()->set_seconds(3600);
  return m;
}

// A message a group commit leased straight to an idle stream (a hand-off)
// is the message a claim would have delivered: every field, the attempt,
// an ack id that acks, a nack that makes it claimable again.
TEST(HandOff, DeliversWhatAClaimWould) {
  WithSubscription w({"--poll-interval-ms", "60000"});
  ASSERT_GT(w.port, 0) << w.server.Log();
  ASSERT_TRUE(w.created);
  auto& client = w.client;
  ASSERT_TRUE(client->Publish("t", {Full("claimed")}).ok());  // before the stream: claimed
  auto sub = client->Subscribe("s");
  auto first = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(first.size(), 1u);
  absl::SleepFor(absl::Milliseconds(100));  // the stream is idle, its claim drained
  ASSERT_TRUE(client->Publish("t", {Full("handed")}).ok());
  auto second = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(second.size(), 1u);
  std::string text = "\n" + Scrape(w.port);
  EXPECT_EQ(Sample(text, "pgbus_messages_handed_off_total"), 1) << text;
  EXPECT_EQ(Sample(text, "pgbus_claim_seconds_count"), 1) << text;

  const v1::Message& a = first[0].message();
  const v1::Message& b = second[0].message();
  EXPECT_EQ(b.payload(), "handed");
  EXPECT_NE(a.id(), b.id());
  EXPECT_EQ(second[0].delivery_attempt(), first[0].delivery_attempt());
  EXPECT_EQ(second[0].delivery_attempt(), 1);
  // Every other field as the claim gave it (ids, payloads, digests and
  // times aside).
  v1::Message a_rest = a, b_rest = b;
  for (v1::Message* m : {&a_rest, &b_rest}) {
    m->clear_id();
    m->clear_payload();
    m->clear_sha256();
    m->clear_size();
    m->clear_publish_time();
    m->clear_expire_time();
  }
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(a_rest, b_rest))
      << a_rest.DebugString() << "\n" << b_rest.DebugString();
  EXPECT_EQ(b.attributes().size(), 2u);
  // Counted in flight like a claimed one.
  auto held = client->GetStats("s");
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->in_flight(), 2) << held->DebugString();
  EXPECT_EQ(held->pending(), 0) << held->DebugString();
  EXPECT_EQ(b.sha256().size(), 32u);
  EXPECT_EQ(b.size(), 6);
  EXPECT_TRUE(b.has_publish_time());
  ASSERT_TRUE(b.has_expire_time());
  EXPECT_EQ(b.expire_time().seconds() - b.publish_time().seconds(),
            a.expire_time().seconds() - a.publish_time().seconds());

  // A nack makes it claimable at once: attempt 2, by a claim.
  auto nacked = client->ModifyAckDeadline("s", {second[0].ack_id()}, absl::ZeroDuration());
  ASSERT_TRUE(nacked.ok());
  EXPECT_EQ((*nacked)[0], v1::ACK_STATUS_OK);
  auto again = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].message().id(), b.id());
  EXPECT_EQ(again[0].delivery_attempt(), 2);
  auto acked = client->Ack("s", {first[0].ack_id(), again[0].ack_id()});
  ASSERT_TRUE(acked.ok());
  EXPECT_EQ(*acked, (std::vector<v1::AckStatus>{v1::ACK_STATUS_OK, v1::ACK_STATUS_OK}));
  auto stats = client->GetStats("s");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pending() + stats->in_flight(), 0) << stats->DebugString();
  sub->Cancel();
}

// A hand-off keeps to the stream's credit, and to ordering keys: a
// message with a key is handed off only when it heads its key (the first
// of it in the commit, none earlier unacked), as the claim decides; the
// others wait for the claim that follows the ack of the one before.
TEST(HandOff, KeepsToTheCreditAndToOrderingKeys) {
  WithSubscription w({"--poll-interval-ms", "60000"});
  ASSERT_GT(w.port, 0) << w.server.Log();
  ASSERT_TRUE(w.created);
  auto& client = w.client;
  auto handed_off = [&w] {
    return Sample("\n" + Scrape(w.port), "pgbus_messages_handed_off_total");
  };
  auto sub = SubscribeWithCredit(*client, "s", 2);
  absl::SleepFor(absl::Milliseconds(200));  // its first claim: empty, drained
  ASSERT_TRUE(client->Publish("t", {Full("1"), Full("2"), Full("3"), Full("4"), Full("5")}).ok());
  auto got = Receive(*sub, 5, absl::Seconds(2));
  ASSERT_EQ(got.size(), 2u) << "flow control let more than 2 through";
  EXPECT_EQ(handed_off(), 2);
  ASSERT_TRUE(client->Ack("s", {got[0].ack_id()}).ok());
  auto more = Receive(*sub, 5, absl::Seconds(2));
  ASSERT_EQ(more.size(), 1u) << "one ack frees exactly one slot";
  ASSERT_TRUE(client->Ack("s", {got[1].ack_id(), more[0].ack_id()}).ok());
  auto rest = Receive(*sub, 2, absl::Seconds(5));
  ASSERT_EQ(rest.size(), 2u);
  ASSERT_TRUE(client->Ack("s", {rest[0].ack_id(), rest[1].ack_id()}).ok());
  absl::SleepFor(absl::Milliseconds(100));

  // k1 heads its key and is handed off; k2 waits for k1's ack.
  ASSERT_TRUE(client->Publish("t", {Full("k1", "key"), Full("k2", "key")}).ok());
  auto k1 = Receive(*sub, 2, absl::Seconds(2));
  ASSERT_EQ(k1.size(), 1u) << "k2 went out while k1 was unacked";
  EXPECT_EQ(k1[0].message().payload(), "k1");
  EXPECT_EQ(k1[0].message().ordering_key(), "key");
  EXPECT_EQ(handed_off(), 3);
  ASSERT_TRUE(client->Ack("s", {k1[0].ack_id()}).ok());
  auto k2 = Receive(*sub, 1, absl::Seconds(5));
  ASSERT_EQ(k2.size(), 1u);
  EXPECT_EQ(k2[0].message().payload(), "k2");
  absl::SleepFor(absl::Milliseconds(100));
  // k3, published alone while k2 is unacked: not handed off, not claimed.
  ASSERT_TRUE(client->Publish("t", {Full("k3", "key")}).ok());
  EXPECT_TRUE(Receive(*sub, 1, absl::Seconds(1)).empty()) << "k3 went out while k2 was unacked";
  ASSERT_TRUE(client->Ack("s", {k2[0].ack_id()}).ok());
  auto k3 = Receive(*sub, 1, absl::Seconds(5));
  ASSERT_EQ(k3.size(), 1u);
  EXPECT_EQ(k3[0].message().payload(), "k3");
  ASSERT_TRUE(client->Ack("s", {k3[0].ack_id()}).ok());
  absl::SleepFor(absl::Milliseconds(100));
  // k4, with nothing of its key left: handed off.
  ASSERT_TRUE(client->Publish("t", {Full("k4", "key")}).ok());
  auto k4 = Receive(*sub, 1, absl::Seconds(5));
  ASSERT_EQ(k4.size(), 1u);
  EXPECT_EQ(k4[0].message().payload(), "k4");
  const std::string text = "\n" + Scrape(w.port);
  EXPECT_EQ(Sample(text, "pgbus_messages_handed_off_total"), 4) << text;
  EXPECT_EQ(Sample(text, "pgbus_messages_delivered_total"), 9) << text;
  sub->Cancel();
}

// The poll's lease lookups (bus::Dispatcher): a lease held past two poll
// intervals is counted held; one acked through another replica, gone, and
// its credit brings the next message.
TEST(Metrics, LeaseLookupsCountHeldLeasesAndThoseSettledElsewhere) {
  WithSubscription w({"--poll-interval-ms", "100"});
  ASSERT_GT(w.port, 0) << w.server.Log();
  ASSERT_TRUE(w.created);
  Pgbusd other({}, w.server.tenant());
  auto elsewhere = other.Connect();
  auto sub = SubscribeWithCredit(*w.client, "s", 1);
  ASSERT_TRUE(w.client->Publish("t", "1").ok());
  ASSERT_TRUE(w.client->Publish("t", "2").ok());
  auto first = Receive(*sub, 1, absl::Seconds(10));
  ASSERT_EQ(first.size(), 1u);
  auto sample = [&](const std::string& result) {
    return Sample("\n" + Scrape(w.port), "pgbus_lease_lookups_total{result=\"" + result + "\"}");
  };
  for (int i = 0; i < 200 && sample("held") < 1; ++i) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_GE(sample("held"), 1);
  EXPECT_EQ(sample("gone"), 0);
  auto acked = elsewhere->Ack("s", {first[0].ack_id()});
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ((*acked)[0], v1::ACK_STATUS_OK);
  EXPECT_EQ(Receive(*sub, 1, absl::Seconds(20)).size(), 1u);
  EXPECT_EQ(sample("gone"), 1);
  sub->Cancel();
}

TEST(Metrics, DeadLetteredDeliveriesAreCounted) {
  Pgbusd server({"--metrics-listen", "127.0.0.1:0"});
  const int port = MetricsPort(server);
  ASSERT_GT(port, 0) << server.Log();
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  ASSERT_TRUE(client->CreateTopic("t-dlq").ok());
  {
    grpc::ClientContext ctx;
    v1::CreateSubscriptionRequest req;
    req.mutable_subscription()->set_name("s");
    req.mutable_subscription()->set_topic("t");
    req.mutable_subscription()->set_max_delivery_attempts(2);
    req.mutable_subscription()->set_dead_letter_topic("t-dlq");
    req.mutable_subscription()->mutable_min_backoff()->set_seconds(0);
    v1::CreateSubscriptionResponse resp;
    ASSERT_TRUE(client->admin().CreateSubscription(&ctx, req, &resp).ok());
  }
  ASSERT_TRUE(client->Publish("t", "poison").ok());
  auto sub = client->Subscribe("s");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto got = Receive(*sub, 1, absl::Seconds(10));
    ASSERT_EQ(got.size(), 1u) << "attempt " << attempt;
    ASSERT_TRUE(client->ModifyAckDeadline("s", {got[0].ack_id()}, absl::ZeroDuration()).ok());
  }
  // The stream's next claim moves the exhausted delivery.
  double moved = -1;
  for (absl::Time end = absl::Now() + absl::Seconds(10); absl::Now() < end && moved < 1;
       absl::SleepFor(absl::Milliseconds(50))) {
    moved = Sample("\n" + Scrape(port), "pgbus_leases_settled_total{outcome=\"dead_lettered\"}");
  }
  EXPECT_EQ(moved, 1);
  EXPECT_EQ(Sample("\n" + Scrape(port), "pgbus_leases_settled_total{outcome=\"nacked\"}"), 2);
}

// Backlog per subscription: from one query across tenants on an interval.
// Two tenants' subscriptions, each seen with its own counts, and a deleted
// subscription's series gone at the next sample.
TEST(Metrics, BacklogPerSubscriptionAcrossTenants) {
  Pgbusd server({"--metrics-listen", "127.0.0.1:0", "--metrics-backlog-interval-ms", "1000"});
  Pgbusd other({}, "");  // another tenant's data on the same database
  const int port = MetricsPort(server);
  ASSERT_GT(port, 0) << server.Log();
  auto a = server.Connect();
  auto b = other.Connect();
  ASSERT_TRUE(a->CreateTopic("t").ok());
  ASSERT_TRUE(a->CreateSubscription("s", "t").ok());
  ASSERT_TRUE(a->CreateSubscription("gone", "t").ok());
  ASSERT_TRUE(b->CreateTopic("t").ok());
  ASSERT_TRUE(b->CreateSubscription("s", "t").ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->Publish("t", "a").ok());
  ASSERT_TRUE(b->Publish("t", "b").ok());
  const std::string mine = "pgbus_subscription_ready_messages{subscription=\"s\",tenant=\"" +
                           server.tenant() + "\"}";
  const std::string theirs = "pgbus_subscription_ready_messages{subscription=\"s\",tenant=\"" +
                             other.tenant() + "\"}";
  std::string text;
  for (absl::Time end = absl::Now() + absl::Seconds(10); absl::Now() < end;
       absl::SleepFor(absl::Milliseconds(100))) {
    text = "\n" + Scrape(port);
    if (Sample(text, mine) == 3 && Sample(text, theirs) == 1) break;
  }
  EXPECT_EQ(Sample(text, mine), 3) << text;
  EXPECT_EQ(Sample(text, theirs), 1) << text;
  EXPECT_GE(Sample(text, "pgbus_subscription_oldest_unacked_seconds{subscription=\"s\",tenant=\"" +
                             server.tenant() + "\"}"),
            0);

  grpc::ClientContext ctx;
  v1::DeleteSubscriptionRequest req;
  req.set_name("gone");
  v1::DeleteSubscriptionResponse resp;
  ASSERT_TRUE(a->admin().DeleteSubscription(&ctx, req, &resp).ok());
  const std::string gone = "pgbus_subscription_ready_messages{subscription=\"gone\",tenant=\"" +
                           server.tenant() + "\"}";
  bool removed = false;
  for (absl::Time end = absl::Now() + absl::Seconds(10); absl::Now() < end && !removed;
       absl::SleepFor(absl::Milliseconds(100))) {
    removed = Sample("\n" + Scrape(port), gone) == -1;
  }
  EXPECT_TRUE(removed) << "the deleted subscription's series stayed";
}

}  // namespace
}  // namespace pgbus
