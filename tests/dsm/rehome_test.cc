// Re-homing (protocol/rehome.h) on model memory and a model network:
// entries and copies move, requests that cross the move are redirected or
// held and never lost, and random moves during random traffic keep a
// single writer and fresh copies with messages in any order.
#include <gtest/gtest.h>

#include <random>

#include "error.h"
#include "model_cluster.h"

namespace aggvm::dsm::testing {
namespace {

using S = PageState;

PageRange homed_range(ModelCluster& c, NodeId node) {
  const uint64_t per = c.pages_per_node();
  return PageRange{.region = 0, .first = node * per, .end = (node + 1) * per};
}

void expect_quiet(ModelCluster& c) {
  for (NodeId k = 0; k < c.size(); ++k) {
    EXPECT_TRUE(c.engine(k).idle()) << "node " << k << " still busy";
    EXPECT_TRUE(c.node(k).rejections.empty()) << "node " << k << ": " << c.node(k).rejections.front();
  }
}

TEST(HomeMap, AssignSplitsAndMergesRangesAndKeepsGapsOnNodeZero) {
  constexpr uint64_t P = kPageSize;
  HomeMap m({{0, 4 * P, 1}, {8 * P, 12 * P, 2}}, 3);
  m.assign(2 * P, 10 * P, 1);  // through a gap (node 0's) and into node 2's range
  EXPECT_EQ(m.home_of(0), 1);
  EXPECT_EQ(m.home_of(5 * P), 1);
  EXPECT_EQ(m.home_of(9 * P), 1);
  EXPECT_EQ(m.home_of(10 * P), 2);
  EXPECT_EQ(m.home_of(12 * P), 0) << "beyond every range: node 0";
  ASSERT_EQ(m.ranges().size(), 2u) << "node 1's pieces merged";
  EXPECT_EQ(m.ranges()[0].gpa_end, 10 * P);
  m.assign(4 * P, 6 * P, 0);
  EXPECT_EQ(m.home_of(3 * P), 1);
  EXPECT_EQ(m.home_of(4 * P), 0);
  EXPECT_EQ(m.home_of(6 * P), 1);
  EXPECT_THROW(m.assign(P, P, 1), DsmError);
  EXPECT_THROW(m.assign(0, P + 1, 1), DsmError);
  EXPECT_THROW(m.assign(0, P, 3), DsmError);
}

TEST(Rehome, EntriesAndCopiesMoveToTheNewHome) {
  ModelCluster c(3, 4);
  const PageKey written = c.page_homed_on(0, 0), read = c.page_homed_on(0, 1), own = c.page_homed_on(0, 2);
  c.write_byte(1, written, 11);  // node 1 owns it Modified
  c.write_byte(0, read, 22);
  EXPECT_EQ(c.read_byte(2, read), 22);  // node 0 (home copy) and node 2 share it
  c.write_byte(0, own, 33);             // the home owns it Modified

  c.engine(0).rehome(homed_range(c, 0), 2, c.now() + 1);
  EXPECT_TRUE(c.engine(0).moving_home());
  c.deliver_all_fifo();
  EXPECT_FALSE(c.engine(0).moving_home());
  EXPECT_EQ(c.engine(0).home_moves_done(), 1u);
  for (NodeId k = 0; k < 3; ++k)
    for (uint64_t i = 0; i < 4; ++i) EXPECT_EQ(c.engine(k).home(c.page_homed_on(0, i)), 2) << "node " << k;
  EXPECT_EQ(c.engine(0).directory().entries(), 0u);
  EXPECT_EQ(c.engine(2).directory().entries(), 8u);
  // The old home dropped its copies; the new one holds the home copies.
  EXPECT_EQ(c.engine(0).cache().state(read), S::kInvalid);
  EXPECT_EQ(c.engine(0).cache().state(own), S::kInvalid);
  EXPECT_EQ(c.engine(2).cache().state(own), S::kShared);
  EXPECT_EQ(c.engine(1).cache().state(written), S::kModified) << "an owner elsewhere keeps its copy";
  EXPECT_EQ(c.engine(2).directory().entry(written).owner, 1);
  EXPECT_EQ(c.engine(0).counters().rehomed_out_pages, 4u);
  EXPECT_EQ(c.engine(2).counters().rehomed_in_pages, 4u);
  for (NodeId k = 0; k < 3; ++k) {
    EXPECT_EQ(c.read_byte(k, written), 11);
    EXPECT_EQ(c.read_byte(k, read), 22);
    EXPECT_EQ(c.read_byte(k, own), 33);
  }
  c.write_byte(0, own, 44);  // served by the new home
  EXPECT_EQ(c.read_byte(1, own), 44);
  expect_quiet(c);
}

// Node 1's read request reaches the old home only after the move (the
// model network delivers it last): it is redirected and served by the new
// home, with the data the old home had.
TEST(Rehome, RequestThatCrossesTheMoveIsRedirected) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(0, 1);
  c.write_byte(0, p, 7);
  c.fault(1, p, Access::kRead);
  ASSERT_EQ(c.net().in_flight.size(), 1u);  // node 1's ReadReq to node 0, held back below
  c.engine(0).rehome(homed_range(c, 0), 2, c.now() + 1);
  while (c.net().in_flight.size() > 1) c.deliver(1);
  ASSERT_FALSE(c.engine(0).moving_home());
  c.deliver_all_fifo();
  EXPECT_EQ(c.engine(1).counters().redirects, 1u);
  EXPECT_EQ(c.node(1).page(p).mapped, true);
  EXPECT_EQ(c.read_byte(1, p), 7);
  EXPECT_TRUE(c.node(1).blocked.empty());
  expect_quiet(c);
}

// A write request held by the old home while it drains goes to the new
// home with the Redirect, and the home's own copy is not lost on the way.
TEST(Rehome, RequestsHeldDuringTheMoveAreServedByTheNewHome) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(0, 3);
  c.write_byte(0, p, 5);
  c.engine(0).rehome(homed_range(c, 0), 1, c.now() + 1);
  c.fault(2, p, Access::kWrite);  // reaches node 0 while it holds the range
  c.fault(0, p, Access::kWrite);  // the old home's own write: it asks itself, then node 1
  c.deliver_all_fifo();
  EXPECT_TRUE(c.node(0).page(p).writable != c.node(2).page(p).writable) << "exactly one writer";
  EXPECT_EQ(c.read_byte(1, p), 5);
  expect_quiet(c);
}

