/* Per-CPU descriptor state (TSS, IDT) and the trap dispatcher. */
#include "kernel.h"

struct idt_entry {
    u16 off_lo;
    u16 sel;
    u8 ist;
    u8 type;
    u16 off_mid;
    u32 off_hi;
    u32 zero;
} __attribute__((packed));

extern u64 gdt[];
extern const u64 isr_exception_table[32];
extern void isr_0x40(void), isr_0x41(void), isr_0x42(void), isr_0xFF(void);
extern void isr_0x50(void), isr_0x57(void);

struct percpu cpus[MAX_CPUS];
unsigned ncpus;
u8 apic_to_cpu[256];
u8 kstacks[MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(4096)));

static struct idt_entry idt[256] __attribute__((aligned(16)));

static void set_gate(unsigned vec, u64 handler, unsigned dpl)
{
    idt[vec] = (struct idt_entry){
        .off_lo = (u16)handler,
        .sel = SEL_KCODE,
        .type = (u8)(0x8E | (dpl << 5)),     /* present interrupt gate */
        .off_mid = (u16)(handler >> 16),
        .off_hi = (u32)(handler >> 32),
    };
}

static void idt_build(void)
{
    for (unsigned v = 0; v < 32; v++)
        set_gate(v, isr_exception_table[v], v == VEC_SYSCALL ? 3 : 0);
    set_gate(VEC_IPI_TEST, (u64)isr_0x40, 0);
    set_gate(VEC_TIMER, (u64)isr_0x41, 0);
    set_gate(VEC_WAKE, (u64)isr_0x42, 0);
    set_gate(VEC_SPURIOUS, (u64)isr_0xFF, 0);
    set_gate(VEC_PIC_BASE, (u64)isr_0x50, 0);
    set_gate(VEC_PIC_BASE + 7, (u64)isr_0x57, 0);
}

void cpu_init(struct percpu *c)
{
    if (c->index == 0)
        idt_build();                         /* before any AP starts */

    c->tss.iomap_base = sizeof(c->tss);      /* no I/O bitmap */
    c->tss.rsp[0] = (u64)(uintptr_t)kstacks[c->index + 1];
    u64 base = (u64)(uintptr_t)&c->tss, limit = sizeof(c->tss) - 1;
    unsigned slot = SEL_TSS0 / 8 + 2 * c->index;
    gdt[slot] = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (0x89ull << 40) |
                (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56);
    gdt[slot + 1] = base >> 32;
    u16 sel = (u16)(SEL_TSS0 + 16 * c->index);
    __asm__ volatile("ltr %0" :: "r"(sel));

    struct { u16 limit; u64 base; } __attribute__((packed)) idtr = { sizeof(idt) - 1, (u64)(uintptr_t)idt };
    __asm__ volatile("lidt %0" :: "m"(idtr));

    lapic_init_cpu();
}

struct percpu *this_cpu(void)
{
    u64 sp;
    __asm__("mov %%rsp, %0" : "=r"(sp));
    u64 idx = (sp - (u64)(uintptr_t)kstacks) / KSTACK_SIZE;
    return &cpus[idx < MAX_CPUS ? idx : 0];
}

static void exception(struct frame *f)
{
    u64 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    panic("exception vector=%llu error=%llx rip=%llx cs=%llx rsp=%llx cr2=%llx cpu=%u",
          (unsigned long long)f->vector, (unsigned long long)f->error,
          (unsigned long long)f->rip, (unsigned long long)f->cs,
          (unsigned long long)f->rsp, (unsigned long long)cr2, this_cpu()->index);
}

void isr_dispatch(struct frame *f)
{
    switch (f->vector) {
    case VEC_SYSCALL:
        if ((f->cs & 3) != 3)
            exception(f);                    /* a breakpoint in ring 0 */
        syscall_dispatch(f);
        return;
    case VEC_IPI_TEST:
        ipi_workload_irq(this_cpu());
        lapic_eoi();
        return;
    case VEC_TIMER:
        this_cpu()->timer_ticks++;
        lapic_eoi();
        return;
    case VEC_WAKE:
        this_cpu()->wakes++;
        lapic_eoi();
        return;
    case VEC_PIC_BASE:                       /* IRQ0 through LINT0 (extint) */
        this_cpu()->extints++;
        outb(0x20, 0x20);                    /* non-specific EOI to the 8259 */
        return;
    case VEC_PIC_BASE + 7:                   /* the 8259's spurious IRQ7: no EOI */
        this_cpu()->spurious_extints++;
        return;
    case VEC_SPURIOUS:
        return;
    case 2:                                  /* NMI: counted, nothing to ack */
        this_cpu()->nmis++;
        return;
    default:
        if (f->vector < 32)
            exception(f);
        panic("unexpected vector %llu", (unsigned long long)f->vector);
    }
}
