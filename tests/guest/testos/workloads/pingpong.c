/* pingpong: vCPU 0 and its peer bounce a sequence number through one cache line, in ring 3. */
#include "workloads.h"
#include "../ulib.h"

#define STOP (~0ull)

struct pingpong_shared {
    struct ubarrier bar;
    u64 window;
    volatile u64 ping __attribute__((aligned(64)));
    volatile u64 pong;              /* same cache line as ping */
    u64 rounds, ticks;
};

static u64 pingpong_user(struct ujob *j)
{
    struct pingpong_shared *s = j->shared;
    if (!ubarrier_wait(&s->bar, 2, start_deadline()))
        return 1;
    if (j->rank == 0) {
        u64 t0 = rdtsc(), end = t0 + s->window, n = 0, now = t0;
        while (now < end) {
            __atomic_store_n(&s->ping, ++n, __ATOMIC_SEQ_CST);
            u64 limit = now + ms_to_tsc(1000);
            while (__atomic_load_n(&s->pong, __ATOMIC_SEQ_CST) != n) {
                if (rdtsc() > limit) {
                    __atomic_store_n(&s->ping, STOP, __ATOMIC_SEQ_CST);
                    return 1;
                }
                cpu_relax();
            }
            now = rdtsc();
        }
        s->rounds = n;
        s->ticks = now - t0;
        __atomic_store_n(&s->ping, STOP, __ATOMIC_SEQ_CST);
        return 0;
    }
    u64 limit = rdtsc() + s->window + ms_to_tsc(2000);
    for (;;) {
        u64 v = __atomic_load_n(&s->ping, __ATOMIC_SEQ_CST);
        if (v == STOP)
            return 0;
        if (v != __atomic_load_n(&s->pong, __ATOMIC_RELAXED))
            __atomic_store_n(&s->pong, v, __ATOMIC_SEQ_CST);
        else if (rdtsc() > limit)
            return 1;
        else
            cpu_relax();
    }
}

enum wl_status wl_pingpong(const struct params *p)
{
    if (peer_missing("pingpong", p))
        return WL_SKIP;
    static struct pingpong_shared s;
    memset(&s, 0, sizeof(s));
    s.window = ms_to_tsc(p->ms);
    bool ok = run_with_peer(p, pingpong_user, &s) && s.rounds > 0;
    u64 rtt_ns = s.rounds ? tsc_to_ns(s.ticks) / s.rounds : 0;
    report("pingpong", ok ? WL_PASS : WL_FAIL, "peer=%u rounds=%llu rtt_ns=%llu", p->peer,
           (unsigned long long)s.rounds, (unsigned long long)rtt_ns);
    return ok ? WL_PASS : WL_FAIL;
}
