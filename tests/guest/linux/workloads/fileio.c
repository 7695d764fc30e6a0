// SPDX-License-Identifier: GPL-2.0-or-later
//
// aggvm-fileio: writes a file larger than the guest's page cache from every
// vCPU, then reads it back from a different vCPU and checks every byte.
//
//   aggvm-fileio PATH MIB
//
// One thread per online vCPU, each pinned to its own.  The file is cut into
// as many stripes; thread i writes stripe i (buffered writes, 1 MiB at a
// time, then fsync), so in an aggregated guest the page cache is filled by
// vCPUs on every host and node 0's disk model reads it from all of them.
// Then the page cache is dropped (the file is larger than RAM anyway) and
// thread i verifies stripe i+1: the data comes back from the disk into pages
// that a vCPU on another host reads.  Each 4 KiB block holds its offset and
// a pattern derived from it, so a misplaced, stale or torn block is caught:
//
//   aggvm-fileio: threads=4 cpus=0,1,2,3 file_mb=768 mem_mb=480 write_mb_s=... read_mb_s=... blocks=196608 bad=0 status=pass
//
// The guest must be able to write /proc/sys/vm/drop_caches (root).

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define CHUNK (1 << 20)
#define MAGIC 0x4f494c4946475641ull /* "AVGFILIO" */

struct stripe {
    int cpu;
    int fd;
    uint64_t first_block, blocks;   // this thread's stripe when writing
    uint64_t verify_first, verify_blocks;
    uint64_t bad;                   // blocks that did not check
    uint64_t first_bad;             // offset of the first, in blocks
    int error;                      // errno of a failed call, 0 if none
};

static pthread_barrier_t barrier;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fill_block(uint8_t *p, uint64_t block)
{
    uint64_t x = block * 0x9e3779b97f4a7c15ull + MAGIC;
    memcpy(p, &block, 8);
    for (size_t i = 8; i < BLOCK; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static int write_stripe(struct stripe *s, uint8_t *buf)
{
    for (uint64_t b = 0; b < s->blocks; b += CHUNK / BLOCK) {
        uint64_t n = s->blocks - b < CHUNK / BLOCK ? s->blocks - b : CHUNK / BLOCK;
        for (uint64_t k = 0; k < n; k++)
            fill_block(buf + k * BLOCK, s->first_block + b + k);
        size_t len = n * BLOCK, done = 0;
        off_t off = (off_t)((s->first_block + b) * BLOCK);
        while (done < len) {
            ssize_t w = pwrite(s->fd, buf + done, len - done, off + (off_t)done);
            if (w <= 0)
                return w < 0 ? errno : EIO;
            done += (size_t)w;
        }
    }
    return fdatasync(s->fd) ? errno : 0;
}

static int verify_stripe(struct stripe *s, uint8_t *buf, uint8_t *want)
{
    for (uint64_t b = 0; b < s->verify_blocks; b += CHUNK / BLOCK) {
        uint64_t n = s->verify_blocks - b < CHUNK / BLOCK ? s->verify_blocks - b : CHUNK / BLOCK;
        size_t len = n * BLOCK, done = 0;
        off_t off = (off_t)((s->verify_first + b) * BLOCK);
        while (done < len) {
            ssize_t r = pread(s->fd, buf + done, len - done, off + (off_t)done);
            if (r <= 0)
                return r < 0 ? errno : EIO;
            done += (size_t)r;
        }
        for (uint64_t k = 0; k < n; k++) {
            uint64_t block = s->verify_first + b + k;
            fill_block(want, block);
            if (memcmp(buf + k * BLOCK, want, BLOCK) != 0 && s->bad++ == 0)
                s->first_bad = block;
        }
    }
    return 0;
}

static void *worker(void *arg)
{
    struct stripe *s = arg;
    pin(s->cpu);
    uint8_t *buf = malloc(CHUNK), *want = malloc(BLOCK);
    if (!buf || !want) {
        s->error = ENOMEM;
    }
    pthread_barrier_wait(&barrier);
    if (!s->error)
        s->error = write_stripe(s, buf);
    pthread_barrier_wait(&barrier);     // written and synced everywhere
    pthread_barrier_wait(&barrier);     // page cache dropped
    if (!s->error)
        s->error = verify_stripe(s, buf, want);
    free(buf);
    free(want);
    return NULL;
}

static int drop_caches(void)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0)
        return errno;
    int rc = write(fd, "3\n", 2) == 2 ? 0 : errno;
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: aggvm-fileio PATH MIB\n");
        return 2;
    }
    uint64_t mib = strtoull(argv[2], NULL, 0);
    int threads = get_nprocs();
    uint64_t total = mib * (CHUNK / BLOCK);
    if (mib == 0 || threads < 1 || total < (uint64_t)threads) {
        fprintf(stderr, "aggvm-fileio: need MIB >= 1 and one block per thread\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        printf("aggvm-fileio: open %s errno=%d status=fail\n", argv[1], errno);
        return 1;
    }
    struct sysinfo si;
    sysinfo(&si);
    uint64_t mem_mb = (uint64_t)si.totalram * si.mem_unit >> 20;

    struct stripe *s = calloc((size_t)threads, sizeof *s);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        s[i].cpu = i;
        s[i].fd = fd;
        s[i].first_block = total * (uint64_t)i / (uint64_t)threads;
        s[i].blocks = total * (uint64_t)(i + 1) / (uint64_t)threads - s[i].first_block;
    }
    for (int i = 0; i < threads; i++) {
        // Thread i verifies what thread i+1 wrote: a vCPU on another host.
        s[i].verify_first = s[(i + 1) % threads].first_block;
        s[i].verify_blocks = s[(i + 1) % threads].blocks;
        pthread_create(&tid[i], NULL, worker, &s[i]);
    }
    pthread_barrier_wait(&barrier);
    double t0 = now_s();
    pthread_barrier_wait(&barrier);
    double t1 = now_s();
    int drop = drop_caches();
    double t2 = now_s();
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double t3 = now_s();
    close(fd);
    unlink(argv[1]);

    uint64_t bad = 0, first_bad = 0;
    int error = drop;
    char cpus[512] = "";
    for (int i = 0; i < threads; i++) {
        if (s[i].bad && !bad)
            first_bad = s[i].first_bad;
        bad += s[i].bad;
        if (s[i].error && !error)
            error = s[i].error;
        snprintf(cpus + strlen(cpus), sizeof cpus - strlen(cpus), "%s%d", i ? "," : "", s[i].cpu);
    }
    int ok = !error && !bad && mib > mem_mb;
    printf("aggvm-fileio: threads=%d cpus=%s file_mb=%" PRIu64 " mem_mb=%" PRIu64
           " write_mb_s=%.1f read_mb_s=%.1f blocks=%" PRIu64 " bad=%" PRIu64 " first_bad=%" PRIu64
           " errno=%d status=%s\n",
           threads, cpus, mib, mem_mb, mib / (t1 - t0), mib / (t3 - t2), total, bad, first_bad,
           error, ok ? "pass" : "fail");
    return ok ? 0 : 1;
}
