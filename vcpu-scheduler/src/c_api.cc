// The C API of the scheduler (include/aggvm/scheduler.h).
#include "aggvm/scheduler.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>

#include "scheduler.h"

using aggvm::sched::Action;
using aggvm::sched::Health;
using aggvm::sched::Policy;
using aggvm::sched::Scheduler;
using aggvm::sched::Snapshot;

struct AggvmSched {
  Scheduler scheduler;
};

namespace {

// Runs body; 0, or -errno with *errmsg set when it throws.
template <typename F>
int guarded(char** errmsg, F&& body) {
  auto fail = [&](int err, const char* what) {
    if (errmsg) *errmsg = strdup(what);
    return -err;
  };
  try {
    body();
    return 0;
  } catch (const std::invalid_argument& e) {
    return fail(EINVAL, e.what());
  } catch (const std::bad_alloc&) {
    return fail(ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return fail(EIO, e.what());
  }
}

Policy policy_of(const char* goals, const AggvmSchedParams* params) {
  Policy p;
  if (params) {
    p.budget = params->budget;
    p.min_gain = params->min_gain;
    p.horizon = params->horizon;
    p.cooldown = params->cooldown;
    p.fill = params->fill;
  }
  p.weights = aggvm::sched::parse_weights(goals ? goals : "");
  return p;
}

}  // namespace

void aggvm_sched_default_params(AggvmSchedParams* params) {
  const Policy p;
  *params = AggvmSchedParams{.budget = p.budget, .min_gain = p.min_gain, .horizon = p.horizon,
                             .cooldown = p.cooldown, .fill = p.fill};
}

int aggvm_sched_new(const char* goals, const AggvmSchedParams* params, AggvmSched** out, char** errmsg) {
  return guarded(errmsg, [&] { *out = new AggvmSched{Scheduler(policy_of(goals, params))}; });
}

void aggvm_sched_free(AggvmSched* sched) { delete sched; }

int aggvm_sched_set_goals(AggvmSched* sched, const char* goals, char** errmsg) {
  return guarded(errmsg, [&] {
    Policy p = sched->scheduler.policy();
    p.weights = aggvm::sched::parse_weights(goals ? goals : "");
    sched->scheduler.set_policy(p);
  });
}

int aggvm_sched_set_params(AggvmSched* sched, const AggvmSchedParams* params, char** errmsg) {
  return guarded(errmsg, [&] {
    Policy p = sched->scheduler.policy();
    p.budget = params->budget;
    p.min_gain = params->min_gain;
    p.horizon = params->horizon;
    p.cooldown = params->cooldown;
    p.fill = params->fill;
    sched->scheduler.set_policy(p);
  });
}

void aggvm_sched_params(const AggvmSched* sched, AggvmSchedParams* out) {
  const Policy& p = sched->scheduler.policy();
  *out = AggvmSchedParams{.budget = p.budget, .min_gain = p.min_gain, .horizon = p.horizon,
                          .cooldown = p.cooldown, .fill = p.fill};
}

char* aggvm_sched_goals(const AggvmSched* sched) {
  return strdup(aggvm::sched::describe(sched->scheduler.policy().weights).c_str());
}

int aggvm_sched_plan(AggvmSched* sched, const AggvmSchedSnapshot* in, AggvmSchedPlan** out, char** errmsg) {
  return guarded(errmsg, [&] {
    Snapshot s;
    s.interval_us = in->interval_us;
    s.remote_fault_us = in->remote_fault_us;
    s.vcpu_move_us = in->vcpu_move_us;
    s.rehome_us_per_mib = in->rehome_us_per_mib;
    for (size_t i = 0; i < in->n_nodes; ++i) {
      const AggvmSchedNode& n = in->nodes[i];
      s.nodes.push_back({.cores = n.cores, .present = n.present != 0,
                         .health = n.failing ? Health::kFailing : Health::kOk, .draining = n.draining != 0,
                         .may_release = n.may_release != 0});
    }
    for (size_t i = 0; i < in->n_vcpus; ++i) {
      const AggvmSchedVcpu& v = in->vcpus[i];
      aggvm::sched::VcpuInfo info{.node = v.node, .busy = v.busy, .faults = {}};
      for (size_t k = 0; k < v.n_faults; ++k) info.faults.emplace_back(v.faults[k].range, v.faults[k].count);
      s.vcpus.push_back(std::move(info));
    }
    for (size_t i = 0; i < in->n_ranges; ++i)
      s.ranges.push_back({.gpa = in->ranges[i].gpa, .size = in->ranges[i].size, .home = in->ranges[i].home});
    const aggvm::sched::Plan plan = sched->scheduler.plan(s);
    auto* p = static_cast<AggvmSchedPlan*>(calloc(1, sizeof(AggvmSchedPlan)));
    auto* actions = static_cast<AggvmSchedAction*>(calloc(plan.actions.size() + 1, sizeof(AggvmSchedAction)));
    if (!p || !actions) {
      free(p);
      free(actions);
      throw std::bad_alloc();
    }
    for (size_t i = 0; i < plan.actions.size(); ++i) {
      const Action& a = plan.actions[i];
      AggvmSchedAction& c = actions[i];
      c.kind = a.kind == Action::Kind::kMoveVcpu   ? AGGVM_SCHED_MOVE_VCPU
               : a.kind == Action::Kind::kMoveHome ? AGGVM_SCHED_MOVE_HOME
                                                   : AGGVM_SCHED_RELEASE;
      c.index = a.index;
      c.from = a.from;
      c.to = a.to;
      c.required = a.required;
      c.saves_us = a.saves_us;
      std::snprintf(c.reason, sizeof c.reason, "%s", a.reason.c_str());
    }
    p->actions = actions;
    p->n_actions = plan.actions.size();
    p->cost_us = plan.cost_us;
    p->cost_after_us = plan.cost_after_us;
    *out = p;
  });
}

void aggvm_sched_plan_free(AggvmSchedPlan* plan) {
  if (!plan) return;
  free(plan->actions);
  free(plan);
}
