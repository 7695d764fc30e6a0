// What a placement costs the guest in one interval, in microseconds of
// vCPU time, under a snapshot's faults and loads and a policy's weights;
// and what one move would change, without recomputing the rest.
#pragma once

#include <vector>

#include "policy.h"
#include "snapshot.h"

namespace aggvm::sched {

struct Placement {
  std::vector<NodeId> vcpu_node;   // by vCPU
  std::vector<NodeId> range_home;  // by range

  static Placement of(const Snapshot& s);
};

class CostModel {
 public:
  CostModel(const Snapshot& s, const Weights& w);

  double total(const Placement& p) const;
  // Faults, in the interval, on memory homed on another node.
  double remote_faults(const Placement& p) const;
  // Runnable load beyond a node's cores, in cores, summed over the nodes.
  double overload(const Placement& p) const;
  // Cost change if vCPU v ran on `to`, or range r were homed on `to`.
  double delta_vcpu(const Placement& p, uint32_t v, NodeId to) const;
  double delta_range(const Placement& p, uint32_t r, NodeId to) const;

 private:
  struct Use {
    uint32_t vcpu;
    uint64_t faults;
  };
  double node_load(const Placement& p, NodeId n) const;
  double overload_cost(double load, NodeId n) const;

  const Snapshot& s_;
  Weights w_;
  std::vector<std::vector<Use>> users_;  // by range: the vCPUs that fault on it
};

}  // namespace aggvm::sched
