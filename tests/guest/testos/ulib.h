/* Helpers for code that runs in ring 3: no privileged instructions here. */
#ifndef TESTOS_ULIB_H
#define TESTOS_ULIB_H

#include "kernel.h"

static inline u64 u_syscall(u64 nr, u64 arg)
{
    u64 ret;
    /* int3 is the system call: see layout.h. */
    __asm__ volatile("int3" : "=a"(ret) : "a"(nr), "D"(arg) : "memory");
    return ret;
}

/* Sense-free generation barrier with a TSC deadline (false on timeout). */
struct ubarrier {
    volatile u32 count __attribute__((aligned(64)));
    volatile u32 gen;
};

static inline bool ubarrier_wait(struct ubarrier *b, unsigned n, u64 deadline)
{
    u32 gen = __atomic_load_n(&b->gen, __ATOMIC_SEQ_CST);
    if (__atomic_fetch_add(&b->count, 1, __ATOMIC_SEQ_CST) == n - 1) {
        __atomic_store_n(&b->count, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_SEQ_CST);
        return true;
    }
    while (__atomic_load_n(&b->gen, __ATOMIC_SEQ_CST) == gen) {
        if (rdtsc() > deadline)
            return false;
        cpu_relax();
    }
    return true;
}

#endif
