/*
 * RAM above 4 GiB: boot.S maps the low 4 GiB statically; larger guests
 * get 2 MiB identity mappings here, from a fixed pool (up to 64 GiB).
 */
#include "kernel.h"

#define HIGH_GIB 60

extern u64 pdpt[512];
static u64 pd_high[HIGH_GIB][512] __attribute__((aligned(4096)));

u64 paging_map_high(u64 ram_top)
{
    const u64 gib = 1ull << 30;
    unsigned want = ram_top > 4 * gib ? (unsigned)((ram_top - 4 * gib + gib - 1) / gib) : 0;
    if (want > HIGH_GIB)
        want = HIGH_GIB;
    for (unsigned g = 0; g < want; g++) {
        u64 base = (4 + g) * gib;
        for (unsigned i = 0; i < 512; i++)
            pd_high[g][i] = (base + ((u64)i << 21)) | 0x87;   /* P RW US PS */
        pdpt[4 + g] = (u64)(uintptr_t)pd_high[g] | 0x7;
    }
    if (want) {
        u64 cr3;
        __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) :: "memory");
    }
    return (4 + (u64)want) * gib;
}
