// What the scheduler sees of a running aggregated guest, one interval at a
// time: where each vCPU runs and what it faulted on, where each range of
// guest memory is homed, and what each node can take.  Plain data: the
// embedder (QEMU's node 0) fills it from the DSM's statistics, the tests'
// simulator from a synthetic guest.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace aggvm::sched {

using NodeId = uint16_t;

enum class Health : uint8_t {
  kOk,
  kFailing,  // reported failing (QMP, or the host's own signal): empty it first
};

struct NodeInfo {
  uint32_t cores = 1;       // host cores the node's vCPUs may use
  bool present = true;      // connected and usable (not absent, failed or left)
  Health health = Health::kOk;
  bool draining = false;    // an operator wants it empty (make-room)
  bool may_release = false; // it may be emptied and released to save power
};

struct VcpuInfo {
  NodeId node = 0;  // where it runs now
  double busy = 0;  // share of the interval it ran (0..1), not halted
  // Faults it took in the interval on each range of guest memory:
  // (range index, count).  Local or remote depends on where it runs.
  std::vector<std::pair<uint32_t, uint64_t>> faults;
};

struct RangeInfo {
  uint64_t gpa = 0;
  uint64_t size = 0;
  NodeId home = 0;
};

struct Snapshot {
  std::vector<NodeInfo> nodes;   // by node id; node 0 holds the devices
  std::vector<VcpuInfo> vcpus;   // by vCPU index
  std::vector<RangeInfo> ranges;
  uint64_t interval_us = 1'000'000;
  // Costs measured on this cluster (recent moves, the DSM's latencies).
  double remote_fault_us = 100;  // what a fault on a page homed elsewhere costs
  double vcpu_move_us = 1000;    // a vCPU move, its downtime and its faults after
  double rehome_us_per_mib = 5000;
};

// Throws std::invalid_argument naming the first problem: a vCPU or range on
// a node that does not exist, a fault on a range that does not exist, a
// busy share outside 0..1, node 0 draining or releasable (it holds the
// devices), an interval of 0.
void validate(const Snapshot& s);

}  // namespace aggvm::sched
