/*
 * AP start-up trampoline.  smp.c copies tramp_start..tramp_end to
 * TRAMP_ADDR (below 1 MiB) and sends SIPI with vector TRAMP_ADDR >> 12;
 * the AP starts here in real mode with CS = TRAMP_ADDR >> 4, IP = 0.
 */
#include "layout.h"

#define T(sym) ((sym) - tramp_start + TRAMP_ADDR)

    .section .rodata
    .code16
    .global tramp_start, tramp_end
tramp_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    lgdtl T(tramp_gdt_ptr)
    mov %cr0, %eax
    or $1, %eax                 /* PE */
    mov %eax, %cr0
    ljmpl $SEL_KCODE32, $ap_start32
    .balign 4
tramp_gdt_ptr:
    .word MAX_CPUS * 16 + 6 * 8 - 1
    .long gdt
tramp_end:
    .code64
