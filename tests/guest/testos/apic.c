/*
 * Local APIC in xAPIC mode, MMIO only: aggregated mode runs QEMU's
 * user-space APIC, which has no x2APIC.
 */
#include "kernel.h"

#define LAPIC_ID      0x020
#define LAPIC_TPR     0x080
#define LAPIC_EOI     0x0B0
#define LAPIC_SVR     0x0F0
#define LAPIC_ICR_LO  0x300
#define LAPIC_ICR_HI  0x310
#define LAPIC_LVT_TMR 0x320
#define LAPIC_TMR_INIT 0x380
#define LAPIC_TMR_CUR 0x390
#define LAPIC_TMR_DIV 0x3E0

#define ICR_BUSY      (1u << 12)
#define LVT_MASKED    (1u << 16)
#define LVT_PERIODIC  (1u << 17)

static volatile u8 *lapic = (volatile u8 *)0xFEE00000;

static inline u32 rd(u32 reg) { return *(volatile u32 *)(lapic + reg); }
static inline void wr(u32 reg, u32 v) { *(volatile u32 *)(lapic + reg) = v; }

void lapic_set_base(u64 base) { lapic = (volatile u8 *)(uintptr_t)base; }

void lapic_init_cpu(void)
{
    wr(LAPIC_TPR, 0);
    wr(LAPIC_LVT_TMR, LVT_MASKED);
    wr(LAPIC_SVR, 0x100 | VEC_SPURIOUS);     /* software enable */
}

u32 lapic_id(void) { return rd(LAPIC_ID) >> 24; }
void lapic_eoi(void) { wr(LAPIC_EOI, 0); }

static bool icr_idle(void)
{
    for (unsigned i = 0; i < 1000000; i++) {
        if (!(rd(LAPIC_ICR_LO) & ICR_BUSY))
            return true;
        cpu_relax();
    }
    return false;
}

bool lapic_send_ipi(u32 apic_id, u32 icr_low)
{
    if (!icr_idle())
        return false;
    wr(LAPIC_ICR_HI, apic_id << 24);
    wr(LAPIC_ICR_LO, icr_low);
    return icr_idle();
}

u64 lapic_timer_calibrate(void)
{
    wr(LAPIC_TMR_DIV, 0xB);                  /* divide by 1 */
    wr(LAPIC_LVT_TMR, LVT_MASKED);
    wr(LAPIC_TMR_INIT, 0xFFFFFFFF);
    u64 t0 = rdtsc();
    delay_us(10000);
    u32 left = rd(LAPIC_TMR_CUR);
    u64 us = (rdtsc() - t0) * 1000000 / tsc_hz;     /* the interval really measured */
    wr(LAPIC_TMR_INIT, 0);
    return (u64)(0xFFFFFFFFu - left) * 1000000 / (us ? us : 1);
}

void lapic_timer_periodic(u8 vector, u32 count)
{
    wr(LAPIC_TMR_DIV, 0xB);
    wr(LAPIC_LVT_TMR, LVT_PERIODIC | vector);
    wr(LAPIC_TMR_INIT, count);
}

void lapic_timer_stop(void)
{
    wr(LAPIC_LVT_TMR, LVT_MASKED);
    wr(LAPIC_TMR_INIT, 0);
}
