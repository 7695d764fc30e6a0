/*
 * timer: a periodic LAPIC timer on every vCPU while it spins in ring 3;
 * each vCPU must see between 1/4 and 1.1x (+2) of window * hz ticks.
 * The lower bound is loose on purpose: QEMU coalesces the ticks of a
 * vCPU thread that the host does not run (4 vCPUs on 2 busy cores lose
 * up to 2/3 under TCG); extra ticks are never tolerated.
 */
#include "workloads.h"
#include "../ulib.h"

extern u64 apic_timer_hz;

struct timer_shared {
    struct ubarrier bar;
    u64 window;
    u32 count;                      /* LAPIC initial count per period */
    u64 ticks[MAX_CPUS];
};

static u64 timer_user(struct ujob *j)
{
    struct timer_shared *s = j->shared;
    if (!ubarrier_wait(&s->bar, j->n, start_deadline()))
        return 1;
    const volatile u64 *ticks = &cpus[j->cpu].timer_ticks;
    u64 t0 = rdtsc(), k0 = *ticks;
    while (rdtsc() - t0 < s->window)
        cpu_relax();
    s->ticks[j->cpu] = *ticks - k0;
    return 0;
}

static void timer_start(struct percpu *c, void *arg)
{
    (void)c;
    lapic_timer_periodic(VEC_TIMER, ((struct timer_shared *)arg)->count);
}

static void timer_end(struct percpu *c, void *arg)
{
    (void)c;
    (void)arg;
    lapic_timer_stop();
}

enum wl_status wl_timer(const struct params *p)
{
    static struct timer_shared s;
    static struct ujob jobs[MAX_CPUS];
    memset(&s, 0, sizeof(s));
    s.window = ms_to_tsc(p->ms);
    s.count = (u32)(apic_timer_hz / p->hz);
    const struct user_hooks hooks = { timer_start, timer_end, &s };
    bool ok = s.count > 0 &&
              run_user_on(all_cpus_mask(), timer_user, &s, jobs, job_timeout_ms(p), &hooks);

    u64 expect = p->ms * p->hz / 1000, lo = expect / 4, hi = expect * 11 / 10 + 2;
    u64 min = ~0ull, max = 0;
    for (unsigned i = 0; i < ncpus; i++) {
        ok = ok && jobs[i].result == 0 && s.ticks[i] >= lo && s.ticks[i] <= hi;
        min = s.ticks[i] < min ? s.ticks[i] : min;
        max = s.ticks[i] > max ? s.ticks[i] : max;
    }
    report("timer", ok ? WL_PASS : WL_FAIL,
           "hz=%u expected_ticks=%llu min_ticks=%llu max_ticks=%llu range=%llu-%llu", p->hz,
           (unsigned long long)expect, (unsigned long long)min, (unsigned long long)max,
           (unsigned long long)lo, (unsigned long long)hi);
    return ok ? WL_PASS : WL_FAIL;
}
