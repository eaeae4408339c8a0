// The Dispatcher against a fake delivery store and sink (issue 13): credit,
// wake-ups, what a closed or shutting-down stream gives back. Each negative
// ("no claim happened") is read after the synchronous call that would have
// started one returned, not after a timed wait. (Against Postgres:
// subscribe_test.)
#include "service/bus/dispatcher.h"

#include <gtest/gtest.h>

#include <deque>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "service/bus/ack_id.h"

namespace pgbus::bus {
namespace {

constexpr char kTenant[] = "tenant";
constexpr char kTopic[] = "orders";
constexpr char kSubscription[] = "billing";

// Hands out the ids it holds, oldest first; records what comes back.
class FakeDeliveryStore : public store::DeliveryStore {
 public:
  void Add(int n, int64_t size = 10) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < n; ++i) ready_.push_back({next_id_++, size});
  }
  int claims() {
    absl::MutexLock lock(&mu_);
    return claims_;
  }
  int claims_done() {
    absl::MutexLock lock(&mu_);
    return claims_done_;
  }
  int dead_letter_calls() {
    absl::MutexLock lock(&mu_);
    return dead_letter_calls_;
  }
  std::vector<model::LeaseKey> released() {
    absl::MutexLock lock(&mu_);
    return released_;
  }
  // The next Claim waits in the store until Unblock().
  void BlockNextClaim() {
    absl::MutexLock lock(&mu_);
    block_ = true;
  }
  void WaitUntilClaimBlocked() { claim_blocked_.WaitForNotification(); }
  void Unblock() { unblock_.Notify(); }
  void FailClaimsWith(absl::Status st) {
    absl::MutexLock lock(&mu_);
    fail_ = std::move(st);
  }

  absl::StatusOr<std::vector<model::Delivery>> Claim(const std::string&, const std::string&,
                                                     int64_t lease, int max_messages,
                                                     int64_t max_bytes, bool first_may_exceed,
                                                     absl::Duration ack_deadline) override {
    bool block;
    {
      absl::MutexLock lock(&mu_);
      ++claims_;
      block = block_;
      block_ = false;
    }
    if (block) {
      claim_blocked_.Notify();
      unblock_.WaitForNotification();
    }
    absl::MutexLock lock(&mu_);
    ++claims_done_;
    if (!fail_.ok()) return fail_;
    std::vector<model::Delivery> out;
    int64_t bytes = 0;
    while (!ready_.empty() && static_cast<int>(out.size()) < max_messages) {
      auto [id, size] = ready_.front();
      if (bytes + size > max_bytes && !(out.empty() && first_may_exceed)) break;
      ready_.pop_front();
      bytes += size;
      model::Delivery d;
      d.message.id = id;
      d.message.size = size;
      d.attempt = 1;
      d.lease = lease;
      d.lease_expiry = absl::Now() + ack_deadline;
      out.push_back(std::move(d));
    }
    return out;
  }
  absl::StatusOr<std::vector<bool>> ReleaseLeases(const std::string&, const std::string&,
                                                  const std::string&,
                                                  const std::vector<model::LeaseKey>& keys) override {
    absl::MutexLock lock(&mu_);
    released_.insert(released_.end(), keys.begin(), keys.end());
    return std::vector<bool>(keys.size(), true);
  }
  absl::StatusOr<DeadLettered> DeadLetter(const std::string&, const std::string&, int) override {
    absl::MutexLock lock(&mu_);
    ++dead_letter_calls_;
    return DeadLettered{"dead", 0};
  }
  // No poll runs here (DispatcherTest's is an hour), so no lookup either.
  absl::StatusOr<std::vector<std::optional<absl::Time>>> HeldLeases(
      const std::string&, const std::string&, const std::vector<model::LeaseKey>&) override {
    return absl::UnimplementedError("the test's Dispatcher does not poll");
  }
  absl::StatusOr<std::vector<bool>> Ack(const std::string&, const std::string&,
                                        const std::vector<model::LeaseKey>&) override {
    return absl::UnimplementedError("the Dispatcher does not ack");
  }
  absl::StatusOr<std::vector<bool>> ModifyAckDeadline(const std::string&, const std::string&,
                                                      const std::vector<model::LeaseKey>&,
                                                      absl::Duration, const std::string&) override {
    return absl::UnimplementedError("the Dispatcher does not change deadlines");
  }

 private:
  absl::Mutex mu_;
  std::deque<std::pair<int64_t, int64_t>> ready_ ABSL_GUARDED_BY(mu_);  // id, size
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int claims_ ABSL_GUARDED_BY(mu_) = 0;
  int claims_done_ ABSL_GUARDED_BY(mu_) = 0;
  int dead_letter_calls_ ABSL_GUARDED_BY(mu_) = 0;
  bool block_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status fail_ ABSL_GUARDED_BY(mu_);
  std::vector<model::LeaseKey> released_ ABSL_GUARDED_BY(mu_);
  absl::Notification claim_blocked_, unblock_;
};

