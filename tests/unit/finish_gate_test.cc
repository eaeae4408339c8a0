// FinishGate (service/api/finish_gate.h): the Subscribe reactor's finish
// paths, event by event. A status handed back is what the reactor passes to
// Finish(); nothing handed back means it must not call Finish() yet (or
// ever again).
#include "service/api/finish_gate.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace pgbus::api {
namespace {

using Gate = FinishGate<std::string>;
constexpr std::nullopt_t kNotYet = std::nullopt;

Gate Started() {
  Gate g;
  EXPECT_EQ(g.Started(std::nullopt), kNotYet);
  return g;
}

TEST(FinishGate, AnEndWhileIdleFinishesAtOnceAndOnlyOnce) {
  Gate g = Started();
  EXPECT_EQ(g.End("cancelled"), "cancelled");
  EXPECT_TRUE(g.finished());
  EXPECT_EQ(g.End("later"), kNotYet);
  EXPECT_FALSE(g.StartWrite()) << "no write after the end";
}

TEST(FinishGate, AnEndDuringAWriteWaitsForTheWrite) {
  Gate g = Started();
  ASSERT_TRUE(g.StartWrite());
  EXPECT_EQ(g.End("deleted"), kNotYet);
  EXPECT_EQ(g.End("cancelled"), kNotYet) << "the first status wins";
  EXPECT_EQ(g.WriteDone(), "deleted");
  EXPECT_EQ(g.WriteDone(), kNotYet) << "handed back once";
}

TEST(FinishGate, AWriteThatCompletesWithoutAnEndHandsBackNothing) {
  Gate g = Started();
  ASSERT_TRUE(g.StartWrite());
  EXPECT_EQ(g.WriteDone(), kNotYet);
  EXPECT_FALSE(g.finished());
  ASSERT_TRUE(g.StartWrite()) << "the next write";
}

TEST(FinishGate, AnEndDuringTheStartUpWaitsForIt) {
  Gate g;
  EXPECT_EQ(g.End("cancelled"), kNotYet);
  EXPECT_EQ(g.Started(std::nullopt), "cancelled");
}

TEST(FinishGate, AStartUpThatFailsFinishesWithItsStatus) {
  Gate g;
  EXPECT_EQ(g.Started(std::string("unauthenticated")), "unauthenticated");
  EXPECT_TRUE(g.finished());
  EXPECT_EQ(g.End("cancelled"), kNotYet);
}

TEST(FinishGate, AFailedStartUpAfterACancelKeepsTheCancel) {
  Gate g;
  EXPECT_EQ(g.End("cancelled"), kNotYet);
  EXPECT_EQ(g.Started(std::string("unauthenticated")), "cancelled");
}

// A write that starts before the start-up has completed (the stream's first
// batch, sent from the pool) and an end that arrives meanwhile: Finish waits
// for whichever of the two completes last.
TEST(FinishGate, AnEndWaitsForBothTheStartUpAndAWrite) {
  {
    Gate g;
    ASSERT_TRUE(g.StartWrite());
    EXPECT_EQ(g.End("gone"), kNotYet);
    EXPECT_EQ(g.Started(std::nullopt), kNotYet);
    EXPECT_EQ(g.WriteDone(), "gone");
  }
  {
    Gate g;
    ASSERT_TRUE(g.StartWrite());
    EXPECT_EQ(g.End("gone"), kNotYet);
    EXPECT_EQ(g.WriteDone(), kNotYet);
    EXPECT_EQ(g.Started(std::nullopt), "gone");
  }
}

}  // namespace
}  // namespace pgbus::api
