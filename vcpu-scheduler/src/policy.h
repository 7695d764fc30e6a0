// How the scheduler weighs its goals, and how hard it is to make it move.
//
//   affinity     a vCPU's faults on memory homed on another node cost
//                remote_fault_us each: run vCPUs where their memory is, or
//                move the memory's home to its only user
//   balance      a node whose runnable vCPUs need more than its cores costs
//                the excess, in vCPU time lost
//   consolidate  pack the guest onto the fewest nodes its load needs; the
//                others are emptied and may be released (power)
// Two goals are not weighed but obeyed, before any other: a failing node
// (health) and a node an operator wants back (make-room) are emptied.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace aggvm::sched {

struct Weights {
  double affinity = 0;
  double balance = 0;
  double consolidate = 0;
};

struct Policy {
  Weights weights;
  // Voluntary actions (not health or make-room) per interval.
  uint32_t budget = 2;
  // An action must save at least this share of the current cost...
  double min_gain = 0.05;
  // ... and pay for itself within this many intervals.
  double horizon = 10;
  // Intervals before the same vCPU or range may move again.
  uint32_t cooldown = 3;
  // Consolidate: a node is full at this share of its cores.
  double fill = 0.8;
};

constexpr double kMaxWeight = 100;

// "affinity,balance" (weight 1 each) or "affinity=2,balance=0.5";
// "none" for no voluntary goal.  Throws std::invalid_argument naming an
// unknown goal, a weight that is not a number in 0..kMaxWeight, or a goal
// named twice.
Weights parse_weights(std::string_view spec);
// The inverse, for query-aggvm: "affinity=1,balance=0.5".
std::string describe(const Weights& w);
// Throws std::invalid_argument for a budget, horizon, fill or min_gain
// out of range.
void validate(const Policy& p);

}  // namespace aggvm::sched
