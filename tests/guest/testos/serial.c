/* COM1 (0x3F8) output.  Lines are formatted first, then written whole. */
#include "kernel.h"

#define COM1 0x3F8

static volatile u32 serial_owner;   /* cpu index + 1, 0 when free */

void serial_init(void)
{
    outb(COM1 + 1, 0x00);   /* no interrupts */
    outb(COM1 + 3, 0x80);   /* DLAB */
    outb(COM1 + 0, 0x01);   /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);   /* 8N1 */
    outb(COM1 + 2, 0x07);   /* FIFO on, cleared */
}

static void serial_putc(char c)
{
    /* Bounded wait for the transmitter (QEMU's is always ready). */
    for (unsigned i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
        cpu_relax();
    outb(COM1, (u8)c);
}

void kprintf(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    /*
     * A trap inside kprintf (the owner is this CPU) prints at once; a CPU
     * that died holding the lock is waited for boundedly (~0.1 s).
     */
    u32 me = this_cpu()->index + 1, free = 0;
    bool locked = false;
    if (serial_owner != me) {
        u64 limit = rdtsc() + (tsc_hz ? tsc_hz / 10 : 300000000ull);
        while (!(locked = __atomic_compare_exchange_n(&serial_owner, &free, me, false,
                                                      __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))) {
            free = 0;
            if (rdtsc() > limit)
                break;
            cpu_relax();
        }
    }
    for (const char *p = buf; *p; p++) {
        if (*p == '\n')
            serial_putc('\r');
        serial_putc(*p);
    }
    if (locked)
        __atomic_store_n(&serial_owner, 0, __ATOMIC_RELEASE);
}
