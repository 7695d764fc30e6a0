/*
 * tscsync: is the TSC one clock for vCPU 0 and its peer?  They pass a
 * token back and forth in ring 3, each stamping it with its TSC as it takes
 * it.  Whatever one vCPU reads after it saw the other's stamp must not be
 * smaller: a smaller value is a warp, time going backwards between vCPUs
 * (Linux's check_tsc_warp does the same).  Also reports the smallest
 * one-way gaps, which bound how far apart the two TSCs can be.
 */
#include "workloads.h"
#include "../ulib.h"

#define STOP (~0ull)

struct tscsync_shared {
    struct ubarrier bar;
    u64 window;
    volatile u64 token __attribute__((aligned(64)));
    volatile u64 stamp;             /* TSC of whoever passed the token */
    u64 rounds, warps, max_warp;
    u64 min_gap[2];                 /* 0 -> peer, peer -> 0 */
};

/* rdtsc, not before the loads that came before it. */
static inline u64 rdtsc_ordered(void)
{
    __asm__ volatile("lfence" ::: "memory");
    return rdtsc();
}

/* Records what a vCPU reads as it takes the token stamped by the other. */
static void check_stamp(struct tscsync_shared *s, unsigned dir, u64 then, u64 now)
{
    if (now < then) {
        s->warps++;
        if (then - now > s->max_warp)
            s->max_warp = then - now;
    } else if (now - then < s->min_gap[dir]) {
        s->min_gap[dir] = now - then;
    }
}

static u64 tscsync_user(struct ujob *j)
{
    struct tscsync_shared *s = j->shared;
    if (!ubarrier_wait(&s->bar, 2, start_deadline()))
        return 1;
    if (j->rank == 0) {
        u64 t0 = rdtsc_ordered(), end = t0 + s->window, n = 0, now = t0;
        while (now < end) {
            s->stamp = rdtsc_ordered();
            __atomic_store_n(&s->token, 2 * ++n - 1, __ATOMIC_SEQ_CST);
            u64 limit = now + ms_to_tsc(1000);
            while (__atomic_load_n(&s->token, __ATOMIC_SEQ_CST) != 2 * n) {
                if (rdtsc() > limit) {
                    __atomic_store_n(&s->token, STOP, __ATOMIC_SEQ_CST);
                    return 1;
                }
                cpu_relax();
            }
            now = rdtsc_ordered();
            check_stamp(s, 1, s->stamp, now);
        }
        s->rounds = n;
        __atomic_store_n(&s->token, STOP, __ATOMIC_SEQ_CST);
        return 0;
    }
    u64 limit = rdtsc() + s->window + ms_to_tsc(2000), seen = 0;
    for (;;) {
        u64 v = __atomic_load_n(&s->token, __ATOMIC_SEQ_CST);
        if (v == STOP)
            return 0;
        if (v != seen && (v & 1)) {
            u64 now = rdtsc_ordered();
            check_stamp(s, 0, s->stamp, now);
            s->stamp = rdtsc_ordered();
            seen = v + 1;
            __atomic_store_n(&s->token, seen, __ATOMIC_SEQ_CST);
        } else if (rdtsc() > limit) {
            return 1;
        } else {
            cpu_relax();
        }
    }
}

enum wl_status wl_tscsync(const struct params *p)
{
    if (peer_missing("tscsync", p))
        return WL_SKIP;
    static struct tscsync_shared s;
    memset(&s, 0, sizeof(s));
    s.window = ms_to_tsc(p->ms);
    s.min_gap[0] = s.min_gap[1] = ~0ull;
    bool ran = run_with_peer(p, tscsync_user, &s) && s.rounds > 0;
    bool ok = ran && s.warps == 0;
    report("tscsync", ok ? WL_PASS : WL_FAIL,
           "peer=%u rounds=%llu warps=%llu max_warp_ns=%llu min_gap_ns=%llu,%llu", p->peer,
           (unsigned long long)s.rounds, (unsigned long long)s.warps,
           (unsigned long long)tsc_to_ns(s.max_warp),
           (unsigned long long)(s.min_gap[0] == ~0ull ? 0 : tsc_to_ns(s.min_gap[0])),
           (unsigned long long)(s.min_gap[1] == ~0ull ? 0 : tsc_to_ns(s.min_gap[1])));
    return ok ? WL_PASS : WL_FAIL;
}
