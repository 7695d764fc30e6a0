/*
 * gap: how long the peer runs no guest code, seen from inside the guest.
 * The peer spins in ring 3 for the window reading its TSC; every step
 * longer than GAP_US is a time it did not run (the host preempted its
 * thread, or the vCPU was moving between nodes), and the first MAX_GAPS
 * are reported in microseconds.  The guest's TSC is the cluster's clock,
 * so a move shows as exactly its downtime.  Not part of "all": the host
 * measures with it (make bench-migration).
 */
#include "workloads.h"
#include "../ulib.h"

#define GAP_US 100
#define MAX_GAPS 128

static struct gap_shared {
    u64 window;
    u32 n;
    u32 gap_us[MAX_GAPS];
    u64 steps;
} gap_state;

static u64 gap_user(struct ujob *j)
{
    struct gap_shared *s = j->shared;
    const u64 threshold = tsc_hz / 1000000 * GAP_US;
    u64 t0 = rdtsc(), prev = t0, now, steps = 0;
    while ((now = rdtsc()) - t0 < s->window) {
        if (now - prev > threshold && s->n < MAX_GAPS)
            s->gap_us[s->n++] = (u32)(tsc_to_ns(now - prev) / 1000);
        prev = now;
        steps++;
    }
    s->steps = steps;
    return 0;
}

enum wl_status wl_gap(const struct params *p)
{
    if (peer_missing("gap", p))
        return WL_SKIP;
    static struct ujob jobs[MAX_CPUS];
    struct gap_shared *s = &gap_state;
    memset(s, 0, sizeof(*s));
    s->window = ms_to_tsc(p->ms);
    bool ok = run_user_on(1ull << p->peer, gap_user, s, jobs, job_timeout_ms(p), NULL) &&
              jobs[p->peer].result == 0 && s->steps > 0;
    char list[MAX_GAPS * 11 + 1] = "";
    size_t used = 0;
    u32 max = 0;
    for (u32 i = 0; i < s->n; i++) {
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%u", i ? "," : "", s->gap_us[i]);
        max = s->gap_us[i] > max ? s->gap_us[i] : max;
    }
    report("gap", ok ? WL_PASS : WL_FAIL, "peer=%u gaps=%u max_us=%u gaps_us=%s", p->peer, s->n, max,
           s->n ? list : "none");
    return ok ? WL_PASS : WL_FAIL;
}
