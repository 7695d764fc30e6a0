// The placement table and the checks a vCPU move passes (migration/).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "aggvm/migration.h"
#include "error.h"
#include "handoff.h"
#include "placement.h"

namespace aggvm::migration {
namespace {

using States = std::vector<AggvmMoveNodeState>;

int err_of(auto&& f) {
  try {
    f();
  } catch (const dsm::DsmError& e) {
    return e.err();
  }
  return 0;
}

TEST(Placement, MoveCommitsWithANewerEpoch) {
  const std::vector<uint16_t> start{0, 0, 1, 2};
  Placement p(3, start);
  const States up(3, AGGVM_MOVE_NODE_USABLE);
  const uint64_t e = p.begin_move(1, 2, up);
  EXPECT_TRUE(p.is_moving(1));
  EXPECT_EQ(p.moving_to(1), 2);  // it may run there before node 0 commits
  EXPECT_EQ(p.moving_to(0), -1);
  EXPECT_EQ(p.node_of(1), 0);  // until it commits
  EXPECT_TRUE(p.commit(1, 2, e));
  EXPECT_EQ(p.node_of(1), 2);
  EXPECT_FALSE(p.is_moving(1));
  EXPECT_EQ(p.moving_to(1), -1);
  EXPECT_EQ(p.epoch(), e);
  // A stale placement (an older epoch) changes nothing.
  EXPECT_FALSE(p.commit(1, 0, e));
  EXPECT_EQ(p.node_of(1), 2);
}

TEST(Placement, RefusesWhatCannotMove) {
  const std::vector<uint16_t> start{0, 1};
  Placement p(3, start);
  States s(3, AGGVM_MOVE_NODE_USABLE);
  EXPECT_EQ(err_of([&] { p.begin_move(2, 1, s); }), EINVAL);   // no such vCPU
  EXPECT_EQ(err_of([&] { p.begin_move(1, 3, s); }), EINVAL);   // no such node
  EXPECT_EQ(err_of([&] { p.begin_move(1, 1, s); }), EALREADY); // already there
  s[2] = AGGVM_MOVE_NODE_FAILED;
  EXPECT_EQ(err_of([&] { p.begin_move(1, 2, s); }), EHOSTDOWN);
  s[2] = AGGVM_MOVE_NODE_NOT_CONNECTED;
  EXPECT_EQ(err_of([&] { p.begin_move(1, 2, s); }), ENOTCONN);
  s[2] = AGGVM_MOVE_NODE_LEAVING;
  EXPECT_EQ(err_of([&] { p.begin_move(1, 2, s); }), ESHUTDOWN);
  s[2] = AGGVM_MOVE_NODE_USABLE;
  s[1] = AGGVM_MOVE_NODE_FAILED;  // the source
  EXPECT_EQ(err_of([&] { p.begin_move(1, 2, s); }), EHOSTDOWN);
  s[1] = AGGVM_MOVE_NODE_USABLE;
  p.begin_move(1, 2, s);
  EXPECT_EQ(err_of([&] { p.begin_move(1, 0, s); }), EBUSY);     // already moving
  p.abort_move(1);
  EXPECT_EQ(p.node_of(1), 1);
  EXPECT_NO_THROW(p.begin_move(1, 0, s));
}

TEST(Placement, RejectsAStartThatNamesNoNode) {
  const std::vector<uint16_t> start{0, 4};
  EXPECT_EQ(err_of([&] { Placement p(2, start); }), EINVAL);
}

TEST(Handoff, StateRoundTrips) {
  const std::string common(12, 'c'), cpu(3000, 'x'), apic(700, 'a');
  AggvmHandoff h{};
  h.kind = AGGVM_HANDOFF_VCPU_STATE;
  h.vcpu = 3;
  h.from = 1;
  h.epoch = 9;
  h.cpu_common = common.data();
  h.cpu_common_len = common.size();
  h.cpu = cpu.data();
  h.cpu_len = cpu.size();
  h.apic = apic.data();
  h.apic_len = apic.size();
  h.stopped_at_ns = 12345;
  const std::string wire = encode_handoff(h);
  AggvmHandoff out;
  auto owner = decode_handoff(AGGVM_HANDOFF_VCPU_STATE, wire.data(), wire.size(), 2, 4, out);
  EXPECT_EQ(out.vcpu, 3u);
  EXPECT_EQ(out.from, 1);
  EXPECT_EQ(out.epoch, 9u);
  EXPECT_EQ(out.stopped_at_ns, 12345);
  EXPECT_EQ(std::string(static_cast<const char*>(out.cpu), out.cpu_len), cpu);
  EXPECT_EQ(std::string(static_cast<const char*>(out.apic), out.apic_len), apic);
}

TEST(Handoff, HostileMessagesAreRefused) {
  AggvmHandoff h{};
  h.kind = AGGVM_HANDOFF_MOVE_ORDER;
  h.vcpu = 1;
  h.from = 0;
  h.to = 5;  // no such node in a cluster of 2
  const std::string wire = encode_handoff(h);
  AggvmHandoff out;
  EXPECT_EQ(err_of([&] { decode_handoff(AGGVM_HANDOFF_MOVE_ORDER, wire.data(), wire.size(), 2, 4, out); }), EINVAL);
  h.to = 0;  // to itself
  const std::string self = encode_handoff(h);
  EXPECT_EQ(err_of([&] { decode_handoff(AGGVM_HANDOFF_MOVE_ORDER, self.data(), self.size(), 2, 4, out); }), EINVAL);
  // A state without its APIC part.
  AggvmHandoff s{};
  s.kind = AGGVM_HANDOFF_VCPU_STATE;
  s.cpu = "x";
  s.cpu_len = 1;
  s.cpu_common = "c";
  s.cpu_common_len = 1;
  const std::string partial = encode_handoff(s);
  EXPECT_EQ(err_of([&] { decode_handoff(AGGVM_HANDOFF_VCPU_STATE, partial.data(), partial.size(), 2, 4, out); }),
            EPROTO);
  // Garbage of every length up to 64 bytes: refused or decoded, never a crash.
  std::string junk;
  for (int i = 0; i < 64; ++i) {
    junk.push_back(static_cast<char>(0x80 | (i * 37)));
    for (auto kind : {AGGVM_HANDOFF_MOVE_ORDER, AGGVM_HANDOFF_VCPU_STATE, AGGVM_HANDOFF_PLACEMENT,
                      AGGVM_HANDOFF_RESULT}) {
      const int err = err_of([&] { decode_handoff(kind, junk.data(), junk.size(), 2, 4, out); });
      EXPECT_TRUE(err == 0 || err == EPROTO || err == EINVAL) << err;
    }
  }
}

TEST(CApi, ErrorsAreValuesWithMessages) {
  const uint16_t start[2] = {0, 1};
  AggvmPlacement* p = nullptr;
  ASSERT_EQ(aggvm_placement_new(2, 2, start, &p, nullptr), 0);
  const AggvmMoveNodeState states[2] = {AGGVM_MOVE_NODE_USABLE, AGGVM_MOVE_NODE_USABLE};
  uint64_t epoch = 0;
  char* err = nullptr;
  EXPECT_EQ(aggvm_placement_begin_move(p, 7, 0, states, &epoch, &err), -EINVAL);
  ASSERT_NE(err, nullptr);
  EXPECT_NE(std::string(err).find("no vCPU 7"), std::string::npos) << err;
  free(err);
  EXPECT_EQ(aggvm_placement_begin_move(p, 1, 0, states, &epoch, nullptr), 0);
  EXPECT_EQ(aggvm_placement_commit(p, 1, 0, epoch, nullptr), 0);
  EXPECT_EQ(aggvm_placement_node_of(p, 1), 0);
  aggvm_placement_free(p);
}

}  // namespace
}  // namespace aggvm::migration
