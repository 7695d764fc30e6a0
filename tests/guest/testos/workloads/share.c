/*
 * share: vCPU 0 and its peer write the same pages, in turn and for ever:
 * each round, a lock xadd on the first word of every page of a shared
 * area (in the kernel image, hence in the first NUMA node's memory).  In
 * an aggregated guest whose two vCPUs run on different nodes, every write
 * of one takes the page from the other: a DSM fault, tens of microseconds.
 * Each write is timed; one slower than slow_us (default 50 us) counts as
 * "slow": a fault that left the host (about 100 us under KVM here), or
 * the host not running the vCPU for that long.  Per window of
 * 250 ms the workload prints the writes of both vCPUs and the slow ones,
 * so the host sees the rate change when the scheduler moves a vCPU:
 *
 *     testos: share-window t_ms=750 ops=123456 slow=789
 *
 * The result is exact: every page's counter must equal the sum of both
 * vCPUs' rounds.  duty=N (percent, default 100) makes each vCPU halt until
 * its next timer tick (hz) whenever it ran more than N% of the time so
 * far: a guest whose load fits fewer host cores (consolidation).
 */
#include "workloads.h"
#include "../ulib.h"

#define PAGE 4096
#define SHARE_PAGES 64
#define SHARE_WINDOW_MS 250
#define SHARE_MAX_WINDOWS 512
#define SHARE_SLOW_US 50

extern u64 apic_timer_hz;

static u8 share_area[SHARE_PAGES][PAGE] __attribute__((aligned(PAGE)));

struct share_shared {
    struct ubarrier bar;
    u64 window, slice, slow, period;
    unsigned duty;
    u32 timer_count;
    u64 rounds[MAX_CPUS];
    u64 halts[MAX_CPUS];
    u64 ops[SHARE_MAX_WINDOWS];
    u64 slow_n[SHARE_MAX_WINDOWS];
};

static void share_flush(struct share_shared *s, u64 w, u64 *ops, u64 *slow)
{
    if (w < SHARE_MAX_WINDOWS) {
        __atomic_fetch_add(&s->ops[w], *ops, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->slow_n[w], *slow, __ATOMIC_RELAXED);
    }
    *ops = *slow = 0;
}

static u64 share_user(struct ujob *j)
{
    struct share_shared *s = j->shared;
    if (!ubarrier_wait(&s->bar, 2, start_deadline()))
        return 1;
    u64 t0 = rdtsc(), now = t0, busy = 0, w = 0, ops = 0, slow = 0, rounds = 0;
    while (now - t0 < s->window) {
        u64 start = rdtsc();
        for (unsigned k = 0; k < SHARE_PAGES; k++) {
            u64 a = rdtsc();
            __atomic_fetch_add((u64 *)(void *)share_area[k], 1, __ATOMIC_SEQ_CST);
            slow += rdtsc() - a > s->slow;
        }
        ops += SHARE_PAGES;
        rounds++;
        now = rdtsc();
        busy += now - start;
        if ((now - t0) / s->slice != w) {
            share_flush(s, w, &ops, &slow);
            w = (now - t0) / s->slice;
        }
        if (s->duty < 100 && busy * 100 > (u64)s->duty * (now - t0)) {
            u_syscall(SYS_HALT, 0);
            s->halts[j->cpu]++;
            now = rdtsc();
        }
    }
    share_flush(s, w, &ops, &slow);
    s->rounds[j->cpu] = rounds;
    return 0;
}

static void share_timer_start(struct percpu *c, void *arg)
{
    (void)c;
    const struct share_shared *s = arg;
    if (s->duty < 100)
        lapic_timer_periodic(VEC_TIMER, s->timer_count);
}

static void share_timer_end(struct percpu *c, void *arg)
{
    (void)c;
    if (((const struct share_shared *)arg)->duty < 100)
        lapic_timer_stop();
}

enum wl_status wl_share(const struct params *p)
{
    if (peer_missing("share", p))
        return WL_SKIP;
    static struct share_shared s;
    static struct ujob jobs[MAX_CPUS];
    memset(&s, 0, sizeof(s));
    memset(share_area, 0, sizeof(share_area));
    s.window = ms_to_tsc(p->ms);
    s.slice = ms_to_tsc(SHARE_WINDOW_MS);
    s.slow = ms_to_tsc(1) * (p->slow_us ? p->slow_us : SHARE_SLOW_US) / 1000;
    s.duty = p->duty ? p->duty : 100;
    s.timer_count = (u32)(apic_timer_hz / p->hz);
    const struct user_hooks hooks = { share_timer_start, share_timer_end, &s };
    bool ok = run_user_on(1ull | 1ull << p->peer, share_user, &s, jobs, job_timeout_ms(p), &hooks) &&
              jobs[0].result == 0 && jobs[p->peer].result == 0;

    u64 expect = s.rounds[0] + s.rounds[p->peer], bad = 0;
    for (unsigned k = 0; k < SHARE_PAGES; k++)
        bad += *(const u64 *)(const void *)share_area[k] != expect;
    ok = ok && bad == 0 && s.rounds[0] > 0 && s.rounds[p->peer] > 0;
    u64 windows = (p->ms + SHARE_WINDOW_MS - 1) / SHARE_WINDOW_MS;
    for (u64 w = 0; w < windows && w < SHARE_MAX_WINDOWS; w++)
        kprintf("testos: share-window t_ms=%llu ops=%llu slow=%llu\n",
                (unsigned long long)((w + 1) * SHARE_WINDOW_MS), (unsigned long long)s.ops[w],
                (unsigned long long)s.slow_n[w]);
    report("share", ok ? WL_PASS : WL_FAIL,
           "peer=%u pages=%u rounds=%llu,%llu bad_pages=%llu halts=%llu,%llu duty=%u "
           "slow_us=%u", p->peer,
           SHARE_PAGES, (unsigned long long)s.rounds[0], (unsigned long long)s.rounds[p->peer],
           (unsigned long long)bad, (unsigned long long)s.halts[0],
           (unsigned long long)s.halts[p->peer], s.duty,
           p->slow_us ? p->slow_us : SHARE_SLOW_US);
    return ok ? WL_PASS : WL_FAIL;
}
