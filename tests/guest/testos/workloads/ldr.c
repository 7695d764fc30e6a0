/*
 * ldr: an IPI to a logical destination finds the LDR its target wrote
 * just before, whichever node resolves it.
 *
 * Each round the peer moves its LDR (flat model) to another bit, then
 * says so in shared memory and waits, interrupts on, for the IPI; vCPU 0
 * sees the round and sends a fixed IPI to that logical destination at
 * once.  In an aggregated guest vCPU 0's node resolves the destination
 * with its own copy of the peer's LDR: if the LDR write completed before
 * every node had it, an IPI goes to the old bit and is lost.
 */
#include "workloads.h"

#define LAPIC_LDR 0x0D0
#define ICR_FIXED 0x00004000     /* fixed, assert */
#define ICR_LOGICAL (1u << 11)
#define ROUNDS 64
#define ROUND_MS 2000

static volatile u32 *lapic_reg(u32 reg) { return (volatile u32 *)(uintptr_t)(0xFEE00000u + reg); }

static struct ldr_shared {
    unsigned peer;
    volatile u32 round;         /* the peer's LDR is ready for this round */
    volatile u32 lost;          /* the first round whose IPI never came */
} ldr_state;

static u8 ldr_bit(u32 round) { return (u8)(1u << (round % 8)); }

static void ldr_job(struct percpu *c, void *arg)
{
    struct ldr_shared *s = arg;
    if (c->index == s->peer) {
        u64 base = c->wakes;
        for (u32 r = 1; r <= ROUNDS && !s->lost; r++) {
            *lapic_reg(LAPIC_LDR) = (u32)ldr_bit(r) << 24;
            __atomic_store_n(&s->round, r, __ATOMIC_RELEASE);
            u64 deadline = rdtsc() + ms_to_tsc(ROUND_MS);
            __asm__ volatile("sti" ::: "memory");
            while (c->wakes < base + r && rdtsc() < deadline)
                cpu_relax();
            __asm__ volatile("cli" ::: "memory");
            if (c->wakes < base + r)
                s->lost = r;
        }
        *lapic_reg(LAPIC_LDR) = 0;
        __atomic_store_n(&s->round, ROUNDS + 1, __ATOMIC_RELEASE);
        return;
    }
    for (u32 r = 1; r <= ROUNDS; r++) {
        u64 deadline = rdtsc() + ms_to_tsc(2 * ROUND_MS);
        while (__atomic_load_n(&s->round, __ATOMIC_ACQUIRE) < r && !s->lost &&
               rdtsc() < deadline)
            cpu_relax();
        if (s->lost || s->round < r)
            return;
        lapic_send_ipi(ldr_bit(r), ICR_FIXED | ICR_LOGICAL | VEC_WAKE);
    }
}

enum wl_status wl_ldr(const struct params *p)
{
    if (peer_missing("ldr", p))
        return WL_SKIP;
    struct ldr_shared *s = &ldr_state;
    s->peer = p->peer;
    s->round = 0;
    s->lost = 0;
    bool ok = smp_run(1ull | 1ull << p->peer, ldr_job, s, ROUNDS * ROUND_MS + 10000);
    ok = ok && !s->lost && s->round == ROUNDS + 1;
    report("ldr", ok ? WL_PASS : WL_FAIL, "peer=%u rounds=%u lost_at=%u", p->peer,
           s->round > ROUNDS ? ROUNDS : s->round, s->lost);
    return ok ? WL_PASS : WL_FAIL;
}
