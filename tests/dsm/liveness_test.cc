// PeerLiveness: when heartbeats go out, and which silent peer is blamed.
#include "node/liveness.h"

#include <gtest/gtest.h>

#include "error.h"

namespace aggvm::dsm {
namespace {

using namespace std::chrono_literals;
using Clock = PeerLiveness::Clock;

const Clock::time_point t0{};

TEST(Liveness, NobodyIsSilentWithinTheTimeout) {
  PeerLiveness l(0, 3, 1000ms, t0);
  EXPECT_FALSE(l.silent_peer(t0 + 1000ms, {}));
}

TEST(Liveness, APeerSilentForLongerThanTheTimeoutIsBlamed) {
  PeerLiveness l(0, 3, 1000ms, t0);
  l.heard(1, t0 + 900ms);
  const auto silent = l.silent_peer(t0 + 1001ms, {});
  ASSERT_TRUE(silent);
  EXPECT_EQ(*silent, 2);
  EXPECT_EQ(l.silence(2, t0 + 1001ms), 1001ms);
  EXPECT_FALSE(l.silent_peer(t0 + 1001ms, NodeSet().set(2))) << "a leaving peer is never blamed";
}

TEST(Liveness, TheLongestSilentPeerIsBlamedFirst) {
  PeerLiveness l(1, 4, 1000ms, t0);
  l.heard(0, t0 + 500ms);
  l.heard(3, t0 + 200ms);
  l.heard(2, t0 + 700ms);
  const auto silent = l.silent_peer(t0 + 2000ms, {});
  ASSERT_TRUE(silent);
  EXPECT_EQ(*silent, 3);
}

TEST(Liveness, SelfIsNeverSilent) {
  PeerLiveness l(2, 3, 100ms, t0);
  l.heard(0, t0 + 10s);
  l.heard(1, t0 + 10s);
  EXPECT_FALSE(l.silent_peer(t0 + 10s, {}));
}

TEST(Liveness, AnOlderFrameDoesNotMoveTheLastHeardBack) {
  PeerLiveness l(0, 2, 1000ms, t0);
  l.heard(1, t0 + 800ms);
  l.heard(1, t0 + 100ms);  // read late from another endpoint
  EXPECT_FALSE(l.silent_peer(t0 + 1700ms, {}));
}

TEST(Liveness, HeartbeatsGoOutSeveralTimesPerTimeout) {
  PeerLiveness l(0, 2, 1000ms, t0);
  EXPECT_EQ(l.interval(), 250ms);
  EXPECT_TRUE(l.beat_due(t0));
  EXPECT_FALSE(l.beat_due(t0 + 249ms));
  EXPECT_TRUE(l.beat_due(t0 + 250ms));
  EXPECT_FALSE(l.beat_due(t0 + 251ms));
  int beats = 0;
  for (auto t = t0 + 260ms; t < t0 + 1260ms; t += 10ms) beats += l.beat_due(t);
  EXPECT_EQ(beats, PeerLiveness::kBeatsPerTimeout);
}

TEST(Liveness, BadConfigurationIsRefused) {
  EXPECT_THROW(PeerLiveness(0, 2, 0ms, t0), DsmError);
  EXPECT_THROW(PeerLiveness(2, 2, 100ms, t0), DsmError);
}

}  // namespace
}  // namespace aggvm::dsm
