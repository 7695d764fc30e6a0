/*
 * aggvm vCPU placement scheduler: the C API that QEMU's node 0 uses.
 *
 * Each interval, the embedder fills an AggvmSchedSnapshot (where each vCPU
 * runs, what it faulted on, where each range of guest memory is homed,
 * what each node can take and whether it is failing, wanted back or may
 * be released), asks for a plan, and carries it out: vCPU moves
 * (x-aggvm-migrate-vcpu), home moves (aggvm_dsm_rehome()) and releases
 * (x-aggvm-evacuate-node).  The library is pure: it keeps only what its
 * hysteresis needs (when each vCPU and range last moved).
 *
 * Every function returning int returns 0 or a negative errno, with
 * *errmsg (if errmsg is not NULL) set to a malloc'ed message naming the
 * problem, to free with free().
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef AGGVM_SCHEDULER_H
#define AGGVM_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AggvmSched AggvmSched;

typedef struct AggvmSchedParams {
    uint32_t budget;        /* voluntary moves per interval */
    double min_gain;        /* share of the cost a move must save, 0..1 */
    double horizon;         /* intervals a move must pay for itself in */
    uint32_t cooldown;      /* intervals before the same vCPU/range moves again */
    double fill;            /* consolidate: a node is full at this share of its cores */
} AggvmSchedParams;

/* The defaults: budget 2, min_gain 0.05, horizon 10, cooldown 3, fill 0.8. */
void aggvm_sched_default_params(AggvmSchedParams *params);

/*
 * @goals: "affinity,balance", "affinity=2,consolidate=0.5" or "none"
 * (weights 0..100; health and make-room are always on).
 */
int aggvm_sched_new(const char *goals, const AggvmSchedParams *params,
                    AggvmSched **out, char **errmsg);
void aggvm_sched_free(AggvmSched *sched);
int aggvm_sched_set_goals(AggvmSched *sched, const char *goals,
                          char **errmsg);
/* The goals as "affinity=1,balance=0.5"; malloc'ed, to free(). */
char *aggvm_sched_goals(const AggvmSched *sched);
/* -EINVAL, naming it, for a parameter out of range; nothing changes then. */
int aggvm_sched_set_params(AggvmSched *sched, const AggvmSchedParams *params,
                           char **errmsg);
void aggvm_sched_params(const AggvmSched *sched, AggvmSchedParams *out);

typedef struct AggvmSchedNode {
    uint32_t cores;
    uint8_t present;        /* connected and usable */
    uint8_t failing;        /* empty it before every other goal */
    uint8_t draining;       /* an operator wants it back (make-room) */
    uint8_t may_release;    /* consolidate may empty and release it */
} AggvmSchedNode;

typedef struct AggvmSchedFault {
    uint32_t range;
    uint64_t count;
} AggvmSchedFault;

typedef struct AggvmSchedVcpu {
    uint16_t node;
    double busy;                    /* share of the interval it ran */
    const AggvmSchedFault *faults;
    size_t n_faults;
} AggvmSchedVcpu;

typedef struct AggvmSchedRange {
    uint64_t gpa, size;
    uint16_t home;
} AggvmSchedRange;

typedef struct AggvmSchedSnapshot {
    const AggvmSchedNode *nodes;    /* by node id */
    size_t n_nodes;
    const AggvmSchedVcpu *vcpus;    /* by vCPU index */
    size_t n_vcpus;
    const AggvmSchedRange *ranges;
    size_t n_ranges;
    uint64_t interval_us;
    double remote_fault_us, vcpu_move_us, rehome_us_per_mib;
} AggvmSchedSnapshot;

typedef enum AggvmSchedActionKind {
    AGGVM_SCHED_MOVE_VCPU = 0,
    AGGVM_SCHED_MOVE_HOME = 1,      /* index: the range */
    AGGVM_SCHED_RELEASE = 2,        /* index: the node */
} AggvmSchedActionKind;

typedef struct AggvmSchedAction {
    AggvmSchedActionKind kind;
    uint32_t index;
    uint16_t from, to;
    uint8_t required;       /* health or make-room: outside the budget */
    double saves_us;
    char reason[200];
} AggvmSchedAction;

typedef struct AggvmSchedPlan {
    AggvmSchedAction *actions;
    size_t n_actions;
    double cost_us, cost_after_us;
} AggvmSchedPlan;

/* One interval's plan; free it with aggvm_sched_plan_free(). */
int aggvm_sched_plan(AggvmSched *sched, const AggvmSchedSnapshot *snapshot,
                     AggvmSchedPlan **out, char **errmsg);
void aggvm_sched_plan_free(AggvmSchedPlan *plan);

#ifdef __cplusplus
}
#endif

#endif /* AGGVM_SCHEDULER_H */
