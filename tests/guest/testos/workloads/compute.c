/* compute: xorshift + array update on private memory in ring 3, every vCPU. */
#include "workloads.h"
#include "../ulib.h"

#define WORDS 2048                  /* 16 KiB per vCPU, one private page run */

struct compute_shared {
    struct ubarrier start;
    u64 window;                     /* TSC ticks */
    u64 checksum[MAX_CPUS];
};

static u64 compute_mem[MAX_CPUS][WORDS] __attribute__((aligned(4096)));

static u64 compute_user(struct ujob *j)
{
    struct compute_shared *s = j->shared;
    u64 *a = compute_mem[j->cpu];
    u64 x = 0x9E3779B97F4A7C15ull ^ (j->cpu + 1), ops = 0;
    if (!ubarrier_wait(&s->start, j->n, start_deadline()))
        return 0;
    u64 end = rdtsc() + s->window;
    do {
        for (int i = 0; i < 4096; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            a[x % WORDS] += x;
        }
        ops += 4096;
    } while (rdtsc() < end);
    u64 sum = 0;
    for (int i = 0; i < WORDS; i++)
        sum ^= a[i];
    s->checksum[j->cpu] = sum;
    return ops;
}

enum wl_status wl_compute(const struct params *p)
{
    static struct compute_shared s;
    static struct ujob jobs[MAX_CPUS];
    memset(&s, 0, sizeof(s));
    s.window = ms_to_tsc(p->ms);
    bool ok = run_user_on(all_cpus_mask(), compute_user, &s, jobs, job_timeout_ms(p), NULL);
    u64 total = 0;
    for (unsigned i = 0; i < ncpus; i++) {
        ok = ok && jobs[i].result > 0;
        total += jobs[i].result;
    }
    u64 ops_per_s = total * 1000 / p->ms;
    report("compute", ok ? WL_PASS : WL_FAIL, "ops_per_s=%llu per_vcpu_ops_per_s=%llu",
           (unsigned long long)ops_per_s, (unsigned long long)(ops_per_s / ncpus));
    return ok ? WL_PASS : WL_FAIL;
}