// Records batches; the test says when a send has completed (OnSent).
class FakeSink : public StreamSink {
 public:
  bool Send(std::vector<model::Delivery> batch) override {
    absl::MutexLock lock(&mu_);
    if (ended_) return false;
    batches_.push_back(std::move(batch));
    return true;
  }
  void End(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    if (!ended_) end_status_ = status;
    ended_ = true;
  }
  // Waits (30 s at most) until `n` batches were sent; returns them.
  std::vector<std::vector<model::Delivery>> WaitForBatches(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return batches_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(30));
    return batches_;
  }
  std::optional<absl::Status> WaitForEnd() {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&ended_), absl::Seconds(30));
    if (!ended_) return std::nullopt;
    return end_status_;
  }
  size_t batches() {
    absl::MutexLock lock(&mu_);
    return batches_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<std::vector<model::Delivery>> batches_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
};

// Each delivery goes out with the ack id that names it.
void ExpectAckIdsNameTheirLeases(const std::vector<model::Delivery>& batch) {
  for (const auto& d : batch) {
    auto key = DecodeAckId(d.ack_id);
    ASSERT_TRUE(key.ok()) << key.status();
    EXPECT_TRUE(*key == (model::LeaseKey{d.message.id, d.attempt, d.lease}));
  }
}

class DispatcherTest : public ::testing::Test {
 protected:
  // No poll: every claim below is started by the test.
  DispatcherTest()
      : pool_("test", 2, 100),
        dispatcher_(&store_, &pool_, Dispatcher::Options{absl::Hours(1), 100}) {}

  std::shared_ptr<Stream> Open(int64_t max_outstanding = 1000, bool dead_letters = false) {
    StreamOptions o;
    o.tenant = kTenant;
    o.subscription = kSubscription;
    o.topic = kTopic;
    o.max_outstanding_messages = max_outstanding;
    o.dead_letters = dead_letters;
    auto stream = dispatcher_.Open(o, sink_);
    EXPECT_TRUE(stream.ok()) << stream.status();
    if (!stream.ok()) return nullptr;
    (*stream)->Start();
    return *stream;
  }

  static std::vector<model::LeaseKey> Keys(const std::vector<model::Delivery>& batch) {
    std::vector<model::LeaseKey> keys;
    for (const auto& d : batch) keys.push_back({d.message.id, d.attempt, d.lease});
    return keys;
  }

  FakeDeliveryStore store_;
  WorkerPool pool_;
  std::shared_ptr<FakeSink> sink_ = std::make_shared<FakeSink>();
  Dispatcher dispatcher_;
};

TEST_F(DispatcherTest, NeverLeasesMoreThanItsCreditAndClaimsWhenAcksReturnIt) {
  store_.Add(10);
  auto stream = Open(/*max_outstanding=*/3);
  auto batches = sink_->WaitForBatches(1);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].size(), 3u);
  ExpectAckIdsNameTheirLeases(batches[0]);
  stream->OnSent();  // no credit left: no claim starts
  EXPECT_EQ(store_.claims(), 1);
  EXPECT_EQ(dispatcher_.Count().outstanding, 3);

  // Two acked on this replica: two more.
  std::vector<model::LeaseKey> acked = Keys(batches[0]);
  acked.pop_back();
  dispatcher_.LeasesChanged(acked, {true, true}, std::nullopt);
  batches = sink_->WaitForBatches(2);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1].size(), 2u);
  EXPECT_EQ(batches[1][0].message.id, 4);
  EXPECT_EQ(dispatcher_.Count().outstanding, 3);

  // An extended lease keeps its credit.
  dispatcher_.LeasesChanged({Keys(batches[1])[0]}, {true}, absl::Now() + absl::Minutes(1));
  stream->OnSent();
  EXPECT_EQ(store_.claims(), 2);
}

TEST_F(DispatcherTest, APublishToItsTopicWakesItAndOthersDoNot) {
  auto stream = Open();
  // Nothing ready: the first claim comes back empty and the stream waits.
  for (int i = 0; i < 3000 && store_.claims_done() < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(store_.claims_done(), 1);
  store_.Add(2);
  dispatcher_.Wake({model::TopicKey{kTenant, "other-topic"}, model::TopicKey{"other", kTopic}});
  EXPECT_EQ(store_.claims(), 1) << "a publish elsewhere claimed";
  dispatcher_.Wake({model::TopicKey{kTenant, kTopic}});
  auto batches = sink_->WaitForBatches(1);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].size(), 2u);
}

