/*
 * xmc: cross-modifying code.  vCPU 0 calls a function that its peer
 * rewrites ("mov $k, %eax; ret"); after each rewrite the peer raises a flag
 * on another page.  Once vCPU 0 has seen the flag and serialised (as the
 * SDM asks of the processor that executes modified code), eight calls must
 * return the new k, the last seven from its translation, which then waits
 * cached for the next rewrite: returning an older k means vCPU 0 ran a
 * stale translation.  Aggregated, the peer writes from another host: the
 * old code must be gone on vCPU 0's host before the peer's write is
 * allowed, that is before the flag can be seen.
 */
#include "workloads.h"
#include "../ulib.h"

struct xmc_shared {
    struct ubarrier bar;
    u64 rounds;
    u64 stale, last_stale, stale_round, cached_calls;
    volatile u64 flag __attribute__((aligned(4096)));     /* a page of its own */
    volatile u64 ack;
    unsigned char code[4096] __attribute__((aligned(4096)));
};

/* mov $k, %eax; ret; nop; nop: one aligned 8-byte store rewrites it. */
static u64 xmc_encode(u32 k)
{
    return 0xb8ull | (u64)k << 8 | 0xc3ull << 40 | 0x9090ull << 48;
}

static u32 xmc_call(struct xmc_shared *s)
{
    u32 (*fn)(void) = (u32 (*)(void))(void *)s->code;
    return fn();
}

static void serialise(void)
{
    u32 a = 0, b, c = 0, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) :: "memory");
}

/* vCPU 0: the function must return k, several times (from its translation). */
static void xmc_expect(struct xmc_shared *s, u32 k)
{
    for (int i = 0; i < 8; i++) {
        u32 got = xmc_call(s);
        if (got != k) {
            s->stale++;
            s->last_stale = got;
            s->stale_round = k;
        } else if (i) {
            s->cached_calls++;
        }
    }
}

static u64 xmc_user(struct ujob *j)
{
    struct xmc_shared *s = j->shared;
    if (j->rank == 0)
        xmc_expect(s, 0);           /* the old code is translated before any rewrite */
    if (!ubarrier_wait(&s->bar, 2, start_deadline()))
        return 1;
    for (u64 k = 1; k <= s->rounds; k++) {
        u64 limit = rdtsc() + ms_to_tsc(5000);
        if (j->rank == 0) {
            /*
             * Not while the peer rewrites: a vCPU that translates the
             * function in the middle of a write by another vCPU of the same
             * host can cache the old bytes (QEMU's TCG invalidates before
             * the store lands), which is not what this workload checks.
             */
            while (__atomic_load_n(&s->flag, __ATOMIC_ACQUIRE) != k) {
                if (rdtsc() > limit)
                    return 2;
                cpu_relax();
            }
            serialise();
            xmc_expect(s, (u32)k);
            __atomic_store_n(&s->ack, k, __ATOMIC_RELEASE);
        } else {
            while (__atomic_load_n(&s->ack, __ATOMIC_ACQUIRE) != k - 1) {
                if (rdtsc() > limit)
                    return 3;
                cpu_relax();
            }
            __atomic_store_n((volatile u64 *)s->code, xmc_encode((u32)k), __ATOMIC_SEQ_CST);
            __atomic_store_n(&s->flag, k, __ATOMIC_SEQ_CST);
        }
    }
    return 0;
}

enum wl_status wl_xmc(const struct params *p)
{
    if (peer_missing("xmc", p))
        return WL_SKIP;
    static struct xmc_shared s;
    memset(&s, 0, sizeof(s));
    s.rounds = 200;
    *(volatile u64 *)s.code = xmc_encode(0);
    static struct ujob jobs[MAX_CPUS];
    bool ran = run_user_on(1ull | 1ull << p->peer, xmc_user, &s, jobs, job_timeout_ms(p), NULL) &&
               jobs[0].result == 0 && jobs[p->peer].result == 0;
    /* cached_calls: calls after the first of each round, from its translation. */
    bool ok = ran && s.stale == 0 && s.cached_calls == 7 * (s.rounds + 1);
    report("xmc", ok ? WL_PASS : WL_FAIL,
           "peer=%u rounds=%llu stale=%llu last_stale=%llu at_round=%llu cached_calls=%llu "
           "results=%llu,%llu",
           p->peer, (unsigned long long)s.rounds, (unsigned long long)s.stale,
           (unsigned long long)s.last_stale, (unsigned long long)s.stale_round,
           (unsigned long long)s.cached_calls, (unsigned long long)jobs[0].result,
           (unsigned long long)jobs[p->peer].result);
    return ok ? WL_PASS : WL_FAIL;
}
