#include "scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <fmt/format.h>

namespace aggvm::sched {

namespace {

// Why a node must be emptied whatever the budget, or "" if it need not.
std::string must_empty(const NodeInfo& n, NodeId id) {
  if (!n.present) return fmt::format("node {} is not usable", id);
  if (n.health == Health::kFailing) return fmt::format("node {} is failing: emptied before it fails", id);
  if (n.draining) return fmt::format("node {} is wanted back (make-room)", id);
  return "";
}

// The nodes consolidation keeps: node 0, then the busiest others, until
// their cores (at the policy's fill) hold the guest's load.  The rest,
// where they may be released, are to be emptied.
std::vector<bool> to_release(const Snapshot& s, const Placement& p, const Policy& policy, std::string* why) {
  std::vector<bool> release(s.nodes.size(), false);
  if (policy.weights.consolidate <= 0) return release;
  const double load = std::accumulate(s.vcpus.begin(), s.vcpus.end(), 0.0,
                                      [](double a, const VcpuInfo& v) { return a + v.busy; });
  std::vector<double> weight(s.nodes.size(), 0);  // what a node holds now
  for (uint32_t v = 0; v < s.vcpus.size(); ++v) weight[p.vcpu_node[v]] += s.vcpus[v].busy + 1e-3;
  for (uint32_t r = 0; r < s.ranges.size(); ++r) weight[p.range_home[r]] += 1e-6;
  std::vector<NodeId> order;
  for (NodeId n = 1; n < s.nodes.size(); ++n)
    if (must_empty(s.nodes[n], n).empty()) order.push_back(n);
  std::stable_sort(order.begin(), order.end(), [&](NodeId a, NodeId b) { return weight[a] > weight[b]; });
  double room = s.nodes[0].cores * policy.fill;
  size_t kept = 1;
  for (NodeId n : order) {
    if (room >= load && s.nodes[n].may_release) {
      release[n] = true;
      continue;
    }
    room += s.nodes[n].cores * policy.fill;
    ++kept;
  }
  *why = fmt::format("consolidate: the load of {:.2f} cores fits on {} node{}", load, kept, kept == 1 ? "" : "s");
  return release;
}

// The one-time cost of moving range r's home.
double rehome_cost(const Snapshot& s, uint32_t r) {
  return s.rehome_us_per_mib * static_cast<double>(s.ranges[r].size) / (1 << 20);
}

}  // namespace

const char* to_string(Action::Kind k) {
  switch (k) {
    case Action::Kind::kMoveVcpu: return "move-vcpu";
    case Action::Kind::kMoveHome: return "move-home";
    case Action::Kind::kRelease: return "release";
  }
  return "?";
}

Scheduler::Scheduler(Policy policy) : policy_(policy) { validate(policy_); }

void Scheduler::set_policy(Policy policy) {
  validate(policy);
  policy_ = policy;
}

bool Scheduler::cooling(const std::vector<uint64_t>& moved_at, uint32_t i) const {
  return i < moved_at.size() && moved_at[i] && tick_ - moved_at[i] < policy_.cooldown;
}

void Scheduler::moved(std::vector<uint64_t>& moved_at, uint32_t i) {
  if (moved_at.size() <= i) moved_at.resize(i + 1, 0);
  moved_at[i] = tick_;
}

Plan Scheduler::plan(const Snapshot& s) {
  validate(s);
  ++tick_;
  Plan plan;
  Placement p = Placement::of(s);
  const CostModel model(s, policy_.weights);
  // Where required and consolidating moves go: the best node for the
  // memory a vCPU uses and for the load, whatever the weights say.
  const CostModel placer(s, Weights{.affinity = std::max(policy_.weights.affinity, 1.0),
                                    .balance = std::max(policy_.weights.balance, 1.0),
                                    .consolidate = 0});
  plan.cost_us = model.total(p);

  std::string consolidate_why;
  const std::vector<bool> release = to_release(s, p, policy_, &consolidate_why);
  std::vector<NodeId> targets;
  std::vector<std::string> empty_why(s.nodes.size());
  std::vector<bool> required(s.nodes.size(), false);  // health or make-room
  for (NodeId n = 0; n < s.nodes.size(); ++n) {
    empty_why[n] = must_empty(s.nodes[n], n);
    required[n] = !empty_why[n].empty();
    if (!required[n] && release[n])
      empty_why[n] = fmt::format("{}: node {} is to be released", consolidate_why, n);
    if (empty_why[n].empty()) targets.push_back(n);
  }
  std::vector<bool> is_target(s.nodes.size(), false);
  for (NodeId n : targets) is_target[n] = true;

  auto best_target = [&](auto delta) {
    NodeId best = targets.front();
    double best_d = std::numeric_limits<double>::infinity();
    for (NodeId n : targets)
      if (const double d = delta(n); d < best_d) best = n, best_d = d;
    return best;
  };
  uint32_t budget = policy_.budget;
  auto empty_node = [&](NodeId n, bool required) {
    for (uint32_t v = 0; v < s.vcpus.size(); ++v) {
      if (p.vcpu_node[v] != n || (!required && budget == 0)) continue;
      const NodeId to = best_target([&](NodeId t) { return placer.delta_vcpu(p, v, t); });
      plan.actions.push_back(Action{.kind = Action::Kind::kMoveVcpu, .index = v, .from = n, .to = to,
                                    .required = required, .saves_us = -model.delta_vcpu(p, v, to),
                                    .reason = empty_why[n]});
      p.vcpu_node[v] = to;
      moved(vcpu_moved_at_, v);
      if (!required) --budget;
    }
    for (uint32_t r = 0; r < s.ranges.size(); ++r) {
      if (p.range_home[r] != n || (!required && budget == 0)) continue;
      const NodeId to = best_target([&](NodeId t) { return placer.delta_range(p, r, t); });
      plan.actions.push_back(Action{.kind = Action::Kind::kMoveHome, .index = r, .from = n, .to = to,
                                    .required = required, .saves_us = -model.delta_range(p, r, to),
                                    .reason = empty_why[n]});
      p.range_home[r] = to;
      moved(range_moved_at_, r);
      if (!required) --budget;
    }
  };
  // 1. Health and make-room, whatever the budget.
  for (NodeId n = 0; n < s.nodes.size(); ++n)
    if (required[n]) empty_node(n, true);
  // 2. Consolidation, within the budget.
  for (NodeId n = 0; n < s.nodes.size(); ++n)
    if (release[n] && !required[n]) empty_node(n, false);

  // 3. Affinity and balance: the best single move, again and again.
  while (budget > 0) {
    const double cost = model.total(p);
    struct Best {
      Action::Kind kind = Action::Kind::kMoveVcpu;
      uint32_t index = 0;
      NodeId to = 0;
      double saves = 0, net = 0;
      std::vector<uint32_t> ranges;  // a vCPU move: homes that follow it
      int64_t swap_with = -1;        // a vCPU move: the vCPU that takes its place
    } best;
    // Every candidate passes the same test: it saves min_gain of the cost
    // and pays for itself within the horizon, better than the best so far.
    auto consider = [&](Action::Kind kind, uint32_t i, NodeId to, double saves, double once,
                        std::vector<uint32_t> ranges = {}, int64_t swap_with = -1) {
      const double net = saves * policy_.horizon - once;
      if (saves > 0 && saves >= policy_.min_gain * cost && net > best.net)
        best = {kind, i, to, saves, net, std::move(ranges), swap_with};
    };
    for (uint32_t v = 0; v < s.vcpus.size(); ++v) {
      if (cooling(vcpu_moved_at_, v)) continue;
      for (NodeId to : targets) {
        if (to == p.vcpu_node[v]) continue;
        consider(Action::Kind::kMoveVcpu, v, to, -model.delta_vcpu(p, v, to), s.vcpu_move_us);
        // With it, the homes of the ranges it faults on that then gain
        // from following it: a vCPU and its memory sharing a range with
        // others may only gain together (a local minimum otherwise).
        if (budget < 2) continue;
        Placement q = p;
        double saves = -model.delta_vcpu(q, v, to), once = s.vcpu_move_us;
        q.vcpu_node[v] = to;
        std::vector<uint32_t> with;
        for (const auto& [r, count] : s.vcpus[v].faults) {
          if (with.size() + 1 >= budget || q.range_home[r] == to || cooling(range_moved_at_, r)) continue;
          if (const double d = model.delta_range(q, r, to); d < 0) {
            saves -= d;
            once += rehome_cost(s, r);
            q.range_home[r] = to;
            with.push_back(r);
          }
        }
        if (!with.empty()) consider(Action::Kind::kMoveVcpu, v, to, saves, once, std::move(with));
      }
    }
    // Two vCPUs trading places: neither move may gain alone (the node it
    // would join is full).
    for (uint32_t v = 0; budget >= 2 && v < s.vcpus.size(); ++v) {
      if (cooling(vcpu_moved_at_, v)) continue;
      for (uint32_t w = v + 1; w < s.vcpus.size(); ++w) {
        const NodeId a = p.vcpu_node[v], b = p.vcpu_node[w];
        if (a == b || cooling(vcpu_moved_at_, w) || !is_target[a] || !is_target[b]) continue;
        Placement q = p;
        double saves = -model.delta_vcpu(q, v, b);
        q.vcpu_node[v] = b;
        saves -= model.delta_vcpu(q, w, a);
        consider(Action::Kind::kMoveVcpu, v, b, saves, 2 * s.vcpu_move_us, {}, w);
      }
    }
    for (uint32_t r = 0; r < s.ranges.size(); ++r) {
      if (cooling(range_moved_at_, r)) continue;
      for (NodeId to : targets)
        if (to != p.range_home[r])
          consider(Action::Kind::kMoveHome, r, to, -model.delta_range(p, r, to), rehome_cost(s, r));
    }
    if (best.net <= 0) break;
    Action a{.kind = best.kind, .index = best.index, .to = best.to, .saves_us = best.saves, .reason = {}};
    const double share = cost > 0 ? 100 * best.saves / cost : 100;
    if (best.kind == Action::Kind::kMoveVcpu) {
      a.from = p.vcpu_node[best.index];
      a.reason = fmt::format("vCPU {} on node {} saves {:.0f} us per interval ({:.0f}% of the cost): {}",
                             best.index, best.to, best.saves, share,
                             model.delta_vcpu(p, best.index, best.to) < 0 && policy_.weights.affinity > 0
                                 ? "nearer the memory it faults on, or off an overloaded node"
                                 : "off an overloaded node");
      if (!best.ranges.empty()) a.reason += fmt::format(", with the memory it faults on");
      if (best.swap_with >= 0) a.reason += fmt::format(", trading places with vCPU {}", best.swap_with);
      p.vcpu_node[best.index] = best.to;
      moved(vcpu_moved_at_, best.index);
      if (best.swap_with >= 0) {
        const auto w = static_cast<uint32_t>(best.swap_with);
        const NodeId back = a.from;
        plan.actions.push_back(std::move(a));
        --budget;
        a = Action{.kind = Action::Kind::kMoveVcpu, .index = w, .from = p.vcpu_node[w], .to = back,
                   .saves_us = -model.delta_vcpu(p, w, back),
                   .reason = fmt::format("vCPU {} trades places with vCPU {}", w, best.index)};
        p.vcpu_node[w] = back;
        moved(vcpu_moved_at_, w);
      }
      for (uint32_t r : best.ranges) {
        plan.actions.push_back(std::move(a));
        --budget;
        a = Action{.kind = Action::Kind::kMoveHome, .index = r, .from = p.range_home[r], .to = best.to,
                   .saves_us = -model.delta_range(p, r, best.to),
                   .reason = fmt::format("range {} follows vCPU {} to node {}, which faults on it", r, best.index,
                                         best.to)};
        p.range_home[r] = best.to;
        moved(range_moved_at_, r);
      }
    } else {
      a.from = p.range_home[best.index];
      a.reason = fmt::format("range {} homed on node {} saves {:.0f} us per interval ({:.0f}% of the cost): "
                             "moving the memory to its users costs less than moving them",
                             best.index, best.to, best.saves, share);
      p.range_home[best.index] = best.to;
      moved(range_moved_at_, best.index);
    }
    plan.actions.push_back(std::move(a));
    --budget;
  }

  // 4. Nodes to be emptied that hold nothing any more.
  for (NodeId n = 1; n < s.nodes.size(); ++n) {
    if (empty_why[n].empty() || !s.nodes[n].present) continue;
    const bool holds = std::find(p.vcpu_node.begin(), p.vcpu_node.end(), n) != p.vcpu_node.end() ||
                       std::find(p.range_home.begin(), p.range_home.end(), n) != p.range_home.end();
    if (!holds)
      plan.actions.push_back(Action{.kind = Action::Kind::kRelease, .index = n, .from = n, .to = n,
                                    .required = required[n],
                                    .reason = fmt::format("{}; it holds nothing now", empty_why[n])});
  }
  plan.cost_after_us = model.total(p);
  return plan;
}

}  // namespace aggvm::sched
