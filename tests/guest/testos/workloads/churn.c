/*
 * churn: every vCPU rewrites its own stripe of RAM over and over for the
 * window (ms), with a new pattern each round, and checks before each round
 * that the stripe still holds the last one; at the end each vCPU checks the
 * stripe of the next vCPU.  Made for migrations of the whole guest while
 * it runs (vCPU 0 prints "testos: churn running" first): a write that the
 * migration lost comes back on the destination as an older round's
 * pattern.  Not part of "all": it only means something with a migration.
 */
#include "workloads.h"
#include "../ulib.h"

#define PAGE 4096
#define WORDS (PAGE / 8)
#define STRIPE_PAGES 256            /* 1 MiB per vCPU */

struct churn_shared {
    struct ubarrier bar;
    u64 base, window, seed;
    u64 rounds[MAX_CPUS];           /* by rank: rounds written */
    u64 bad[MAX_CPUS];              /* by rank: pages found stale */
    u64 first_bad[MAX_CPUS];
};

static inline u64 pattern(u64 addr, u64 seed, u64 round)
{
    return (addr ^ seed ^ (round << 40)) * 0x9E3779B97F4A7C15ull;
}

static void fill(u64 stripe, u64 seed, u64 round)
{
    for (u64 a = stripe; a < stripe + STRIPE_PAGES * PAGE; a += 8)
        *(volatile u64 *)(uintptr_t)a = pattern(a, seed, round);
}

/* Pages of the stripe that do not hold round's pattern. */
static u64 check(struct churn_shared *s, unsigned rank, u64 stripe, u64 round)
{
    u64 bad = 0;
    for (u64 page = stripe; page < stripe + STRIPE_PAGES * PAGE; page += PAGE) {
        bool ok = true;
        for (u64 a = page; a < page + PAGE; a += 8)
            ok &= *(volatile u64 *)(uintptr_t)a == pattern(a, s->seed, round);
        if (!ok && bad++ == 0 && !s->first_bad[rank])
            s->first_bad[rank] = page;
    }
    return bad;
}

static u64 churn_user(struct ujob *j)
{
    struct churn_shared *s = j->shared;
    u64 stripe = s->base + (u64)j->rank * STRIPE_PAGES * PAGE, round = 0;
    if (!ubarrier_wait(&s->bar, j->n, start_deadline()))
        return 1;
    u64 end = rdtsc() + s->window;
    while (rdtsc() < end) {
        if (round)
            s->bad[j->rank] += check(s, j->rank, stripe, round);
        fill(stripe, s->seed, ++round);
    }
    s->rounds[j->rank] = round;
    if (!ubarrier_wait(&s->bar, j->n, rdtsc() + ms_to_tsc(120000)))
        return 1;
    unsigned other = (j->rank + 1) % j->n;
    s->bad[j->rank] += check(s, j->rank, s->base + (u64)other * STRIPE_PAGES * PAGE,
                             s->rounds[other]);
    return 0;
}

enum wl_status wl_churn(const struct params *p)
{
    static struct churn_shared s;
    static struct ujob jobs[MAX_CPUS];
    u64 need = (u64)ncpus * STRIPE_PAGES * PAGE;
    memset(&s, 0, sizeof(s));
    s.window = ms_to_tsc(p->ms);
    s.seed = rdtsc() | 1;
    /* The lowest RAM that fits, or with high=1 the highest: the last NUMA
     * node's, another RAM block in the host than the first node's. */
    for (unsigned r = 0; r < p->boot->nram && (p->high || !s.base); r++) {
        u64 start = ALIGN_UP(p->boot->ram[r].start, PAGE), end = p->boot->ram[r].end;
        if (start < p->kernel_end)
            start = ALIGN_UP(p->kernel_end, PAGE);
        if (end > p->mapped_limit)
            end = p->mapped_limit;
        if (end > start && end - start >= need)
            s.base = p->high ? (end - need) & ~(u64)(PAGE - 1) : start;
    }
    kprintf("testos: churn running ms=%llu\n", (unsigned long long)p->ms);
    bool ok = s.base && run_user_on(all_cpus_mask(), churn_user, &s, jobs, job_timeout_ms(p), NULL);
    u64 bad = 0, rounds = ~0ull, first_bad = 0;
    for (unsigned i = 0; i < ncpus; i++) {
        ok = ok && jobs[i].result == 0;
        bad += s.bad[i];
        rounds = s.rounds[i] < rounds ? s.rounds[i] : rounds;
        if (s.first_bad[i] && !first_bad)
            first_bad = s.first_bad[i];
    }
    ok = ok && bad == 0 && rounds > 1;
    report("churn", ok ? WL_PASS : WL_FAIL,
           "stripe_kb=%u base=%llx min_rounds=%llu bad_pages=%llu first_bad=%llx",
           STRIPE_PAGES * PAGE / 1024, (unsigned long long)s.base, (unsigned long long)rounds,
           (unsigned long long)bad, (unsigned long long)first_bad);
    return ok ? WL_PASS : WL_FAIL;
}
