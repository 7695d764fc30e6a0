// Fault statistics as the scheduler reads them: per thread, per granule of
// guest memory, and the homes as ranges.
#include <gtest/gtest.h>

#include "node/stats.h"
#include "protocol/home_map.h"

namespace aggvm::dsm {
namespace {

constexpr uint64_t kGranule = AGGVM_DSM_FAULT_GRANULE;

TEST(FaultStatistics, FaultsAreCountedPerThreadAndGranule) {
  FaultStatistics stats;
  stats.record(7, 0x1000, Access::kRead, 1, false, 5000);
  stats.record(7, kGranule - 1, Access::kWrite, 1, false, 5000);
  stats.record(7, 3 * kGranule + 0x5000, Access::kWrite, 0, true, 1000);
  stats.record(9, kGranule, Access::kRead, 0, true, 1000);

  const auto seven = stats.thread_granules(7);
  ASSERT_EQ(seven.size(), 2u);
  EXPECT_EQ(seven[0].gpa, 0u);
  EXPECT_EQ(seven[0].faults, 2u);
  EXPECT_EQ(seven[1].gpa, 3 * kGranule);
  EXPECT_EQ(seven[1].faults, 1u);

  const auto nine = stats.thread_granules(9);
  ASSERT_EQ(nine.size(), 1u);
  EXPECT_EQ(nine[0].gpa, kGranule);
  EXPECT_TRUE(stats.thread_granules(8).empty());

  AggvmDsmFaultStats s{};
  ASSERT_TRUE(stats.thread_faults(7, &s));
  EXPECT_EQ(s.read_faults, 1u);
  EXPECT_EQ(s.write_faults, 2u);
  EXPECT_EQ(s.faults_by_home[1], 2u);
  EXPECT_EQ(stats.node_faults().read_faults + stats.node_faults().write_faults, 4u);
}

TEST(HomeMap, RangesFollowMovesInAddressOrder) {
  HomeMap homes({{.gpa_start = 64 << 20, .gpa_end = 128 << 20, .node = 1},
                 {.gpa_start = 0, .gpa_end = 64 << 20, .node = 0}},
                2);
  homes.assign(16 << 20, 32 << 20, 1);
  const auto r = homes.ranges();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].gpa_end, uint64_t{16} << 20);
  EXPECT_EQ(r[1].node, 1);
  EXPECT_EQ(r[2].node, 0);
  EXPECT_EQ(r[3].gpa_start, uint64_t{64} << 20);
  for (size_t i = 1; i < r.size(); ++i) EXPECT_EQ(r[i - 1].gpa_end, r[i].gpa_start);
}

}  // namespace
}  // namespace aggvm::dsm
