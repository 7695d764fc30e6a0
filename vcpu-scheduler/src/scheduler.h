// The vCPU placement scheduler: from one interval's snapshot, the moves
// that would make the guest faster, emptier where it must be, or packed
// for power, each with its reason.  Pure and deterministic: it knows
// nothing of QEMU or of the fabric, and the same snapshots in the same
// order give the same plans.  The embedder carries the plan out (vCPU
// moves, home moves, evacuation of released nodes) and reports the next
// interval.
//
// In each plan, in this order:
//   1. required: every vCPU and every home on a node that is failing,
//      draining (make-room) or not usable moves off it, whatever the
//      budget: health comes before every other goal;
//   2. consolidate (if weighted): the nodes the load does not need, and
//      that may be released, are emptied within the budget;
//   3. affinity and balance (if weighted): the best moves, a vCPU or a
//      range's home, whichever saves more, one at a time, while the budget
//      lasts and each saves at least min_gain of the cost and pays for
//      itself within the horizon; nothing moves again within its cooldown;
//   4. release: a node to be emptied that holds nothing any more.
#pragma once

#include <string>
#include <vector>

#include "cost.h"
#include "policy.h"
#include "snapshot.h"

namespace aggvm::sched {

struct Action {
  enum class Kind { kMoveVcpu, kMoveHome, kRelease };
  Kind kind = Kind::kMoveVcpu;
  uint32_t index = 0;  // the vCPU, the range, or the node released
  NodeId from = 0, to = 0;
  bool required = false;  // health or make-room: outside the budget
  double saves_us = 0;    // per interval, under the policy's weights
  std::string reason;
};

struct Plan {
  std::vector<Action> actions;
  double cost_us = 0;        // the snapshot's placement, per interval
  double cost_after_us = 0;  // once the plan is carried out
};

class Scheduler {
 public:
  // Throws std::invalid_argument for a policy out of range.
  explicit Scheduler(Policy policy);

  // One interval.  Throws std::invalid_argument for a snapshot that does
  // not hold together (validate()).
  Plan plan(const Snapshot& s);

  const Policy& policy() const { return policy_; }
  void set_policy(Policy policy);
  uint64_t intervals() const { return tick_; }

 private:
  bool cooling(const std::vector<uint64_t>& moved_at, uint32_t i) const;
  void moved(std::vector<uint64_t>& moved_at, uint32_t i);

  Policy policy_;
  uint64_t tick_ = 0;
  std::vector<uint64_t> vcpu_moved_at_, range_moved_at_;  // interval of the last move
};

const char* to_string(Action::Kind k);

}  // namespace aggvm::sched
