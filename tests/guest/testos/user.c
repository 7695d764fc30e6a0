/* Ring-3 jobs: enter user mode on each CPU and take its system calls. */
#include "kernel.h"

u64 run_user(ufn fn, struct ujob *arg, u64 stack_top, u64 *saved_rsp, u64 *rsp0);
void user_return(u64 saved_rsp, u64 value) __attribute__((noreturn));
void smp_send_test_ipi(unsigned cpu);

static u8 ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(4096)));

struct user_run {
    ufn fn;
    struct ujob *jobs;
    const struct user_hooks *hooks;
};

static void user_job(struct percpu *c, void *arg)
{
    struct user_run *r = arg;
    struct ujob *j = &r->jobs[c->index];
    if (r->hooks && r->hooks->before)
        r->hooks->before(c, r->hooks->arg);
    j->result = run_user(r->fn, j, (u64)(uintptr_t)ustacks[c->index + 1],
                         &c->saved_rsp,
                         (u64 *)(void *)((u8 *)&c->tss + offsetof(struct tss, rsp)));
    if (r->hooks && r->hooks->after)
        r->hooks->after(c, r->hooks->arg);
}

bool run_user_on(u64 mask, ufn fn, void *shared, struct ujob jobs[MAX_CPUS], u64 timeout_ms,
                 const struct user_hooks *hooks)
{
    unsigned n = 0;
    for (unsigned i = 0; i < ncpus; i++)
        n += mask >> i & 1;
    for (unsigned i = 0, rank = 0; i < ncpus; i++) {
        if (mask >> i & 1)
            jobs[i] = (struct ujob){ .shared = shared, .cpu = i, .rank = rank++, .n = n };
    }
    struct user_run r = { fn, jobs, hooks };
    return smp_run(mask, user_job, &r, timeout_ms);
}

/* int3 from ring 3 (see layout.h); interrupts are off. */
void syscall_dispatch(struct frame *f)
{
    switch (f->rax) {
    case SYS_DONE:
        user_return(this_cpu()->saved_rsp, f->rdi);
    case SYS_SEND_IPI:
        smp_send_test_ipi((unsigned)f->rdi);
        f->rax = 0;
        return;
    case SYS_HALT:
        /* The interrupt is taken on this stack, then hlt returns. */
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        f->rax = 0;
        return;
    case SYS_WAIT_SET:
        /*
         * Interrupts are off from the check to the hlt (sti's shadow):
         * the interrupt that sets the word cannot slip in between.
         */
        while (!*(volatile u32 *)(uintptr_t)f->rdi)
            __asm__ volatile("sti; hlt; cli" ::: "memory");
        f->rax = 0;
        return;
    default:
        f->rax = (u64)-1;
        return;
    }
}
