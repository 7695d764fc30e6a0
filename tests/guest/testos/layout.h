/* Constants shared by the assembly and C parts of testos. */
#ifndef TESTOS_LAYOUT_H
#define TESTOS_LAYOUT_H

#define MAX_CPUS      64
#define KSTACK_SHIFT  14
#define KSTACK_SIZE   (1 << KSTACK_SHIFT)
#define USTACK_SIZE   16384

#define SEL_KCODE     0x08
#define SEL_KDATA     0x10
#define SEL_KCODE32   0x18
#define SEL_UDATA     0x23   /* 0x20 | RPL 3 */
#define SEL_UCODE     0x2B   /* 0x28 | RPL 3 */
#define SEL_TSS0      0x30

#define TRAMP_ADDR    0x8000 /* SIPI vector 0x08 */

#define VEC_IPI_TEST  0x40
#define VEC_TIMER     0x41
#define VEC_WAKE      0x42
#define VEC_SPURIOUS  0xFF
#define VEC_PIC_BASE  0x50   /* the 8259s' vectors (extint); 0x57: spurious */

/*
 * System calls are "int3" from ring 3 (vector 3, a DPL-3 gate): %rax
 * number, %rdi argument, result in %rax.  This project's KVM (PVM) runs
 * ring 3 natively; there a ring-3 "int $0x80" raises #UD, and "syscall"
 * enters LSTAR without leaving CPL 3, while #BP is reflected faithfully.
 */
#define VEC_SYSCALL   3

#define SYS_DONE      0      /* leave ring 3: return value to run_user() */
#define SYS_SEND_IPI  1      /* send VEC_IPI_TEST to cpu index %rdi */
#define SYS_HALT      2      /* sleep until the next interrupt */
#define SYS_WAIT_SET  3      /* sleep until the u32 at %rdi is not 0 */

#endif
