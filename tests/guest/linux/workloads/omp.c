// SPDX-License-Identifier: GPL-2.0-or-later
//
// aggvm-omp: an HPC kernel through Debian's OpenMP runtime (libgomp): a 2-D
// Jacobi stencil on a shared grid, rows split over one thread per vCPU, and
// a reduction of the result.  Each sweep reads the rows next to a thread's
// own, which belong to its neighbours: under aggvm, threads on different
// hosts share those rows, as an OpenMP code spread over a cluster would.
//
// The stencil is in integers, so the parallel result must equal, bit for
// bit, the same sweeps run by one thread afterwards; both checksums and the
// CPUs the threads ran on are printed:
//
//   aggvm-omp: threads=4 cpus=0,1,2,3 grid=384 sweeps=24 checksum=... serial=... ms=... status=pass
//
// Usage: aggvm-omp [-n GRID] [-s SWEEPS]

#define _GNU_SOURCE
#include <inttypes.h>
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void init(int64_t *g, int n)
{
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            // Hot edges, a pattern inside: every sweep changes the grid.
            int edge = i == 0 || j == 0 || i == n - 1 || j == n - 1;
            g[(size_t)i * n + j] = edge ? 1 << 20 : (int64_t)((i * 131 + j * 71) % 1024);
        }
    }
}

// One sweep from a to b; the edges stay fixed.
static void sweep_rows(const int64_t *a, int64_t *b, int n, int lo, int hi)
{
    for (int i = lo; i < hi; i++) {
        if (i == 0 || i == n - 1) {
            memcpy(b + (size_t)i * n, a + (size_t)i * n, sizeof(int64_t) * n);
            continue;
        }
        const int64_t *up = a + (size_t)(i - 1) * n, *row = a + (size_t)i * n, *down = a + (size_t)(i + 1) * n;
        int64_t *out = b + (size_t)i * n;
        out[0] = row[0];
        out[n - 1] = row[n - 1];
        for (int j = 1; j < n - 1; j++)
            out[j] = (up[j] + down[j] + row[j - 1] + row[j + 1] + 4 * row[j]) >> 3;
    }
}

static uint64_t checksum(const int64_t *g, int n)
{
    uint64_t s = 0;
    for (size_t k = 0; k < (size_t)n * n; k++)
        s = s * 1099511628211ull + (uint64_t)g[k];
    return s;
}

int main(int argc, char **argv)
{
    int n = 384, sweeps = 24, opt;
    while ((opt = getopt(argc, argv, "n:s:")) != -1) {
        if (opt == 'n') n = atoi(optarg);
        else if (opt == 's') sweeps = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-n GRID] [-s SWEEPS]\n", argv[0]);
            return 2;
        }
    }
    if (n < 3 || n > 8192 || sweeps < 1) {
        fprintf(stderr, "aggvm-omp: bad grid %d or sweeps %d\n", n, sweeps);
        return 2;
    }
    size_t cells = (size_t)n * n;
    int64_t *a = malloc(cells * sizeof *a), *b = malloc(cells * sizeof *b);
    int64_t *sa = malloc(cells * sizeof *sa), *sb = malloc(cells * sizeof *sb);
    if (!a || !b || !sa || !sb) {
        printf("aggvm-omp: out of memory status=fail\n");
        return 1;
    }
    init(a, n);
    init(sa, n);

    int threads = omp_get_max_threads();
    int *cpu_of = calloc(threads, sizeof *cpu_of);
    long long sum = 0;
    double t0 = now_ms();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        cpu_of[t] = sched_getcpu();
        int lo = (int)((long)n * t / nt), hi = (int)((long)n * (t + 1) / nt);
        int64_t *src = a, *dst = b;
        for (int s = 0; s < sweeps; s++) {
            sweep_rows(src, dst, n, lo, hi);
#pragma omp barrier
            int64_t *tmp = src;
            src = dst;
            dst = tmp;
        }
        for (int i = lo; i < hi; i++)
            for (int j = 0; j < n; j++)
                sum += src[(size_t)i * n + j];
    }
    double ms = now_ms() - t0;
    const int64_t *par = sweeps % 2 ? b : a;

    for (int s = 0; s < sweeps; s++) {
        sweep_rows(sa, sb, n, 0, n);
        int64_t *tmp = sa;
        sa = sb;
        sb = tmp;
    }
    long long serial_sum = 0;
    for (size_t k = 0; k < cells; k++) serial_sum += sa[k];
    uint64_t got = checksum(par, n), want = checksum(sa, n);

    char cpus[512] = "";
    size_t used = 0;
    for (int t = 0; t < threads && used < sizeof cpus - 8; t++)
        used += snprintf(cpus + used, sizeof cpus - used, "%s%d", t ? "," : "", cpu_of[t]);
    int ok = got == want && sum == serial_sum;
    printf("aggvm-omp: threads=%d cpus=%s grid=%d sweeps=%d sum=%lld serial_sum=%lld checksum=%016" PRIx64
           " serial=%016" PRIx64 " ms=%.0f status=%s\n",
           threads, cpus, n, sweeps, sum, serial_sum, got, want, ms, ok ? "pass" : "fail");
    return ok ? 0 : 1;
}
