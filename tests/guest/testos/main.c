/*
 * testos: boot, bring up every vCPU, run the workloads named on the
 * command line, print one result line each, and leave QEMU through
 * isa-debug-exit (iobase 0xf4): writing 0 (pass) makes QEMU exit with
 * status 1, writing 1 (fail) with status 3.
 */
#include "kernel.h"
#include "workloads/workloads.h"

#define DEBUG_EXIT_PORT 0xF4

extern u8 _end[];
u64 apic_timer_hz;

void guest_exit(bool pass)
{
    kprintf("testos: done status=%s\n", pass ? "pass" : "fail");
    outb(DEBUG_EXIT_PORT, pass ? 0 : 1);
    /* No isa-debug-exit device: stop here; the driver's timeout ends QEMU. */
    for (;;)
        __asm__ volatile("cli; hlt");
}

void panic(const char *fmt, ...)
{
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    kprintf("testos: panic %s\n", buf);
    guest_exit(false);
}

void report(const char *name, enum wl_status st, const char *fmt, ...)
{
    static const char *const names[] = { "pass", "fail", "skip" };
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    kprintf("testos: result workload=%s vcpus=%u %s status=%s\n", name, ncpus, buf, names[st]);
}

bool peer_missing(const char *name, const struct params *p)
{
    if (ncpus >= 2 && p->peer != 0 && p->peer < ncpus)
        return false;
    report(name, WL_SKIP, "reason=needs-2-vcpus peer=%u", p->peer);
    return true;
}

bool run_with_peer(const struct params *p, ufn fn, void *shared)
{
    static struct ujob jobs[MAX_CPUS];
    return run_user_on(1ull | 1ull << p->peer, fn, shared, jobs, job_timeout_ms(p), NULL) &&
           jobs[0].result == 0 && jobs[p->peer].result == 0;
}

static u64 parse_u64(const char *s)
{
    u64 v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (u64)(*s++ - '0');
    return v;
}

/* "key=value" words; unknown keys are reported, not fatal. */
static void parse_cmdline(const char *cl, struct params *p)
{
    while (*cl) {
        while (*cl == ' ')
            cl++;
        const char *key = cl, *eq = NULL;
        while (*cl && *cl != ' ') {
            if (*cl == '=' && !eq)
                eq = cl;
            cl++;
        }
        if (!eq)
            continue;
        size_t klen = (size_t)(eq - key), vlen = (size_t)(cl - eq - 1);
        const char *val = eq + 1;
#define KEY(k) (klen == sizeof(k) - 1 && !memcmp(key, k, klen))
        if (KEY("workload") && vlen < sizeof(p->workload)) {
            memcpy(p->workload, val, vlen);
            p->workload[vlen] = 0;
        } else if (KEY("iters")) {
            p->iters = parse_u64(val);
        } else if (KEY("ms")) {
            p->ms = parse_u64(val);
        } else if (KEY("peer")) {
            p->peer = (unsigned)parse_u64(val);
        } else if (KEY("hz")) {
            p->hz = (unsigned)parse_u64(val);
        } else if (KEY("duty")) {
            p->duty = (unsigned)parse_u64(val);
        } else if (KEY("hold")) {
            p->hold = parse_u64(val) != 0;
        } else if (KEY("wait")) {
            p->wait_halt = vlen == 4 && !memcmp(val, "halt", 4);
        } else if (KEY("high")) {
            p->high = parse_u64(val) != 0;
        } else if (KEY("slow_us")) {
            p->slow_us = (unsigned)parse_u64(val);
        } else {
            char k[32] = { 0 };
            memcpy(k, key, klen < sizeof(k) ? klen : sizeof(k) - 1);
            kprintf("testos: warning unknown option %s\n", k);
        }
#undef KEY
    }
}

