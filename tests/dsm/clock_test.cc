// The clock-offset estimate: bounds that hold, zero for a shared clock,
// refusal for clocks that do not keep pace.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "node/clock_estimate.h"

namespace aggvm::dsm {
namespace {

// Probes of a peer whose clock reads ours * rate + offset, with random
// one-way delays (as a busy host gives) in our units.
std::vector<ClockProbe> probes_of(int64_t offset, double rate, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> delay(500, 200'000);
  std::vector<ClockProbe> out;
  int64_t now = 1'000'000'000;
  for (int i = 0; i < n; ++i) {
    const int64_t sent = now;
    const int64_t at_peer = sent + delay(rng);
    const int64_t received = at_peer + delay(rng);
    out.push_back({sent, static_cast<int64_t>(static_cast<double>(at_peer) * rate) + offset, received});
    now = received + delay(rng);
  }
  return out;
}

TEST(ClockEstimate, SharedClockGivesExactlyZero) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    const auto est = estimate_clock_offset(probes_of(0, 1.0, 16, seed));
    ASSERT_TRUE(est) << "seed " << seed;
    EXPECT_EQ(est->offset, 0) << "seed " << seed;
    EXPECT_LE(est->error, est->best_rtt);
  }
}

TEST(ClockEstimate, OffsetLiesWithinTheReportedError) {
  for (int64_t offset : {-5'000'000'000LL, -7LL, 3'000LL, 123'456'789LL}) {
    for (uint32_t seed = 1; seed <= 20; ++seed) {
      const auto est = estimate_clock_offset(probes_of(offset, 1.0, 16, seed));
      ASSERT_TRUE(est);
      EXPECT_LE(std::llabs(est->offset - offset), est->error) << "offset " << offset << " seed " << seed;
      EXPECT_LE(est->error, est->best_rtt);
      EXPECT_GT(est->best_rtt, 0);
    }
  }
}

TEST(ClockEstimate, MoreProbesNeverLoosenTheBound) {
  const auto all = probes_of(42'000, 1.0, 32, 7);
  const auto few = estimate_clock_offset(std::span(all).first(4));
  const auto many = estimate_clock_offset(all);
  ASSERT_TRUE(few && many);
  EXPECT_LE(many->error, few->error);
}

TEST(ClockEstimate, ClocksAtDifferentRatesAreRefused) {
  // 2% fast over probes ~100 us apart: the intervals cannot all meet.
  EXPECT_FALSE(estimate_clock_offset(probes_of(0, 1.02, 64, 3)));
}

TEST(ClockEstimate, NoProbesOrABackwardClockGiveNothing) {
  EXPECT_FALSE(estimate_clock_offset({}));
  const std::vector<ClockProbe> backward{{100, 50, 90}};
  EXPECT_FALSE(estimate_clock_offset(backward));
}

}  // namespace
}  // namespace aggvm::dsm
