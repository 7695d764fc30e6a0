/* The PVH hand-over: struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h). */
#include "kernel.h"

#define HVM_START_MAGIC 0x336ec578
#define E820_RAM 1

struct hvm_start_info {
    u32 magic;
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
    u64 memmap_paddr;               /* version >= 1 */
    u32 memmap_entries;
    u32 reserved;
} __attribute__((packed));

struct hvm_memmap_entry {
    u64 addr;
    u64 size;
    u32 type;
    u32 reserved;
} __attribute__((packed));

void pvh_parse(u32 start_info_paddr, struct boot_info *bi)
{
    const struct hvm_start_info *si = (const void *)(uintptr_t)start_info_paddr;
    if (!si || si->magic != HVM_START_MAGIC)
        panic("no PVH start info at %p (magic %x)", (const void *)si, si ? si->magic : 0);

    if (si->cmdline_paddr) {
        const char *s = (const char *)(uintptr_t)si->cmdline_paddr;
        size_t i = 0;
        for (; s[i] && i + 1 < sizeof(bi->cmdline); i++)
            bi->cmdline[i] = s[i];
        bi->cmdline[i] = 0;
    }
    bi->rsdp = si->rsdp_paddr;

    if (si->version < 1 || !si->memmap_paddr)
        panic("PVH start info version %u has no memory map", si->version);
    const struct hvm_memmap_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
    for (u32 i = 0; i < si->memmap_entries; i++) {
        if (e[i].type != E820_RAM)
            continue;
        u64 end = e[i].addr + e[i].size;
        bi->ram_bytes += e[i].size;
        if (end > bi->ram_top)
            bi->ram_top = end;
        if (bi->nram < MAX_RAM_REGIONS)
            bi->ram[bi->nram++] = (struct ram_region){ e[i].addr, end };
    }
}
