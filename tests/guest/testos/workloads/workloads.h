/* The workloads: each prints one "testos: result ..." line. */
#ifndef TESTOS_WORKLOADS_H
#define TESTOS_WORKLOADS_H

#include "../kernel.h"

enum wl_status { WL_PASS, WL_FAIL, WL_SKIP };

struct params {
    char workload[32];
    u64 iters;                      /* counters: increments per vCPU */
    u64 ms;                         /* time window of the timed workloads */
    unsigned peer;                  /* pingpong/ipi partner of vCPU 0 */
    unsigned hz;                    /* timer: LAPIC timer frequency */
    unsigned duty;                  /* share: percent of the time it runs */
    unsigned slow_us;               /* share: a write slower than this is slow */
    bool wait_halt;                 /* ipi: the peer waits in hlt, not spinning */
    bool hold;                      /* after the workloads, halt instead of exiting */
    bool high;                      /* churn: stripes at the top of RAM, not the bottom */
    const struct boot_info *boot;
    u64 kernel_end;
    u64 mapped_limit;
};

/* Prints "testos: result workload=<name> vcpus=<n> <fields> status=<s>". */
void report(const char *name, enum wl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Per-workload bound on a job: the window plus generous slack for TCG. */
static inline u64 job_timeout_ms(const struct params *p) { return p->ms * 20 + 10000; }

static inline u64 tsc_to_ns(u64 ticks) { return ticks * 1000 / (tsc_hz / 1000000); }

/* Events per second over a TSC interval (no 128-bit division in libgcc-less code). */
static inline u64 per_second(u64 count, u64 ticks)
{
    u64 us = tsc_to_ns(ticks) / 1000;
    return count * 1000000 / (us ? us : 1);
}

/* A ring-3 deadline for the start barrier of a job. */
static inline u64 start_deadline(void) { return rdtsc() + ms_to_tsc(10000); }

/* True, after reporting a skip, when p->peer is not a vCPU other than 0. */
bool peer_missing(const char *name, const struct params *p);

/* Runs fn in ring 3 on vCPU 0 and p->peer; true when both returned 0. */
bool run_with_peer(const struct params *p, ufn fn, void *shared);

enum wl_status wl_compute(const struct params *p);
enum wl_status wl_counters(const struct params *p);
enum wl_status wl_pingpong(const struct params *p);
enum wl_status wl_ipi(const struct params *p);
enum wl_status wl_sweep(const struct params *p);
enum wl_status wl_timer(const struct params *p);
enum wl_status wl_tscsync(const struct params *p);
enum wl_status wl_devices(const struct params *p);
enum wl_status wl_nmi(const struct params *p);
enum wl_status wl_xmc(const struct params *p);
enum wl_status wl_extint(const struct params *p);
enum wl_status wl_ldr(const struct params *p);
enum wl_status wl_devloop(const struct params *p);
enum wl_status wl_churn(const struct params *p);
enum wl_status wl_gap(const struct params *p);
enum wl_status wl_share(const struct params *p);

#endif
