/*
 * aggvm-blkwrite: writes checksummed 4 KiB blocks to a disk, for ever.
 *
 *   aggvm-blkwrite DEVICE CPU [BLOCKS]
 *
 * Pinned to CPU, with its buffer first touched there (so, in an aggregated
 * guest, homed on that CPU's node), it writes block i = 0, 1, ... BLOCKS-1,
 * 0, ... with O_DIRECT: the disk reads the data straight from that buffer.
 * Each block holds a header (magic, block number, round, CRC-32 of the
 * rest) and a pattern derived from both numbers; tests/guest/linux/
 * check_blocks.py tells a valid block from a zeroed or torn one.  Prints a
 * line every 64 blocks.  Runs until the guest ends, or exits 1 on an error
 * (an I/O error is what a guest sees once its memory is lost).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 4096
#define MAGIC 0x4b4c424d56474741ull /* "AGGVMBLK" */

struct header {
    uint64_t magic;
    uint64_t block;
    uint64_t round;
    uint32_t crc;       /* over the block with this field zero */
    uint32_t reserved;
};

static uint32_t crc32(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & -(c & 1));
    }
    return ~c;
}

static void fill(uint8_t *buf, uint64_t block, uint64_t round)
{
    struct header h = { .magic = MAGIC, .block = block, .round = round };
    uint64_t x = block * 0x9e3779b97f4a7c15ull ^ round;
    for (size_t i = sizeof h; i < BLOCK; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(buf + i, &x, 8);
    }
    memcpy(buf, &h, sizeof h);
    h.crc = crc32(buf, BLOCK);
    memcpy(buf, &h, sizeof h);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: aggvm-blkwrite DEVICE CPU [BLOCKS]\n");
        return 2;
    }
    int cpu = atoi(argv[2]);
    uint64_t blocks = argc > 3 ? strtoull(argv[3], NULL, 0) : 4096;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("aggvm-blkwrite: sched_setaffinity");
        return 1;
    }
    int fd = open(argv[1], O_WRONLY | O_DIRECT | O_SYNC);
    if (fd < 0) {
        perror("aggvm-blkwrite: open");
        return 1;
    }
    uint8_t *buf;
    if (posix_memalign((void **)&buf, BLOCK, BLOCK) != 0)
        return 1;
    memset(buf, 0, BLOCK);      /* first touch: on this CPU's node */
    printf("aggvm-blkwrite: start device=%s cpu=%d blocks=%llu\n", argv[1], cpu,
           (unsigned long long)blocks);
    fflush(stdout);
    for (uint64_t n = 0;; n++) {
        uint64_t block = n % blocks, round = n / blocks;
        fill(buf, block, round);
        ssize_t w = pwrite(fd, buf, BLOCK, (off_t)(block * BLOCK));
        if (w != BLOCK) {
            printf("aggvm-blkwrite: error after=%llu errno=%d status=fail\n",
                   (unsigned long long)n, w < 0 ? errno : 0);
            fflush(stdout);
            return 1;
        }
        if ((n + 1) % 64 == 0) {
            printf("aggvm-blkwrite: wrote=%llu\n", (unsigned long long)(n + 1));
            fflush(stdout);
        }
    }
}
