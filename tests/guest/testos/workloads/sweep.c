/*
 * sweep: every page of RAM beyond the kernel gets a pattern derived from
 * its address plus a checksum word; then each vCPU verifies the pages
 * another vCPU wrote (the same one when there is only one).
 */
#include "workloads.h"
#include "../ulib.h"

#define PAGE 4096
#define WORDS (PAGE / 8)

struct sweep_shared {
    struct ubarrier bar;
    struct ram_region regions[MAX_RAM_REGIONS];
    unsigned nregions;
    u64 pages;
    u64 seed;
    u64 t0, t1, t2;
    u64 errors[MAX_CPUS];
    u64 first_bad[MAX_CPUS];
};

static inline u64 pattern(u64 addr, u64 seed) { return (addr ^ seed) * 0x9E3779B97F4A7C15ull; }

/* The address of the idx-th swept page. */
static u64 page_addr(const struct sweep_shared *s, u64 idx)
{
    for (unsigned r = 0; r < s->nregions; r++) {
        u64 n = (s->regions[r].end - s->regions[r].start) / PAGE;
        if (idx < n)
            return s->regions[r].start + idx * PAGE;
        idx -= n;
    }
    return 0;
}

static void write_page(u64 addr, u64 seed)
{
    u64 *w = (u64 *)(uintptr_t)addr, sum = 0;
    for (unsigned i = 0; i < WORDS - 1; i++) {
        u64 v = pattern(addr + i * 8, seed);
        w[i] = v;
        sum += v;
    }
    w[WORDS - 1] = sum;
}

static bool verify_page(u64 addr, u64 seed)
{
    const u64 *w = (const u64 *)(uintptr_t)addr;
    u64 sum = 0;
    bool ok = true;
    for (unsigned i = 0; i < WORDS - 1; i++) {
        ok &= w[i] == pattern(addr + i * 8, seed);
        sum += w[i];
    }
    return ok && w[WORDS - 1] == sum;
}

static u64 sweep_user(struct ujob *j)
{
    struct sweep_shared *s = j->shared;
    u64 slow = ms_to_tsc(120000);
    if (!ubarrier_wait(&s->bar, j->n, start_deadline()))
        return 1;
    if (j->rank == 0)
        s->t0 = rdtsc();
    u64 lo = s->pages * j->rank / j->n, hi = s->pages * (j->rank + 1) / j->n;
    for (u64 i = lo; i < hi; i++)
        write_page(page_addr(s, i), s->seed);
    if (!ubarrier_wait(&s->bar, j->n, rdtsc() + slow))
        return 1;
    if (j->rank == 0)
        s->t1 = rdtsc();
    unsigned other = (j->rank + 1) % j->n;
    lo = s->pages * other / j->n;
    hi = s->pages * (other + 1) / j->n;
    for (u64 i = lo; i < hi; i++) {
        u64 a = page_addr(s, i);
        if (!verify_page(a, s->seed) && s->errors[j->cpu]++ == 0)
            s->first_bad[j->cpu] = a;
    }
    if (!ubarrier_wait(&s->bar, j->n, rdtsc() + slow))
        return 1;
    if (j->rank == 0)
        s->t2 = rdtsc();
    return 0;
}

enum wl_status wl_sweep(const struct params *p)
{
    static struct sweep_shared s;
    static struct ujob jobs[MAX_CPUS];
    memset(&s, 0, sizeof(s));
    s.seed = rdtsc() | 1;
    for (unsigned r = 0; r < p->boot->nram; r++) {
        u64 start = ALIGN_UP(p->boot->ram[r].start, PAGE), end = p->boot->ram[r].end & ~(u64)(PAGE - 1);
        if (start < p->kernel_end)
            start = p->kernel_end;
        if (end > p->mapped_limit)
            end = p->mapped_limit;
        if (end > start) {
            s.regions[s.nregions++] = (struct ram_region){ start, end };
            s.pages += (end - start) / PAGE;
        }
    }
    bool ok = s.pages > 0 && run_user_on(all_cpus_mask(), sweep_user, &s, jobs, 240000, NULL);
    u64 errors = 0, first_bad = 0;
    for (unsigned i = 0; i < ncpus; i++) {
        ok = ok && jobs[i].result == 0;
        if (s.errors[i] && !first_bad)
            first_bad = s.first_bad[i];
        errors += s.errors[i];
    }
    ok = ok && errors == 0;
    u64 bytes = s.pages * PAGE;
    report("sweep", ok ? WL_PASS : WL_FAIL,
           "mb=%llu write_mb_s=%llu verify_mb_s=%llu bad_pages=%llu first_bad=%llx cross_vcpu=%u",
           (unsigned long long)(bytes >> 20),
           (unsigned long long)(per_second(bytes, s.t1 - s.t0) >> 20),
           (unsigned long long)(per_second(bytes, s.t2 - s.t1) >> 20),
           (unsigned long long)errors, (unsigned long long)first_bad, ncpus > 1);
    return ok ? WL_PASS : WL_FAIL;
}
