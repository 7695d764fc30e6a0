/*
 * testos boot: the PVH entry (32-bit protected mode, paging off, %ebx =
 * hvm_start_info), the long-mode switch shared with the APs, the GDT and
 * the static identity map of the low 4 GiB (2 MiB pages, user-accessible,
 * built at assembly time so that the slow emulated ring 0 does no work).
 */
#include "layout.h"

/* XEN_ELFNOTE_PHYS32_ENTRY: QEMU reads the descriptor as a native word. */
    .section .note.pvh, "a", @note
    .balign 4
    .long 4, 8, 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi              /* hvm_start_info, becomes kmain's argument */
    xor %ebp, %ebp              /* 0: bootstrap processor */
    jmp common32

    /*
     * The AP trampoline jumps here once in protected mode, with our GDT
     * loaded but DS still holding its real-mode 64 KiB limit: reload the
     * data segments before touching memory above 64 KiB (KVM's emulator
     * checks limits; TCG does not).
     */
    .global ap_start32
ap_start32:
    mov $SEL_KDATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $1, %ebp                /* 1: application processor */

common32:
    lgdt gdt_ptr
    mov $SEL_KDATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %cr4, %eax
    or $0x20, %eax              /* PAE */
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx       /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax        /* PG | PE */
    mov %eax, %cr0
    ljmp $SEL_KCODE, $long64

    .code64
long64:
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    test %ebp, %ebp
    jnz 1f
    lea kstacks + KSTACK_SIZE, %rsp
    mov %esi, %edi
    call kmain
    jmp halt_forever
1:
    /* Pick this AP's stack from its initial APIC id. */
    mov $1, %eax
    cpuid
    shr $24, %ebx
    movzbl apic_to_cpu(%rbx), %edi
    mov %rdi, %rax
    inc %rax
    shl $KSTACK_SHIFT, %rax
    lea kstacks(%rax), %rsp
    call ap_main
    .global halt_forever
halt_forever:
    cli
    hlt
    jmp halt_forever

/* GDT: fixed descriptors, then one 16-byte TSS descriptor per CPU. */
    .data
    .balign 16
    .global gdt
gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08 kernel code, 64-bit */
    .quad 0x00CF92000000FFFF    /* 0x10 kernel data */
    .quad 0x00CF9A000000FFFF    /* 0x18 kernel code, 32-bit (AP trampoline) */
    .quad 0x00CFF2000000FFFF    /* 0x20 user data */
    .quad 0x00AFFA000000FFFF    /* 0x28 user code, 64-bit */
    .fill MAX_CPUS * 2, 8, 0    /* 0x30 TSS descriptors */
gdt_end:
    .global gdt_ptr
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

/*
 * Identity map of 0..4 GiB with 2 MiB user-accessible pages; the top
 * 32 MiB (LAPIC, IOAPIC, BIOS) is uncached.  Memory above 4 GiB is mapped
 * at run time (paging.c).
 */
    .section .data.pagetables, "aw"
    .balign 4096
    .global pml4, pdpt
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .quad pd_low + 0x0000 + 0x7
    .quad pd_low + 0x1000 + 0x7
    .quad pd_low + 0x2000 + 0x7
    .quad pd_low + 0x3000 + 0x7
    .fill 508, 8, 0
pd_low:
    .set addr, 0
    .rept 2032
    .quad addr + 0x87           /* P | RW | US | PS */
    .set addr, addr + 0x200000
    .endr
    .rept 16
    .quad addr + 0x9F           /* ... | PWT | PCD */
    .set addr, addr + 0x200000
    .endr
