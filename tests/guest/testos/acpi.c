/* CPU discovery from the ACPI MADT (RSDP -> XSDT/RSDT -> "APIC"). */
#include "kernel.h"

struct rsdp {
    char sig[8];
    u8 csum;
    char oem[6];
    u8 rev;
    u32 rsdt;
    u32 len;
    u64 xsdt;
    u8 xcsum;
    u8 reserved[3];
} __attribute__((packed));

struct sdt {
    char sig[4];
    u32 len;
    u8 rev;
    u8 csum;
    char oem[6];
    char oem_table[8];
    u32 oem_rev;
    u32 creator;
    u32 creator_rev;
} __attribute__((packed));

struct madt {
    struct sdt h;
    u32 lapic;
    u32 flags;
    u8 entries[];
} __attribute__((packed));

static bool checksum_ok(const void *p, size_t n)
{
    u8 sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += ((const u8 *)p)[i];
    return sum == 0;
}

/* Fallback when the loader gave no RSDP: the BIOS area scan. */
static const struct rsdp *scan_rsdp(void)
{
    for (u64 a = 0xE0000; a < 0x100000; a += 16) {
        const struct rsdp *r = (const void *)(uintptr_t)a;
        if (!memcmp(r->sig, "RSD PTR ", 8) && checksum_ok(r, 20))
            return r;
    }
    return NULL;
}

static const struct madt *find_madt(const struct rsdp *r)
{
    bool x = r->rev >= 2 && r->xsdt;
    const struct sdt *root = (const void *)(uintptr_t)(x ? r->xsdt : r->rsdt);
    unsigned n = (root->len - sizeof(*root)) / (x ? 8 : 4);
    const u8 *ptrs = (const u8 *)(root + 1);
    for (unsigned i = 0; i < n; i++) {
        u64 a = 0;
        memcpy(&a, ptrs + i * (x ? 8 : 4), x ? 8 : 4);
        const struct sdt *t = (const void *)(uintptr_t)a;
        if (!memcmp(t->sig, "APIC", 4))
            return (const struct madt *)t;
    }
    return NULL;
}

bool acpi_find_cpus(u64 rsdp_hint, u32 bsp_apic_id, struct madt_info *out)
{
    const struct rsdp *r = rsdp_hint ? (const void *)(uintptr_t)rsdp_hint : scan_rsdp();
    if (!r || memcmp(r->sig, "RSD PTR ", 8)) {
        kprintf("testos: error no ACPI RSDP\n");
        return false;
    }
    const struct madt *m = find_madt(r);
    if (!m) {
        kprintf("testos: error no MADT\n");
        return false;
    }

    out->lapic_base = m->lapic;
    out->ncpus = 1;
    out->apic_ids[0] = (u8)bsp_apic_id;
    for (u32 off = sizeof(*m); off + 2 <= m->h.len;) {
        const u8 *e = (const u8 *)m + off;
        if (e[1] < 2)
            break;
        if (e[0] == 0 && e[1] >= 8) {           /* Processor Local APIC */
            u8 apic_id = e[3];
            u32 flags;
            memcpy(&flags, e + 4, 4);
            if ((flags & 1) && apic_id != bsp_apic_id) {
                if (out->ncpus < MAX_CPUS)
                    out->apic_ids[out->ncpus++] = apic_id;
                else
                    out->ignored++;
            }
        } else if (e[0] == 5 && e[1] >= 12) {   /* LAPIC address override */
            memcpy(&out->lapic_base, e + 4, 8);
        }
        off += e[1];
    }
    return true;
}