static const struct {
    const char *name;
    enum wl_status (*run)(const struct params *p);
    bool not_in_all;                /* needs the host to act: named only */
} workloads[] = {
    { "compute", wl_compute, false }, { "counters", wl_counters, false }, { "pingpong", wl_pingpong, false },
    { "ipi", wl_ipi, false },         { "sweep", wl_sweep, false },       { "timer", wl_timer, false },
    { "tscsync", wl_tscsync, false }, { "devices", wl_devices, false },   { "xmc", wl_xmc, false },
    { "extint", wl_extint, false },   { "ldr", wl_ldr, false },
    { "nmi", wl_nmi, .not_in_all = true },
    { "devloop", wl_devloop, .not_in_all = true },
    { "gap", wl_gap, .not_in_all = true },
    { "share", wl_share, .not_in_all = true },
    { "churn", wl_churn, .not_in_all = true },
};

static u32 cpuid_apic_id(void)
{
    u32 a = 1, b, c = 0, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    return b >> 24;
}

void kmain(u32 start_info)
{
    static struct boot_info bi;
    static struct madt_info madt;
    static struct params p = { .workload = "all", .iters = 100000, .ms = 200, .peer = 1, .hz = 250 };

    serial_init();
    /* The BIOS left the 8259 delivering the PIT at vector 8 (#DF's). */
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
    pvh_parse(start_info, &bi);
    kprintf("testos: boot cmdline=\"%s\"\n", bi.cmdline);
    parse_cmdline(bi.cmdline, &p);
    if (!p.ms || !p.hz || !p.iters)
        panic("ms, hz and iters must be positive");

    u64 mapped = paging_map_high(bi.ram_top);
    if (!tsc_calibrate())
        panic("TSC calibration against PIT channel 2 failed");

    u32 bsp = cpuid_apic_id();
    if (!acpi_find_cpus(bi.rsdp, bsp, &madt))
        panic("no CPU list");
    lapic_set_base(madt.lapic_base);
    ncpus = madt.ncpus;
    for (unsigned i = 0; i < ncpus; i++) {
        cpus[i].index = i;
        cpus[i].apic_id = madt.apic_ids[i];
        apic_to_cpu[madt.apic_ids[i]] = (u8)i;
    }
    if (madt.ignored)
        kprintf("testos: warning %u CPUs beyond %u ignored\n", madt.ignored, MAX_CPUS);
    cpu_init(&cpus[0]);
    cpus[0].online = 1;
    if (lapic_id() != bsp)
        panic("LAPIC id %u differs from CPUID's %u", lapic_id(), bsp);
    apic_timer_hz = lapic_timer_calibrate();
    if (!smp_boot())
        guest_exit(false);

    p.boot = &bi;
    p.kernel_end = ALIGN_UP((u64)(uintptr_t)_end, 4096);
    p.mapped_limit = mapped;
    kprintf("testos: vcpus=%u ram_mb=%llu tsc_mhz=%llu apic_timer_mhz=%llu kernel_end=%llx\n",
            ncpus, (unsigned long long)(bi.ram_bytes >> 20),
            (unsigned long long)(tsc_hz / 1000000), (unsigned long long)(apic_timer_hz / 1000000),
            (unsigned long long)p.kernel_end);

    bool all = !memcmp(p.workload, "all", 4), pass = true, ran = false;
    for (unsigned i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
        if (all ? workloads[i].not_in_all
                : memcmp(p.workload, workloads[i].name, strlen(workloads[i].name) + 1))
            continue;
        ran = true;
        pass = workloads[i].run(&p) != WL_FAIL && pass;
    }
    if (!ran) {
        kprintf("testos: error unknown workload %s\n", p.workload);
        pass = false;
    }
    if (p.hold) {
        /* The host acts on the guest as it stands (a checkpoint of its RAM). */
        kprintf("testos: holding status=%s\n", pass ? "pass" : "fail");
        for (;;)
            __asm__ volatile("cli; hlt");
    }
    guest_exit(pass);
}
