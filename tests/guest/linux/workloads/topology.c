// SPDX-License-Identifier: GPL-2.0-or-later
//
// aggvm-topology: what vCPUs and NUMA nodes the guest kernel found, from
// sysfs, so a test can check the machine aggvm built (-smp, -numa) reached
// the guest intact.  Self-consistency is checked too: every online CPU must
// belong to exactly one node.
//
//   aggvm-topology: vcpus=4 numa_nodes=2 node0_cpus=0-1 node0_mb=511 ... status=pass

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kMaxCpus = 8192, kMaxNodes = 1024 };

// Reads the first line of a sysfs file, without the newline.
static bool read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "aggvm-topology: %s: %s\n", path, strerror(errno));
        return false;
    }
    bool ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    if (!ok) {
        fprintf(stderr, "aggvm-topology: %s: empty\n", path);
        return false;
    }
    buf[strcspn(buf, "\n")] = '\0';
    return true;
}

// Parses a kernel cpulist ("0-3,8,10-11") into a membership array; returns
// the count, or -1 when malformed.  An empty list (a CPU-less node) is 0.
static int parse_cpulist(const char *list, bool *member)
{
    int count = 0;
    const char *p = list;
    while (*p) {
        char *end;
        long lo = strtol(p, &end, 10), hi = lo;
        if (end == p)
            return -1;
        if (*end == '-') {
            p = end + 1;
            hi = strtol(p, &end, 10);
            if (end == p)
                return -1;
        }
        if (lo < 0 || hi < lo || hi >= kMaxCpus)
            return -1;
        for (long c = lo; c <= hi; c++) {
            if (!member[c])
                count++;
            member[c] = true;
        }
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return count;
}

// MemTotal of one node in MiB, from node<N>/meminfo ("Node 0 MemTotal: 123 kB").
static long node_mem_mb(int node)
{
    char path[128];
    snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/meminfo", node);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "aggvm-topology: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof(line), f)) {
        int n;
        long v;
        if (sscanf(line, "Node %d MemTotal: %ld kB", &n, &v) == 2 && n == node) {
            kb = v;
            break;
        }
    }
    fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

int main(void)
{
    static bool online[kMaxCpus], covered[kMaxCpus];
    char buf[4096];
    bool ok = true;

    if (!read_line("/sys/devices/system/cpu/online", buf, sizeof(buf)))
        return 1;
    int vcpus = parse_cpulist(buf, online);
    if (vcpus <= 0) {
        fprintf(stderr, "aggvm-topology: bad online cpulist '%s'\n", buf);
        return 1;
    }

    int nodes[kMaxNodes], nnodes = 0;
    DIR *d = opendir("/sys/devices/system/node");
    if (!d) {
        fprintf(stderr, "aggvm-topology: /sys/devices/system/node: %s\n", strerror(errno));
        return 1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && nnodes < kMaxNodes) {
        int id;
        char tail;
        if (sscanf(e->d_name, "node%d%c", &id, &tail) == 1)
            nodes[nnodes++] = id;
    }
    closedir(d);
    qsort(nodes, nnodes, sizeof(nodes[0]), cmp_int);

    long mem_total_mb = 0;
    static char out[65536];
    size_t used = 0;
    for (int i = 0; i < nnodes; i++) {
        char path[128], list[4096];
        snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/cpulist", nodes[i]);
        if (!read_line(path, list, sizeof(list)))
            return 1;
        static bool member[kMaxCpus];
        memset(member, 0, sizeof(member));
        int n = parse_cpulist(list, member);
        if (n < 0) {
            fprintf(stderr, "aggvm-topology: bad cpulist '%s' in %s\n", list, path);
            return 1;
        }
        for (int c = 0; c < kMaxCpus; c++) {
            if (!member[c])
                continue;
            if (covered[c]) {
                fprintf(stderr, "aggvm-topology: cpu %d in two nodes\n", c);
                ok = false;
            }
            covered[c] = true;
        }
        long mb = node_mem_mb(nodes[i]);
        if (mb < 0)
            ok = false;
        else
            mem_total_mb += mb;
        used += snprintf(out + used, sizeof(out) - used, " node%d_cpus=%s node%d_mb=%ld",
                         nodes[i], list[0] ? list : "none", nodes[i], mb);
        if (used >= sizeof(out))
            used = sizeof(out) - 1;
    }
    for (int c = 0; c < kMaxCpus; c++) {
        if (online[c] && !covered[c]) {
            fprintf(stderr, "aggvm-topology: online cpu %d in no node\n", c);
            ok = false;
        }
    }
    if (nnodes == 0)
        ok = false;

    printf("aggvm-topology: vcpus=%d numa_nodes=%d%s mem_mb=%ld status=%s\n", vcpus, nnodes, out,
           mem_total_mb, ok ? "pass" : "fail");
    fflush(stdout);
    return ok ? 0 : 1;
}
