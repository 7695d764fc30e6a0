/*
 * TSC rate against PIT channel 2, measured once on the BSP.  The vCPU
 * thread may be preempted at any moment on this busy host, so each PIT
 * reading is bracketed by two TSC reads and only the tightest bracket of
 * a few tries is used, at the start and at the end of a ~40 ms interval.
 */
#include "kernel.h"

#define PIT_HZ 1193182ull

u64 tsc_hz;

struct sample {
    u64 tsc;                        /* midpoint of the bracket */
    u64 width;                      /* bracket width: the uncertainty */
    u16 count;
};

static struct sample pit_sample(void)
{
    u64 a = rdtsc();
    outb(0x43, 0x80);                        /* latch channel 2 */
    u8 lo = inb(0x42), hi = inb(0x42);
    u64 b = rdtsc();
    return (struct sample){ a + (b - a) / 2, b - a, (u16)(lo | hi << 8) };
}

static struct sample best_sample(void)
{
    struct sample best = pit_sample();
    for (int i = 0; i < 4; i++) {
        struct sample s = pit_sample();
        if (s.width < best.width)
            best = s;
    }
    return best;
}

static u64 measure_once(void)
{
    const u16 ticks = (u16)(PIT_HZ * 40 / 1000);
    outb(0x61, (inb(0x61) & ~0x02) | 0x01);  /* gate on, speaker off */
    outb(0x43, 0xB0);                        /* ch2, lo/hi, mode 0 */
    outb(0x42, 0xFF);
    outb(0x42, 0xFF);
    struct sample s0 = best_sample(), s1;
    u64 limit = s0.tsc + 20000000000ull;     /* raw ticks: rate unknown yet */
    do {
        s1 = pit_sample();
        if (s1.tsc > limit)
            return 0;
    } while ((u16)(s0.count - s1.count) < ticks);
    s1 = best_sample();
    u16 elapsed = (u16)(s0.count - s1.count);
    return elapsed ? (s1.tsc - s0.tsc) * PIT_HZ / elapsed : 0;
}

/* The median of three runs. */
bool tsc_calibrate(void)
{
    u64 a = measure_once(), b = measure_once(), c = measure_once();
    if (a > b) { u64 t = a; a = b; b = t; }
    if (b > c) { u64 t = b; b = c; c = t; }
    if (a > b) { u64 t = a; a = b; b = t; }
    tsc_hz = b;
    return tsc_hz > 100000000ull;            /* > 100 MHz, or PIT failed */
}

void delay_us(u64 us)
{
    u64 end = rdtsc() + tsc_hz / 1000000 * us;
    while (rdtsc() < end)
        cpu_relax();
}
