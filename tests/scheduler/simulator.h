// A cluster simulator for the scheduler: a synthetic guest (vCPUs that
// fault on ranges of memory at given rates, and are busy a given share of
// each interval) on simulated nodes.  Each step builds the snapshot the
// embedder would, runs the scheduler and carries out its plan, as QEMU's
// node 0 would (moves vCPUs and homes, evacuates released nodes).
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "scheduler.h"

namespace aggvm::sched::sim {

struct Guest {
  // faults[v]: (range, faults per interval) of vCPU v in the current phase.
  std::vector<std::vector<std::pair<uint32_t, uint64_t>>> faults;
  std::vector<double> busy;
};

class Cluster {
 public:
  Cluster(std::vector<NodeInfo> nodes, std::vector<RangeInfo> ranges, std::vector<NodeId> vcpu_node, Guest guest)
      : nodes_(std::move(nodes)), ranges_(std::move(ranges)), vcpu_node_(std::move(vcpu_node)),
        guest_(std::move(guest)) {}

  Snapshot snapshot() const {
    Snapshot s;
    s.nodes = nodes_;
    s.ranges = ranges_;
    for (size_t v = 0; v < vcpu_node_.size(); ++v)
      s.vcpus.push_back(VcpuInfo{.node = vcpu_node_[v], .busy = guest_.busy[v], .faults = guest_.faults[v]});
    return s;
  }

  // One interval: the scheduler plans, the plan is carried out.
  Plan step(Scheduler& sched) {
    Plan plan = sched.plan(snapshot());
    for (const Action& a : plan.actions) {
      switch (a.kind) {
        case Action::Kind::kMoveVcpu: vcpu_node_.at(a.index) = a.to; break;
        case Action::Kind::kMoveHome: ranges_.at(a.index).home = a.to; break;
        case Action::Kind::kRelease: nodes_.at(a.index).present = false; break;
      }
    }
    ++steps_;
    for (const Action& a : plan.actions)
      if (a.kind != Action::Kind::kRelease) last_move_step_ = steps_;
    return plan;
  }

  double remote_faults() const {
    Snapshot s = snapshot();
    return CostModel(s, Weights{.affinity = 1}).remote_faults(Placement::of(s));
  }
  double cost(const Weights& w) const {
    Snapshot s = snapshot();
    return CostModel(s, w).total(Placement::of(s));
  }
  double overload() const {
    Snapshot s = snapshot();
    return CostModel(s, Weights{.balance = 1}).overload(Placement::of(s));
  }

  NodeId vcpu_node(uint32_t v) const { return vcpu_node_.at(v); }
  NodeId home(uint32_t r) const { return ranges_.at(r).home; }
  NodeInfo& node(NodeId n) { return nodes_.at(n); }
  Guest& guest() { return guest_; }
  int last_move_step() const { return last_move_step_; }
  bool holds(NodeId n) const {
    return std::count(vcpu_node_.begin(), vcpu_node_.end(), n) > 0 ||
           std::any_of(ranges_.begin(), ranges_.end(), [&](const RangeInfo& r) { return r.home == n; });
  }

  // The lowest cost under w of any placement of the vCPUs and homes on the
  // present nodes, by exhaustive search (small cases only).
  double best_static_cost(const Weights& w) const {
    Snapshot s = snapshot();
    std::vector<NodeId> usable;
    for (NodeId n = 0; n < nodes_.size(); ++n)
      if (nodes_[n].present) usable.push_back(n);
    const size_t slots = s.vcpus.size() + s.ranges.size();
    std::vector<size_t> pick(slots, 0);
    const CostModel model(s, w);
    double best = model.total(Placement::of(s));
    while (true) {
      Placement p;
      for (size_t i = 0; i < s.vcpus.size(); ++i) p.vcpu_node.push_back(usable[pick[i]]);
      for (size_t i = 0; i < s.ranges.size(); ++i) p.range_home.push_back(usable[pick[s.vcpus.size() + i]]);
      best = std::min(best, model.total(p));
      size_t i = 0;
      while (i < slots && ++pick[i] == usable.size()) pick[i++] = 0;
      if (i == slots) break;
    }
    return best;
  }

 private:
  std::vector<NodeInfo> nodes_;
  std::vector<RangeInfo> ranges_;
  std::vector<NodeId> vcpu_node_;
  Guest guest_;
  int steps_ = 0;
  int last_move_step_ = 0;
};

// A random small cluster and guest: 2-3 nodes of 2 cores, 2-4 busy vCPUs,
// 2-4 ranges, each vCPU faulting on 1-3 ranges, everything placed at
// random.
inline Cluster random_cluster(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return static_cast<int>(lo + rng() % (hi - lo + 1)); };
  const int n_nodes = uniform(2, 3), n_vcpus = uniform(2, 4), n_ranges = uniform(2, 4);
  std::vector<NodeInfo> nodes(n_nodes, NodeInfo{.cores = 2});
  std::vector<RangeInfo> ranges;
  for (int r = 0; r < n_ranges; ++r)
    ranges.push_back(RangeInfo{.gpa = uint64_t(r) << 30, .size = 16 << 20, .home = NodeId(uniform(0, n_nodes - 1))});
  Guest g;
  std::vector<NodeId> at;
  for (int v = 0; v < n_vcpus; ++v) {
    at.push_back(NodeId(uniform(0, n_nodes - 1)));
    g.busy.push_back(0.3 + 0.1 * uniform(0, 6));
    std::vector<std::pair<uint32_t, uint64_t>> f;
    const int k = uniform(1, std::min(3, n_ranges));
    for (int i = 0; i < k; ++i) {
      const uint32_t r = uint32_t((v + i) % n_ranges);
      f.emplace_back(r, uint64_t(uniform(1, 20)) * 100);
    }
    g.faults.push_back(std::move(f));
  }
  return Cluster(std::move(nodes), std::move(ranges), std::move(at), std::move(g));
}

}  // namespace aggvm::sched::sim
