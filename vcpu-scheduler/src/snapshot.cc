#include "snapshot.h"

#include <stdexcept>

#include <fmt/format.h>

namespace aggvm::sched {

namespace {

[[noreturn]] void invalid(const std::string& why) { throw std::invalid_argument(why); }

}  // namespace

void validate(const Snapshot& s) {
  if (s.nodes.empty()) invalid("the cluster has no node");
  if (s.interval_us == 0) invalid("an interval of 0 us");
  if (s.remote_fault_us < 0 || s.vcpu_move_us < 0 || s.rehome_us_per_mib < 0) invalid("a negative cost");
  const NodeInfo& n0 = s.nodes[0];
  if (n0.draining || n0.may_release)
    invalid("node 0 cannot be emptied or released: it holds the devices");
  if (!n0.present || n0.health != Health::kOk) invalid("node 0 is not usable: the guest cannot run without it");
  for (size_t i = 0; i < s.nodes.size(); ++i)
    if (s.nodes[i].cores == 0) invalid(fmt::format("node {} has no core", i));
  for (size_t v = 0; v < s.vcpus.size(); ++v) {
    const VcpuInfo& c = s.vcpus[v];
    if (c.node >= s.nodes.size())
      invalid(fmt::format("vCPU {} runs on node {}, but the cluster has {} nodes", v, c.node, s.nodes.size()));
    if (!(c.busy >= 0 && c.busy <= 1)) invalid(fmt::format("vCPU {} was busy {} of the interval", v, c.busy));
    for (const auto& [r, count] : c.faults)
      if (r >= s.ranges.size())
        invalid(fmt::format("vCPU {} faulted on range {}, but there are {} ranges", v, r, s.ranges.size()));
  }
  for (size_t r = 0; r < s.ranges.size(); ++r) {
    if (s.ranges[r].home >= s.nodes.size())
      invalid(fmt::format("range {} is homed on node {}, but the cluster has {} nodes", r, s.ranges[r].home,
                          s.nodes.size()));
    if (s.ranges[r].size == 0) invalid(fmt::format("range {} is empty", r));
  }
}

}  // namespace aggvm::sched