TEST_F(DispatcherTest, AFullBatchIsFollowedByAnotherClaimOnceSent) {
  store_.Add(150);  // more than a claim takes (max_claim_batch 100)
  auto stream = Open();
  auto batches = sink_->WaitForBatches(1);
  EXPECT_EQ(batches[0].size(), 100u);
  stream->OnSent();
  batches = sink_->WaitForBatches(2);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1].size(), 50u);
  stream->OnSent();  // fewer than asked for: drained, no claim for nothing
  EXPECT_EQ(store_.claims(), 2);
}

TEST_F(DispatcherTest, WhatAClosedStreamClaimedIsGivenBack) {
  store_.Add(4);
  store_.BlockNextClaim();
  auto stream = Open();
  store_.WaitUntilClaimBlocked();
  stream->Close();  // the client went away while the claim ran
  store_.Unblock();
  for (int i = 0; i < 3000 && store_.released().size() < 4; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(store_.released().size(), 4u);
  EXPECT_EQ(sink_->batches(), 0u);
}

TEST_F(DispatcherTest, ShutdownGivesBackWhatStreamsHoldEndsThemAndRefusesNewOnes) {
  store_.Add(3);
  auto stream = Open();
  auto batches = sink_->WaitForBatches(1);
  ASSERT_EQ(batches[0].size(), 3u);
  dispatcher_.Shutdown(absl::UnavailableError("bye"));
  std::vector<model::LeaseKey> released = store_.released();
  EXPECT_EQ(released.size(), 3u);
  for (const auto& key : Keys(batches[0])) {
    EXPECT_NE(std::find(released.begin(), released.end(), key), released.end());
  }
  auto end = sink_->WaitForEnd();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->code(), absl::StatusCode::kUnavailable);
  StreamOptions o;
  o.tenant = kTenant;
  o.subscription = kSubscription;
  o.topic = kTopic;
  EXPECT_EQ(dispatcher_.Open(o, std::make_shared<FakeSink>()).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(DispatcherTest, ASubscriptionThatIsGoneEndsTheStreamWithNotFound) {
  store_.FailClaimsWith(absl::NotFoundError("no such subscription"));
  auto stream = Open();
  auto end = sink_->WaitForEnd();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->code(), absl::StatusCode::kNotFound);
}

TEST_F(DispatcherTest, DeadLettersMoveBeforeEachClaimWhenTheSubscriptionHasThem) {
  store_.Add(1);
  auto stream = Open(1000, /*dead_letters=*/true);
  sink_->WaitForBatches(1);
  EXPECT_EQ(store_.dead_letter_calls(), store_.claims());
  EXPECT_EQ(store_.dead_letter_calls(), 1);
}

// Hand-offs (Offer, then Committed): what a group commit leased to an offer.
model::HandedOff Leased(const model::LeaseOffer& offer, std::vector<int64_t> ids, bool complete) {
  model::HandedOff h;
  for (int64_t id : ids) {
    model::Delivery d;
    d.message.id = id;
    d.message.size = 10;
    d.attempt = 1;
    d.lease = offer.lease;
    d.lease_expiry = absl::Now() + offer.ack_deadline;
    h.deliveries.push_back(std::move(d));
  }
  h.complete = complete;
  return h;
}

class HandOffTest : public DispatcherTest {
 protected:
  // A stream whose first claim found nothing: idle and drained.
  std::shared_ptr<Stream> OpenDrained(int64_t max_outstanding = 1000) {
    auto stream = Open(max_outstanding);
    for (int i = 0; i < 3000 && store_.claims_done() < 1; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    EXPECT_EQ(store_.claims_done(), 1);
    return stream;
  }
  const std::vector<model::TopicKey> topic_{{kTenant, kTopic}};
};

TEST_F(HandOffTest, AnIdleDrainedStreamTakesWhatTheCommitLeasedWithoutAClaim) {
  auto stream = OpenDrained(/*max_outstanding=*/3);
  EXPECT_TRUE(dispatcher_.Offer({{kTenant, "other-topic"}}).empty());
  std::vector<model::LeaseOffer> offers = dispatcher_.Offer(topic_);
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].lease, stream->lease());
  EXPECT_EQ(offers[0].subscription, kSubscription);
  EXPECT_EQ(offers[0].max_messages, 3);  // its credit
  EXPECT_TRUE(offers[0].first_may_exceed);
  EXPECT_TRUE(dispatcher_.Offer(topic_).empty()) << "offered to two commits at once";
  std::vector<model::HandedOff> handed;
  handed.push_back(Leased(offers[0], {7, 8}, /*complete=*/true));
  dispatcher_.Committed(topic_, offers, std::move(handed));
  auto batches = sink_->WaitForBatches(1);
  ASSERT_EQ(batches.size(), 1u);
  ASSERT_EQ(batches[0].size(), 2u);
  ExpectAckIdsNameTheirLeases(batches[0]);
  EXPECT_EQ(batches[0][0].lease, stream->lease());
  EXPECT_EQ(dispatcher_.Count().outstanding, 2);
  stream->OnSent();  // it took all the commit made ready: no claim
  EXPECT_EQ(store_.claims(), 1);
  // Its credit is what is left; an ack of it claims nothing (nothing is
  // ready that the stream did not take), a nack does.
  offers = dispatcher_.Offer(topic_);
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].max_messages, 1);
  EXPECT_FALSE(offers[0].first_may_exceed);
  dispatcher_.Committed(topic_, offers, {Leased(offers[0], {}, true)});
  dispatcher_.LeasesChanged({Keys(batches[0])[0]}, {true}, std::nullopt);
  EXPECT_EQ(store_.claims(), 1);
  dispatcher_.LeasesChanged({Keys(batches[0])[1]}, {true}, std::nullopt, /*ready_again=*/true);
  for (int i = 0; i < 3000 && store_.claims_done() < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(store_.claims_done(), 2);
}

