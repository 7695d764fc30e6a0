/*
 * devices: ports whose device models look at the calling vCPU answer a
 * vCPU on another node as they answer vCPU 0.
 *
 * In an aggregated guest a worker's port access is carried out by node 0,
 * on a thread that is not a vCPU; a device model that reads the caller
 * (VMware's backdoor at 0x5658 reads and writes its registers; the APM
 * control port at 0xb2 raises an SMI on it) used to find no vCPU there
 * and crashed node 0.  vCPU 0 and the peer each run the same probes in
 * ring 0, one after the other; every answer must be the same, and the
 * guest must live on to report it.
 */
#include "workloads.h"

#define VMPORT_PORT 0x5658
#define VMPORT_MAGIC 0x564d5868u
#define VMPORT_CMD_GETVERSION 10
#define APM_CNT 0xb2
#define APM_STS 0xb3

struct probes {
    u32 vmport_eax, vmport_ebx, vmport_ecx;
    u8 apm_sts;                     /* reads back what this vCPU wrote */
    u32 host_bridge_id;             /* PCI 00:00.0 vendor and device */
    bool done;
};

struct devices_shared {
    struct probes at[2];            /* vCPU 0, the peer */
    unsigned slot;
};

static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port)
{
    u32 v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void probe(struct percpu *c, void *arg)
{
    struct devices_shared *s = arg;
    struct probes *p = &s->at[s->slot];
    u32 a = VMPORT_MAGIC, b = ~0u, cx = VMPORT_CMD_GETVERSION, d = VMPORT_PORT;
    (void)c;

    __asm__ volatile("inl %%dx, %%eax" : "+a"(a), "+b"(b), "+c"(cx), "+d"(d) :: "memory");
    p->vmport_eax = a;
    p->vmport_ebx = b;
    p->vmport_ecx = cx;
    /* 0 is neither ACPI enable nor disable: the model only looks at it. */
    outb(APM_CNT, 0);
    outb(APM_STS, (u8)(0x5a + s->slot));
    p->apm_sts = inb(APM_STS);
    outl(0xcf8, 0x80000000u);
    p->host_bridge_id = inl(0xcfc);
    p->done = true;
}

enum wl_status wl_devices(const struct params *p)
{
    static struct devices_shared s;
    if (peer_missing("devices", p))
        return WL_SKIP;
    memset(&s, 0, sizeof(s));
    bool ok = true;
    const unsigned cpus[2] = { 0, p->peer };
    for (unsigned i = 0; i < 2; i++) {
        s.slot = i;
        ok = smp_run(1ull << cpus[i], probe, &s, job_timeout_ms(p)) && s.at[i].done && ok;
    }
    const struct probes *z = &s.at[0], *q = &s.at[1];
    ok = ok && z->vmport_eax == q->vmport_eax && z->vmport_ebx == q->vmport_ebx &&
         z->vmport_ecx == q->vmport_ecx && z->host_bridge_id == q->host_bridge_id &&
         z->apm_sts == 0x5a && q->apm_sts == 0x5b;
    report("devices", ok ? WL_PASS : WL_FAIL,
           "peer=%u vmport_eax=%x/%x vmport_ebx=%x/%x apm_sts=%x/%x host_bridge=%x/%x",
           p->peer, z->vmport_eax, q->vmport_eax, z->vmport_ebx, q->vmport_ebx, z->apm_sts,
           q->apm_sts, z->host_bridge_id, q->host_bridge_id);
    return ok ? WL_PASS : WL_FAIL;
}
