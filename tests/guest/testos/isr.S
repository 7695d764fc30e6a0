/*
 * Interrupt entry stubs and the ring-3 round trip.  Only caller-saved
 * registers are saved on entry: the C dispatcher preserves the rest, and
 * every instruction here costs about 1 us under this project's KVM.
 */
#include "layout.h"

    .text
    .code64

.macro STUB vec, has_err
    .global isr_\vec
isr_\vec:
    .if \has_err == 0
    pushq $0
    .endif
    pushq $\vec
    jmp isr_common
.endm

    STUB 0, 0
    STUB 1, 0
    STUB 2, 0
    STUB 3, 0
    STUB 4, 0
    STUB 5, 0
    STUB 6, 0
    STUB 7, 0
    STUB 8, 1
    STUB 9, 0
    STUB 10, 1
    STUB 11, 1
    STUB 12, 1
    STUB 13, 1
    STUB 14, 1
    STUB 15, 0
    STUB 16, 0
    STUB 17, 1
    STUB 18, 0
    STUB 19, 0
    STUB 20, 0
    STUB 21, 1
    STUB 22, 0
    STUB 23, 0
    STUB 24, 0
    STUB 25, 0
    STUB 26, 0
    STUB 27, 0
    STUB 28, 0
    STUB 29, 1
    STUB 30, 1
    STUB 31, 0
    STUB 0x40, 0
    STUB 0x41, 0
    STUB 0x42, 0
    STUB 0x50, 0
    STUB 0x57, 0
    STUB 0xFF, 0

isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov %rsp, %rdi
    cld
    call isr_dispatch
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq

    .section .rodata
    .balign 8
    .global isr_exception_table
isr_exception_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad isr_\v
    .endr

    .text
/*
 * uint64_t run_user(fn, arg, user_stack_top, &saved_rsp, &tss_rsp0)
 * Enters ring 3 at user_entry(fn, arg); returns the value passed to
 * SYS_DONE (user_return() unwinds to here).
 */
    .global run_user
run_user:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, (%rcx)
    mov %rsp, (%r8)             /* ring-3 interrupts land below this frame */
    pushq $SEL_UDATA
    pushq %rdx
    pushq $0x202                /* IF */
    pushq $SEL_UCODE
    pushq $user_entry
    iretq

/* void user_return(saved_rsp, value): called from the SYS_DONE handler. */
    .global user_return
user_return:
    mov %rdi, %rsp
    mov %rsi, %rax
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

/* Ring 3: call fn(arg), then hand its result to the kernel. */
user_entry:
    mov %rdi, %rax
    mov %rsi, %rdi
    call *%rax
    mov %rax, %rdi
    mov $SYS_DONE, %eax
    int3
    ud2
