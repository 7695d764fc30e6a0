/*
 * libaggvm-dsm, vCPU migration: the placement of an aggregated guest's
 * vCPUs over its nodes, the checks a move must pass, and the hand-off
 * messages the nodes exchange (protobuf) while a vCPU moves.
 *
 * A move of vCPU v from node S to node D, driven by node 0:
 *   1. node 0: aggvm_placement_begin_move() checks it and marks v moving;
 *   2. node 0 -> D: a MoveOrder; D holds interrupts for v until its state;
 *   3. node 0 -> S: a MoveOrder; S stops v, points v at D in its table
 *      (interrupts that reach S from now on go to D) and sends D the state;
 *   4. D loads it, lets v run, replays what it held; answers with the
 *      downtime;
 *   5. node 0 -> every other node: a Placement; each commits it;
 *   6. node 0 commits, which ends the move (aggvm_placement_commit()).
 * Each table has an epoch, raised by every commit: a Placement older
 * than a node's table changes nothing.
 *
 * Functions return 0 or a negative errno; on error *errmsg, when given,
 * receives a message to free with aggvm_dsm_free_error().
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef AGGVM_MIGRATION_H
#define AGGVM_MIGRATION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AggvmPlacement AggvmPlacement;

/* What node 0 knows of each node when it checks a move. */
typedef enum AggvmMoveNodeState {
    AGGVM_MOVE_NODE_USABLE = 0,     /* connected and running */
    AGGVM_MOVE_NODE_NOT_CONNECTED = 1,
    AGGVM_MOVE_NODE_FAILED = 2,
    AGGVM_MOVE_NODE_LEAVING = 3,
} AggvmMoveNodeState;

/* @vcpu_node[i]: the node vCPU i runs on at start (epoch 0). */
int aggvm_placement_new(uint16_t n_nodes, uint32_t n_vcpus,
                        const uint16_t *vcpu_node, AggvmPlacement **out,
                        char **errmsg);
void aggvm_placement_free(AggvmPlacement *p);

/* The node vCPU @vcpu runs on, or -1 when there is no such vCPU. */
int aggvm_placement_node_of(const AggvmPlacement *p, uint32_t vcpu);
uint64_t aggvm_placement_epoch(const AggvmPlacement *p);
/* 1 while @vcpu moves (between begin_move and commit or abort). */
int aggvm_placement_is_moving(const AggvmPlacement *p, uint32_t vcpu);
/*
 * The node @vcpu is moving to, or -1 when it is not moving.  The vCPU may
 * run there already: the destination starts it before node 0 commits.
 */
int aggvm_placement_moving_to(const AggvmPlacement *p, uint32_t vcpu);

/*
 * Node 0: checks that @vcpu may move to @to, given each node's state
 * (@states[n_nodes]), and marks it moving.  Refused: an unknown vCPU or
 * node, a vCPU already there or already moving, a destination or source
 * that is failed, leaving or not connected.  *epoch: the epoch the move
 * will commit.
 */
int aggvm_placement_begin_move(AggvmPlacement *p, uint32_t vcpu, uint16_t to,
                               const AggvmMoveNodeState *states,
                               uint64_t *epoch, char **errmsg);
/* Node 0: the move failed; @vcpu stays where it was. */
int aggvm_placement_abort_move(AggvmPlacement *p, uint32_t vcpu);

/*
 * Any node: @vcpu runs on @node from @epoch on.  An epoch older than the
 * table's is ignored (returns 0, changes nothing); it ends a move.
 */
int aggvm_placement_commit(AggvmPlacement *p, uint32_t vcpu, uint16_t node,
                           uint64_t epoch, char **errmsg);

/* ---- the hand-off messages --------------------------------------------- */

typedef enum AggvmHandoffKind {
    AGGVM_HANDOFF_MOVE_ORDER = 1,
    AGGVM_HANDOFF_VCPU_STATE = 2,
    AGGVM_HANDOFF_PLACEMENT = 3,
    AGGVM_HANDOFF_RESULT = 4,
} AggvmHandoffKind;

/* One message; the byte fields point into the caller's or decoder's memory. */
typedef struct AggvmHandoff {
    AggvmHandoffKind kind;
    uint32_t vcpu;
    uint16_t from, to;              /* Placement: `to` is the node */
    uint64_t epoch;
    const void *cpu_common, *cpu, *apic;   /* VcpuState */
    size_t cpu_common_len, cpu_len, apic_len;
    int64_t stopped_at_ns;          /* VcpuState */
    int64_t downtime_ns;            /* Result */
    const char *error;              /* Result: NULL or "" on success */
} AggvmHandoff;

/*
 * Encodes @h (its kind decides which fields count) into a new buffer,
 * *buf, of *len bytes, to free with aggvm_handoff_free_buffer().
 */
int aggvm_handoff_encode(const AggvmHandoff *h, void **buf, size_t *len,
                         char **errmsg);
void aggvm_handoff_free_buffer(void *buf);

/*
 * Decodes @len bytes as a message of @kind into *h.  Every node and vCPU
 * id is checked against @n_nodes and @n_vcpus.  *h's byte fields and
 * error point into *owner, to free with aggvm_handoff_free_decoded().
 */
int aggvm_handoff_decode(AggvmHandoffKind kind, const void *data, size_t len,
                         uint16_t n_nodes, uint32_t n_vcpus, AggvmHandoff *h,
                         void **owner, char **errmsg);
void aggvm_handoff_free_decoded(void *owner);

#ifdef __cplusplus
}
#endif

#endif /* AGGVM_MIGRATION_H */
