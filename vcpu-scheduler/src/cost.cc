#include "cost.h"

#include <algorithm>

namespace aggvm::sched {

Placement Placement::of(const Snapshot& s) {
  Placement p;
  for (const VcpuInfo& v : s.vcpus) p.vcpu_node.push_back(v.node);
  for (const RangeInfo& r : s.ranges) p.range_home.push_back(r.home);
  return p;
}

CostModel::CostModel(const Snapshot& s, const Weights& w) : s_(s), w_(w), users_(s.ranges.size()) {
  for (uint32_t v = 0; v < s.vcpus.size(); ++v)
    for (const auto& [r, count] : s.vcpus[v].faults)
      if (count) users_[r].push_back(Use{v, count});
}

double CostModel::remote_faults(const Placement& p) const {
  double n = 0;
  for (uint32_t v = 0; v < s_.vcpus.size(); ++v)
    for (const auto& [r, count] : s_.vcpus[v].faults)
      if (p.range_home[r] != p.vcpu_node[v]) n += static_cast<double>(count);
  return n;
}

double CostModel::node_load(const Placement& p, NodeId n) const {
  double load = 0;
  for (uint32_t v = 0; v < s_.vcpus.size(); ++v)
    if (p.vcpu_node[v] == n) load += s_.vcpus[v].busy;
  return load;
}

double CostModel::overload_cost(double load, NodeId n) const {
  // A node running more than its cores loses the excess, in vCPU time.
  return std::max(0.0, load - s_.nodes[n].cores) * static_cast<double>(s_.interval_us);
}

double CostModel::overload(const Placement& p) const {
  double excess = 0;
  for (NodeId n = 0; n < s_.nodes.size(); ++n) excess += std::max(0.0, node_load(p, n) - s_.nodes[n].cores);
  return excess;
}

double CostModel::total(const Placement& p) const {
  double cost = w_.affinity * remote_faults(p) * s_.remote_fault_us;
  if (w_.balance > 0)
    for (NodeId n = 0; n < s_.nodes.size(); ++n) cost += w_.balance * overload_cost(node_load(p, n), n);
  return cost;
}

double CostModel::delta_vcpu(const Placement& p, uint32_t v, NodeId to) const {
  const NodeId from = p.vcpu_node[v];
  if (from == to) return 0;
  double faults = 0;  // remote after minus remote before
  for (const auto& [r, count] : s_.vcpus[v].faults) {
    const NodeId home = p.range_home[r];
    faults += (home != to ? 1.0 : 0.0) * count - (home != from ? 1.0 : 0.0) * count;
  }
  double d = w_.affinity * faults * s_.remote_fault_us;
  if (w_.balance > 0) {
    const double busy = s_.vcpus[v].busy;
    const double lf = node_load(p, from), lt = node_load(p, to);
    d += w_.balance * (overload_cost(lf - busy, from) + overload_cost(lt + busy, to) - overload_cost(lf, from) -
                       overload_cost(lt, to));
  }
  return d;
}

double CostModel::delta_range(const Placement& p, uint32_t r, NodeId to) const {
  const NodeId from = p.range_home[r];
  if (from == to) return 0;
  double faults = 0;
  for (const Use& u : users_[r]) {
    const NodeId at = p.vcpu_node[u.vcpu];
    faults += (at != to ? 1.0 : 0.0) * u.faults - (at != from ? 1.0 : 0.0) * u.faults;
  }
  return w_.affinity * faults * s_.remote_fault_us;
}

}  // namespace aggvm::sched
