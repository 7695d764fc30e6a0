/*
 * AP bring-up (INIT-SIPI-SIPI to every MADT CPU) and job dispatch.
 * Idle APs sleep in hlt and are woken by VEC_WAKE, so idle vCPUs cost
 * the host nothing.
 */
#include "kernel.h"

extern const u8 tramp_start[], tramp_end[];

#define ICR_INIT   0x00004500
#define ICR_SIPI   0x00004600
#define ICR_FIXED  0x00004000   /* fixed, assert */

void ap_main(unsigned index)
{
    struct percpu *c = &cpus[index];
    cpu_init(c);
    __atomic_store_n(&c->online, 1, __ATOMIC_RELEASE);
    for (;;) {
        __asm__ volatile("cli" ::: "memory");
        job_fn fn = c->job;
        if (fn) {
            c->job = NULL;
            fn(c, c->job_arg);
            __atomic_store_n(&c->job_done, 1, __ATOMIC_RELEASE);
            continue;
        }
        __asm__ volatile("sti; hlt" ::: "memory");  /* sti shadow: no lost wake-up */
    }
}

static unsigned count_online(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < ncpus; i++)
        n += __atomic_load_n(&cpus[i].online, __ATOMIC_ACQUIRE);
    return n;
}

bool smp_boot(void)
{
    if (ncpus == 1)
        return true;
    memcpy((void *)TRAMP_ADDR, tramp_start, (size_t)(tramp_end - tramp_start));

    for (unsigned i = 1; i < ncpus; i++)
        if (!lapic_send_ipi(cpus[i].apic_id, ICR_INIT))
            kprintf("testos: warning INIT to apic %u not delivered\n", cpus[i].apic_id);
    delay_us(10000);
    for (int round = 0; round < 2; round++) {
        for (unsigned i = 1; i < ncpus; i++)
            if (!cpus[i].online)
                lapic_send_ipi(cpus[i].apic_id, ICR_SIPI | (TRAMP_ADDR >> 12));
        delay_us(200);
    }

    u64 deadline = rdtsc() + ms_to_tsc(5000);
    while (count_online() < ncpus && rdtsc() < deadline)
        cpu_relax();
    bool ok = true;
    for (unsigned i = 1; i < ncpus; i++) {
        if (!cpus[i].online) {
            kprintf("testos: error cpu %u (apic %u) did not start\n", i, cpus[i].apic_id);
            ok = false;
        }
    }
    return ok;
}

bool smp_run(u64 mask, job_fn fn, void *arg, u64 timeout_ms)
{
    for (unsigned i = 1; i < ncpus; i++) {
        if (!(mask >> i & 1))
            continue;
        cpus[i].job_done = 0;
        cpus[i].job_arg = arg;
        __atomic_store_n(&cpus[i].job, fn, __ATOMIC_RELEASE);
        lapic_send_ipi(cpus[i].apic_id, ICR_FIXED | VEC_WAKE);
    }
    if (mask & 1)
        fn(&cpus[0], arg);

    u64 deadline = rdtsc() + ms_to_tsc(timeout_ms);
    bool ok = true;
    for (unsigned i = 1; i < ncpus; i++) {
        if (!(mask >> i & 1))
            continue;
        while (!__atomic_load_n(&cpus[i].job_done, __ATOMIC_ACQUIRE) && rdtsc() < deadline)
            cpu_relax();
        if (!cpus[i].job_done) {
            kprintf("testos: error cpu %u did not finish its job in %llu ms\n", i,
                    (unsigned long long)timeout_ms);
            ok = false;
        }
    }
    return ok;
}

void smp_send_test_ipi(unsigned cpu)
{
    if (cpu < ncpus)
        lapic_send_ipi(cpus[cpu].apic_id, ICR_FIXED | VEC_IPI_TEST);
}
