/* counters: shared lock xadd and lock cmpxchg counters from every vCPU; totals must be exact. */
#include "workloads.h"
#include "../ulib.h"

struct counters_shared {
    struct ubarrier bar;
    u64 iters;
    volatile u64 xadd __attribute__((aligned(64)));
    volatile u64 cas;               /* same line: they contend together */
    u64 t_start, t_end;
};

static u64 counters_user(struct ujob *j)
{
    struct counters_shared *s = j->shared;
    if (!ubarrier_wait(&s->bar, j->n, start_deadline()))
        return 1;
    if (j->rank == 0)
        s->t_start = rdtsc();
    for (u64 i = 0; i < s->iters; i++) {
        __atomic_fetch_add(&s->xadd, 1, __ATOMIC_SEQ_CST);          /* lock xadd */
        u64 old = __atomic_load_n(&s->cas, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(&s->cas, &old, old + 1, false,
                                            __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            ;                                                       /* lock cmpxchg */
    }
    if (!ubarrier_wait(&s->bar, j->n, rdtsc() + ms_to_tsc(60000)))
        return 1;
    if (j->rank == 0)
        s->t_end = rdtsc();
    return 0;
}

enum wl_status wl_counters(const struct params *p)
{
    static struct counters_shared s;
    static struct ujob jobs[MAX_CPUS];
    memset(&s, 0, sizeof(s));
    s.iters = p->iters;
    bool ok = run_user_on(all_cpus_mask(), counters_user, &s, jobs, 120000, NULL);
    for (unsigned i = 0; i < ncpus; i++)
        ok = ok && jobs[i].result == 0;
    u64 expect = p->iters * ncpus;
    ok = ok && s.xadd == expect && s.cas == expect;
    u64 ticks = s.t_end > s.t_start ? s.t_end - s.t_start : 1;
    u64 ops_per_s = per_second(2 * expect, ticks);
    report("counters", ok ? WL_PASS : WL_FAIL,
           "iters=%llu xadd=%llu cmpxchg=%llu expected=%llu ops_per_s=%llu",
           (unsigned long long)p->iters, (unsigned long long)s.xadd,
           (unsigned long long)s.cas, (unsigned long long)expect,
           (unsigned long long)ops_per_s);
    return ok ? WL_PASS : WL_FAIL;
}
