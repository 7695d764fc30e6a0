/*
 * devloop: the peer reads a device port (0x61, the PC speaker and PIT
 * gate, which every PC machine has and whose read changes nothing) in
 * ring 0 for the window, and reports how many reads it made and how long
 * one took.  In an aggregated guest with the peer on a worker every read
 * is a round trip to node 0's devices: it keeps a forwarded access in
 * flight for the whole window (the aggregated bqlstuck scenario stalls
 * node 0 under it).  Not part of "all".
 */
#include "workloads.h"

static struct devloop_shared {
    u64 window;
    u64 reads, ticks;
} devloop_state;

static void devloop_job(struct percpu *c, void *arg)
{
    (void)c;
    struct devloop_shared *s = arg;
    u64 t0 = rdtsc(), now = t0, n = 0;
    while (now - t0 < s->window) {
        (void)inb(0x61);
        n++;
        now = rdtsc();
    }
    s->reads = n;
    s->ticks = now - t0;
}

enum wl_status wl_devloop(const struct params *p)
{
    if (peer_missing("devloop", p))
        return WL_SKIP;
    struct devloop_shared *s = &devloop_state;
    memset(s, 0, sizeof(*s));
    s->window = ms_to_tsc(p->ms);
    bool ok = smp_run(1ull << p->peer, devloop_job, s, job_timeout_ms(p)) && s->reads > 0;
    u64 ns = s->reads ? tsc_to_ns(s->ticks) / s->reads : 0;
    char us[32];
    fmt_centi(us, sizeof(us), ns / 10);
    report("devloop", ok ? WL_PASS : WL_FAIL, "peer=%u reads=%llu read_us=%s", p->peer,
           (unsigned long long)s->reads, us);
    return ok ? WL_PASS : WL_FAIL;
}