TEST_F(HandOffTest, ReadyMessagesTheOfferDidNotTakeAreClaimedAfterTheSend) {
  auto stream = OpenDrained();
  std::vector<model::LeaseOffer> offers = dispatcher_.Offer(topic_);
  ASSERT_EQ(offers.size(), 1u);
  store_.Add(2);  // what the commit left ready (an ordering key, say)
  dispatcher_.Committed(topic_, offers, {Leased(offers[0], {100}, /*complete=*/false)});
  auto batches = sink_->WaitForBatches(1);
  ASSERT_EQ(batches[0].size(), 1u);
  stream->OnSent();
  batches = sink_->WaitForBatches(2);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1].size(), 2u);
}

TEST_F(HandOffTest, AWakeWhileOfferedClaimsOnceTheHandOffIsSent) {
  auto stream = OpenDrained();
  std::vector<model::LeaseOffer> offers = dispatcher_.Offer(topic_);
  ASSERT_EQ(offers.size(), 1u);
  store_.Add(1);  // another replica's publish, say
  dispatcher_.Wake(topic_);
  EXPECT_EQ(store_.claims(), 1) << "claimed while offered to a commit";
  dispatcher_.Committed(topic_, offers, {Leased(offers[0], {100}, true)});
  sink_->WaitForBatches(1);
  stream->OnSent();
  auto batches = sink_->WaitForBatches(2);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[1][0].message.id, 1);
}

// The streams of one subscription share the hand-offs: the least loaded
// takes the offer, equals in turn.
TEST_F(HandOffTest, StreamsOfASubscriptionTakeTurns) {
  auto a = Open();
  auto b = Open();
  for (int i = 0; i < 3000 && store_.claims_done() < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(store_.claims_done(), 2);  // both drained
  std::vector<int64_t> takers;
  int64_t next_id = 1;
  auto commit_one = [&] {
    std::vector<model::LeaseOffer> offers = dispatcher_.Offer(topic_);
    EXPECT_EQ(offers.size(), 1u) << "one offer a subscription";
    if (offers.empty()) return model::LeaseKey{};
    takers.push_back(offers[0].lease);
    dispatcher_.Committed(topic_, offers, {Leased(offers[0], {next_id}, true)});
    return model::LeaseKey{next_id++, 1, offers[0].lease};
  };
  // The one holding a message is passed over.
  model::LeaseKey first = commit_one();
  model::LeaseKey second = commit_one();
  EXPECT_NE(takers[0], takers[1]);
  // Equally loaded, they alternate.
  dispatcher_.LeasesChanged({first, second}, {true, true}, std::nullopt);
  for (int round = 0; round < 4; ++round) {
    model::LeaseKey key = commit_one();
    dispatcher_.LeasesChanged({key}, {true}, std::nullopt);
  }
  ASSERT_EQ(takers.size(), 6u);
  for (size_t i = 3; i < takers.size(); ++i) EXPECT_NE(takers[i], takers[i - 1]) << i;
  EXPECT_EQ(store_.claims(), 2);
}

TEST_F(HandOffTest, WhatAStreamClosedDuringItsCommitWasLeasedIsGivenBack) {
  auto stream = OpenDrained();
  std::vector<model::LeaseOffer> offers = dispatcher_.Offer(topic_);
  ASSERT_EQ(offers.size(), 1u);
  stream->Close();  // the client went away while the commit ran
  dispatcher_.Committed(topic_, offers, {Leased(offers[0], {5, 6, 7}, true)});
  for (int i = 0; i < 3000 && store_.released().size() < 3; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(store_.released().size(), 3u);
  EXPECT_EQ(sink_->batches(), 0u);
}

}  // namespace
}  // namespace pgbus::bus
