/*
 * extint: the 8259's interrupts reach a vCPU other than vCPU 0 through its
 * LINT0 (ExtINT), and that vCPU acknowledges them itself.
 *
 * vCPU 0 masks its own LINT0, programs the 8259 (vectors from
 * VEC_PIC_BASE, only IRQ0 unmasked) and the PIT (channel 0 at 1 kHz); the
 * peer programs its LINT0 for ExtINT and spins in ring 3, its handler
 * counting the ticks and ending each with a non-specific EOI.  In an
 * aggregated guest with the peer on a worker the 8259 and the PIT are
 * node 0's: the INTR level must reach the worker, and the worker's INTA
 * must be answered by node 0's 8259.  Every tick must go to the peer, at
 * least a few must arrive, and no other vCPU may take one.
 */
#include "workloads.h"
#include "../ulib.h"

#define LAPIC_LVT_LINT0 0x350
#define LVT_MASKED (1u << 16)
#define LVT_DM_EXTINT (7u << 8)
#define PIT_HZ 1193182u
#define TICK_HZ 1000u
#define MIN_TICKS 3

static volatile u32 *lint0(void) { return (volatile u32 *)(uintptr_t)(0xFEE00000u + LAPIC_LVT_LINT0); }

static void arm(struct percpu *c, void *arg)
{
    (void)arg;
    c->extints = c->spurious_extints = 0;
    *lint0() = LVT_DM_EXTINT;
}

static void disarm(struct percpu *c, void *arg)
{
    (void)c;
    (void)arg;
    *lint0() = LVT_MASKED | LVT_DM_EXTINT;
}

/* Both 8259s initialised (edge, cascaded, 8086 mode), every IRQ masked. */
static void pic_program(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    outb(0x20, 0x11);
    outb(0x21, VEC_PIC_BASE);
    outb(0x21, 0x04);
    outb(0x21, 0x01);
    outb(0xa0, 0x11);
    outb(0xa1, VEC_PIC_BASE + 8);
    outb(0xa1, 0x02);
    outb(0xa1, 0x01);
    outb(0xa1, 0xff);
}

struct extint_shared {
    struct ubarrier bar;
    u64 window;
};

static u64 extint_user(struct ujob *j)
{
    struct extint_shared *s = j->shared;
    u64 t0 = rdtsc();
    while (rdtsc() - t0 < s->window)
        cpu_relax();
    return 0;
}

enum wl_status wl_extint(const struct params *p)
{
    if (peer_missing("extint", p))
        return WL_SKIP;
    static struct extint_shared s;
    static struct ujob jobs[MAX_CPUS];
    memset(&s, 0, sizeof(s));
    s.window = ms_to_tsc(p->ms);
    for (unsigned i = 0; i < ncpus; i++)
        cpus[i].extints = cpus[i].spurious_extints = 0;

    /*
     * The 8259 gets its new vectors before the peer's LINT0 takes
     * anything: the firmware's (from 0x08) may still be pending.
     */
    *lint0() = LVT_MASKED | LVT_DM_EXTINT;
    pic_program();
    bool ok = smp_run(1ull << p->peer, arm, NULL, job_timeout_ms(p));
    outb(0x21, 0xfe);                        /* IRQ0 only */
    u16 div = (u16)(PIT_HZ / TICK_HZ);
    outb(0x43, 0x34);                        /* channel 0, lo/hi, rate generator */
    outb(0x40, (u8)div);
    outb(0x40, (u8)(div >> 8));
    ok = ok && run_user_on(1ull << p->peer, extint_user, &s, jobs, job_timeout_ms(p), NULL) &&
         jobs[p->peer].result == 0;
    outb(0x21, 0xff);                        /* no more ticks, to anyone */
    ok = smp_run(1ull << p->peer, disarm, NULL, job_timeout_ms(p)) && ok;

    u64 elsewhere = 0;
    for (unsigned i = 0; i < ncpus; i++)
        elsewhere += i == p->peer ? 0 : cpus[i].extints;
    u64 ticks = cpus[p->peer].extints;
    ok = ok && ticks >= MIN_TICKS && elsewhere == 0;
    report("extint", ok ? WL_PASS : WL_FAIL, "peer=%u ticks=%llu spurious=%llu elsewhere=%llu",
           p->peer, (unsigned long long)ticks,
           (unsigned long long)cpus[p->peer].spurious_extints, (unsigned long long)elsewhere);
    return ok ? WL_PASS : WL_FAIL;
}
