/*
 * ipi: vCPU 0 sends a fixed-vector IPI (system call from ring 3); the
 * peer's ring-0 handler answers with one back; vCPU 0 waits in ring 3.
 * The peer spins in ring 3 between IPIs, or with wait=halt sleeps in hlt
 * (each IPI wakes it; a last one when vCPU 0 is done).  On a host with
 * fewer free cores than spinning vCPUs the difference is large: the
 * threads that carry an IPI between hosts wait for a core.
 */
#include "workloads.h"
#include "../ulib.h"

void smp_send_test_ipi(unsigned cpu);

static struct ipi_shared {
    struct ubarrier bar;
    u64 window;
    unsigned initiator, responder;
    volatile u64 pongs __attribute__((aligned(64)));
    volatile u64 pings;
    volatile u32 done;
    bool halt;                      /* the responder waits in hlt */
    u64 rounds, ticks;
} ipi_state;

/* Ring 0, VEC_IPI_TEST. */
void ipi_workload_irq(struct percpu *c)
{
    if (c->index == ipi_state.responder) {
        ipi_state.pings++;
        smp_send_test_ipi(ipi_state.initiator);
    } else if (c->index == ipi_state.initiator) {
        ipi_state.pongs++;
    }
}

static u64 ipi_user(struct ujob *j)
{
    struct ipi_shared *s = j->shared;
    if (!ubarrier_wait(&s->bar, 2, start_deadline()))
        return 1;
    if (j->rank == 0) {
        u64 t0 = rdtsc(), end = t0 + s->window, n = 0, now = t0;
        while (now < end) {
            u64 seen = s->pongs;
            u_syscall(SYS_SEND_IPI, s->responder);
            u64 limit = now + ms_to_tsc(1000);
            while (s->pongs == seen) {
                if (rdtsc() > limit) {
                    s->done = 1;
                    return 1;
                }
                cpu_relax();
            }
            n++;
            now = rdtsc();
        }
        s->rounds = n;
        s->ticks = now - t0;
        s->done = 1;
        if (s->halt)
            u_syscall(SYS_SEND_IPI, s->responder);  /* wakes it to see done */
        return 0;
    }
    u64 limit = rdtsc() + s->window + ms_to_tsc(2000);
    while (!s->done) {
        if (rdtsc() > limit)
            return 1;
        if (s->halt)
            u_syscall(SYS_WAIT_SET, (u64)(uintptr_t)&s->done);
        else
            cpu_relax();
    }
    return 0;
}

enum wl_status wl_ipi(const struct params *p)
{
    if (peer_missing("ipi", p))
        return WL_SKIP;
    struct ipi_shared *s = &ipi_state;
    memset(s, 0, sizeof(*s));
    s->window = ms_to_tsc(p->ms);
    s->initiator = 0;
    s->responder = p->peer;
    s->halt = p->wait_halt;
    bool ok = run_with_peer(p, ipi_user, s) && s->rounds > 0;
    u64 rtt_ns = s->rounds ? tsc_to_ns(s->ticks) / s->rounds : 0;
    char us[32];
    fmt_centi(us, sizeof(us), rtt_ns / 10);
    report("ipi", ok ? WL_PASS : WL_FAIL, "peer=%u rounds=%llu rtt_us=%s wait=%s", p->peer,
           (unsigned long long)s->rounds, us, s->halt ? "halt" : "spin");
    s->responder = s->initiator = MAX_CPUS;  /* stray IPIs are now ignored */
    return ok ? WL_PASS : WL_FAIL;
}