TEST(Rehome, BadMovesAreRefused) {
  ModelCluster c(3, 4);
  auto refused = [&](NodeId from, PageRange r, NodeId to) {
    try {
      c.engine(from).rehome(r, to, c.now() + 1);
    } catch (const DsmError& e) {
      return e.err();
    }
    return 0;
  };
  EXPECT_EQ(refused(0, homed_range(c, 1), 2), EINVAL) << "pages homed elsewhere";
  EXPECT_EQ(refused(0, homed_range(c, 0), 0), EINVAL) << "to itself";
  EXPECT_EQ(refused(0, homed_range(c, 0), 3), EINVAL) << "no such node";
  EXPECT_EQ(refused(0, PageRange{.region = 0, .first = 2, .end = 2}, 1), EINVAL) << "empty";
  EXPECT_EQ(refused(0, PageRange{.region = 1, .first = 0, .end = 1}, 1), EINVAL) << "no such region";
  EXPECT_EQ(refused(0, PageRange{.region = 0, .first = 0, .end = 2}, 1), 0);
  EXPECT_EQ(refused(0, PageRange{.region = 0, .first = 2, .end = 4}, 2), EBUSY) << "one move out at a time";
  c.deliver_all_fifo();
  EXPECT_EQ(refused(0, PageRange{.region = 0, .first = 2, .end = 4}, 2), 0);
  c.deliver_all_fifo();
  expect_quiet(c);
}

TEST(Rehome, SilentNewHomeTimesOut) {
  ModelCluster c(3, 4);
  c.engine(0).rehome(homed_range(c, 0), 2, c.now() + 1);
  c.net().in_flight.clear();  // node 2 never answers HomePrepare
  try {
    c.engine(0).check_timeouts(c.now() + 2'000'000'000);
    FAIL() << "no timeout";
  } catch (const PeerError& e) {
    EXPECT_EQ(e.node(), 2);
    EXPECT_EQ(e.err(), ETIMEDOUT);
  }
}

// Random faults and random moves of homes, messages delivered in random
// order: at every step at most one writable copy, none shared beside it,
// every mapped copy holds the last value written; at the end every node
// agrees on every page's home and nothing is left in flight.
TEST(Rehome, RandomMovesDuringRandomTrafficKeepCoherence) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const uint16_t n = 3 + seed % 2;
    ModelCluster c(n, 3);
    std::mt19937_64 rng(seed);
    const uint64_t pages = n * 3;
    std::vector<uint8_t> truth(pages, 0);
    uint8_t next = 1;
    uint64_t moves = 0;
    for (int step = 0; step < 4000; ++step) {
      const uint64_t roll = rng() % 100;
      if (roll < 3) {
        // A run of pages homed on k (in k's view), moved to another node.
        const NodeId k = rng() % n;
        const uint64_t first = rng() % pages;
        uint64_t end = first;
        while (end < pages && end - first < 1 + rng() % 4 && c.engine(k).home(PageKey(0, end)) == k) ++end;
        const NodeId to = static_cast<NodeId>((k + 1 + rng() % (n - 1)) % n);
        if (end > first) {
          try {
            c.engine(k).rehome(PageRange{.region = 0, .first = first, .end = end}, to, c.now() + 1);
            ++moves;
          } catch (const DsmError& e) {
            ASSERT_EQ(e.err(), EBUSY) << "seed " << seed << ": " << e.what();
          }
        }
      } else if (c.net().in_flight.empty() || roll < 35) {
        random_access(c, rng, truth, next);
      } else {
        c.deliver(rng() % c.net().in_flight.size());
      }
      expect_coherent(c, truth, seed);
      if (::testing::Test::HasFatalFailure()) return;
    }
    c.deliver_all_fifo();
    EXPECT_GT(moves, 10u) << "seed " << seed;
    uint64_t done = 0;
    for (NodeId k = 0; k < n; ++k) done += c.engine(k).home_moves_done();
    EXPECT_EQ(done, moves) << "seed " << seed;
    expect_quiet(c);
    for (uint64_t i = 0; i < pages; ++i) {
      const NodeId home = c.engine(0).home(PageKey(0, i));
      for (NodeId k = 1; k < n; ++k) ASSERT_EQ(c.engine(k).home(PageKey(0, i)), home) << "seed " << seed;
      for (NodeId k = 0; k < n; ++k) ASSERT_EQ(c.read_byte(k, PageKey(0, i)), truth[i]) << "seed " << seed;
    }
    uint64_t entries = 0;
    for (NodeId k = 0; k < n; ++k) entries += c.engine(k).directory().entries();
    EXPECT_EQ(entries, pages) << "seed " << seed << ": every page has exactly one directory entry";
    for (NodeId k = 0; k < n; ++k) c.node(k).blocked.clear();
  }
}

}  // namespace
}  // namespace aggvm::dsm::testing
