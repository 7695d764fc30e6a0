/*
 * nmi: an NMI the host injects (QMP inject-nmi) reaches every vCPU.
 *
 * Every vCPU programs its LINT1 for NMI delivery, as firmware does; vCPU 0
 * then prints "testos: nmi armed" and waits for each vCPU to count an NMI.
 * QEMU delivers inject-nmi through each local APIC's LINT1: in an
 * aggregated guest, node 0 must send it on to the node where each vCPU
 * runs.  Not part of "all": it needs the host to inject.
 */
#include "workloads.h"

#define LAPIC_LVT_LINT1 0x360
#define LVT_DM_NMI (4u << 8)

static void arm(struct percpu *c, void *arg)
{
    (void)arg;
    *(volatile u32 *)(uintptr_t)(0xFEE00000u + LAPIC_LVT_LINT1) = LVT_DM_NMI;
    c->nmis = 0;
}

enum wl_status wl_nmi(const struct params *p)
{
    bool ok = smp_run(all_cpus_mask(), arm, NULL, job_timeout_ms(p));
    kprintf("testos: nmi armed\n");
    u64 deadline = rdtsc() + ms_to_tsc(p->ms * 50 + 10000);
    unsigned missing = ncpus;
    while (ok && missing && rdtsc() < deadline) {
        missing = 0;
        for (unsigned i = 0; i < ncpus; i++)
            missing += cpus[i].nmis == 0;
        cpu_relax();
    }
    char counts[8 * MAX_CPUS] = "";
    for (unsigned i = 0, n = 0; i < ncpus && n + 8 < sizeof(counts); i++) {
        u64 v = cpus[i].nmis;
        if (i)
            counts[n++] = ',';
        /* single digits are enough to tell none from some */
        counts[n++] = (char)('0' + (v > 9 ? 9 : v));
        counts[n] = 0;
    }
    ok = ok && missing == 0;
    report("nmi", ok ? WL_PASS : WL_FAIL, "missing=%u per_vcpu=%s", missing, counts);
    return ok ? WL_PASS : WL_FAIL;
}
