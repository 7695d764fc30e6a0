/* testos kernel interfaces: one section per source file. */
#ifndef TESTOS_KERNEL_H
#define TESTOS_KERNEL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((u64)(a) - 1))

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* lib.c: freestanding string and formatting helpers. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "1234.56" from a value in hundredths. */
void fmt_centi(char *buf, size_t size, u64 centi);

/* serial.c: COM1 output, whole lines under a lock. */
void serial_init(void);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* main.c */
void guest_exit(bool pass) __attribute__((noreturn));
void panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* pvh.c: what the loader handed over. */
#define MAX_RAM_REGIONS 16
struct ram_region { u64 start, end; };
struct boot_info {
    char cmdline[512];
    u64 rsdp;
    struct ram_region ram[MAX_RAM_REGIONS];
    unsigned nram;
    u64 ram_bytes;
    u64 ram_top;
};
void pvh_parse(u32 start_info_paddr, struct boot_info *bi);

/* paging.c */
u64 paging_map_high(u64 ram_top);   /* returns the mapped limit */

/* acpi.c: CPUs from the MADT (the BSP first). */
struct madt_info {
    u64 lapic_base;
    unsigned ncpus;
    u8 apic_ids[MAX_CPUS];
    unsigned ignored;               /* enabled CPUs beyond MAX_CPUS */
};
bool acpi_find_cpus(u64 rsdp_hint, u32 bsp_apic_id, struct madt_info *out);

/* apic.c: xAPIC through MMIO only (no x2APIC). */
void lapic_set_base(u64 base);
void lapic_init_cpu(void);
u32 lapic_id(void);
void lapic_eoi(void);
bool lapic_send_ipi(u32 apic_id, u32 icr_low);
u64 lapic_timer_calibrate(void);    /* timer input clock, Hz */
void lapic_timer_periodic(u8 vector, u32 count);
void lapic_timer_stop(void);

/* tsc.c */
extern u64 tsc_hz;
bool tsc_calibrate(void);
void delay_us(u64 us);
static inline u64 ms_to_tsc(u64 ms) { return tsc_hz / 1000 * ms; }

/* cpu.c: descriptor tables and traps. */
struct tss {
    u32 reserved0;
    u64 rsp[3];
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iomap_base;
} __attribute__((packed));

struct frame {
    u64 r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
    u64 vector, error;
    u64 rip, cs, rflags, rsp, ss;
};

struct percpu {
    u64 saved_rsp;                  /* kernel context while in ring 3 */
    u32 apic_id;
    u32 index;
    volatile u32 online;
    void (*volatile job)(struct percpu *c, void *arg);
    void *volatile job_arg;
    volatile u32 job_done;
    volatile u64 timer_ticks;
    volatile u64 nmis;              /* NMIs taken (the nmi workload) */
    volatile u64 wakes;             /* VEC_WAKE interrupts taken */
    volatile u64 extints;           /* 8259 IRQ0s taken (the extint workload) */
    volatile u64 spurious_extints;
    struct tss tss __attribute__((aligned(16)));
} __attribute__((aligned(64)));

extern struct percpu cpus[MAX_CPUS];
extern unsigned ncpus;
extern u8 apic_to_cpu[256];
extern u8 kstacks[MAX_CPUS][KSTACK_SIZE];

void cpu_init(struct percpu *c);    /* on the CPU itself: TSS, IDT, LAPIC */
struct percpu *this_cpu(void);      /* from the kernel stack pointer */

/* smp.c */
bool smp_boot(void);
typedef void (*job_fn)(struct percpu *c, void *arg);
/* Run fn on every CPU in mask (bit = cpu index); false on timeout. */
bool smp_run(u64 mask, job_fn fn, void *arg, u64 timeout_ms);
static inline u64 all_cpus_mask(void) { return ncpus >= 64 ? ~0ull : (1ull << ncpus) - 1; }

/* user.c: ring-3 jobs. */
struct ujob {
    void *shared;                   /* the workload's shared state */
    unsigned cpu;                   /* cpu index */
    unsigned rank, n;               /* position among the participants */
    u64 result;
};
typedef u64 (*ufn)(struct ujob *j);
/* Optional ring-0 steps around the ring-3 part, on each CPU. */
struct user_hooks {
    void (*before)(struct percpu *c, void *arg);
    void (*after)(struct percpu *c, void *arg);
    void *arg;
};
/* Run fn in ring 3 on every CPU in mask; each CPU's ujob in jobs[cpu]. */
bool run_user_on(u64 mask, ufn fn, void *shared, struct ujob jobs[MAX_CPUS], u64 timeout_ms,
                 const struct user_hooks *hooks);
void syscall_dispatch(struct frame *f);

/* ipi workload hook, called from the VEC_IPI_TEST handler. */
void ipi_workload_irq(struct percpu *c);

#endif
