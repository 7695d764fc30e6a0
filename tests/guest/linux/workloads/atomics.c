// SPDX-License-Identifier: GPL-2.0-or-later
//
// aggvm-atomics: a coherence check for the guest's shared memory.
//
// N threads hammer shared counters with fetch-add and append checksummed
// records to one shared buffer (slot taken by a fetch-add ticket, published
// with a release store).  While running, each thread re-reads records that
// others published (acquire load) and checks their checksums, so a stale or
// torn cache line seen across vCPUs shows up as a mismatch.  After the join
// every counter and every record is verified against an exact expectation.
// Under aggvm these vCPUs may sit on different hosts, so this is the DSM's
// sequential-consistency test as seen from inside a real Linux guest.

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { kLanes = 8, kCacheLine = 64 };

// One counter per cache line: lanes are contended by design, but not falsely.
struct lane {
    _Alignas(kCacheLine) atomic_uint_fast64_t value;
};

struct record {
    atomic_uint_fast64_t published;  // 0 until the payload below is complete
    uint64_t thread;
    uint64_t seq;
    uint64_t checksum;
};

struct shared {
    struct lane total;               // every increment lands here too
    struct lane lanes[kLanes];
    _Alignas(kCacheLine) atomic_uint_fast64_t next_slot;
    _Alignas(kCacheLine) atomic_uint_fast64_t early_checks;
    atomic_uint_fast64_t early_mismatches;
    struct record *records;
    uint64_t nrecords;
    uint64_t iterations;             // per thread
    uint64_t records_per_thread;
    pthread_barrier_t start;
};

struct worker {
    pthread_t tid;
    struct shared *sh;
    uint64_t id;
};

static uint64_t mix(uint64_t x)
{
    // splitmix64 finalizer: cheap, and every input bit reaches every output bit.
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t record_checksum(uint64_t thread, uint64_t seq)
{
    return mix(thread * 0x100000001b3ULL ^ mix(seq));
}

static void check_published(struct shared *sh, uint64_t rng)
{
    uint64_t upto = atomic_load_explicit(&sh->next_slot, memory_order_relaxed);
    if (upto == 0)
        return;
    if (upto > sh->nrecords)
        upto = sh->nrecords;
    struct record *r = &sh->records[rng % upto];
    if (!atomic_load_explicit(&r->published, memory_order_acquire))
        return;  // ticket taken, payload not yet published: nothing to check
    atomic_fetch_add_explicit(&sh->early_checks, 1, memory_order_relaxed);
    if (r->checksum != record_checksum(r->thread, r->seq))
        atomic_fetch_add_explicit(&sh->early_mismatches, 1, memory_order_relaxed);
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    uint64_t rng = mix(w->id + 1);
    // Spread record appends evenly through the counter loop.
    uint64_t every = sh->iterations / sh->records_per_thread;
    if (every == 0)
        every = 1;
    uint64_t seq = 0;

    pthread_barrier_wait(&sh->start);
    for (uint64_t i = 0; i < sh->iterations; i++) {
        rng = mix(rng);
        atomic_fetch_add_explicit(&sh->total.value, 1, memory_order_seq_cst);
        atomic_fetch_add_explicit(&sh->lanes[rng % kLanes].value, 1, memory_order_relaxed);
        if (seq < sh->records_per_thread && i % every == 0) {
            uint64_t slot = atomic_fetch_add_explicit(&sh->next_slot, 1, memory_order_relaxed);
            if (slot < sh->nrecords) {
                struct record *r = &sh->records[slot];
                r->thread = w->id;
                r->seq = seq;
                r->checksum = record_checksum(w->id, seq);
                atomic_store_explicit(&r->published, 1, memory_order_release);
            }
            seq++;
            check_published(sh, rng >> 8);
        }
    }
    // Records still owed (iterations < records_per_thread).
    for (; seq < sh->records_per_thread; seq++) {
        uint64_t slot = atomic_fetch_add_explicit(&sh->next_slot, 1, memory_order_relaxed);
        if (slot < sh->nrecords) {
            struct record *r = &sh->records[slot];
            r->thread = w->id;
            r->seq = seq;
            r->checksum = record_checksum(w->id, seq);
            atomic_store_explicit(&r->published, 1, memory_order_release);
        }
    }
    return NULL;
}

// Every (thread, seq) pair must appear exactly once with a valid checksum.
static bool verify_records(const struct shared *sh, uint64_t threads)
{
    uint8_t *seen = calloc(sh->nrecords, 1);
    if (!seen) {
        fprintf(stderr, "aggvm-atomics: out of memory verifying records\n");
        return false;
    }
    bool ok = atomic_load(&sh->next_slot) == sh->nrecords;
    for (uint64_t i = 0; ok && i < sh->nrecords; i++) {
        const struct record *r = &sh->records[i];
        if (!atomic_load(&r->published) || r->thread >= threads ||
            r->seq >= sh->records_per_thread ||
            r->checksum != record_checksum(r->thread, r->seq)) {
            ok = false;
            break;
        }
        uint64_t idx = r->thread * sh->records_per_thread + r->seq;
        if (seen[idx]++) {
            ok = false;
        }
    }
    free(seen);
    return ok;
}

static uint64_t parse_u64(const char *what, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || end == s || v == 0) {
        fprintf(stderr, "aggvm-atomics: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: aggvm-atomics [-t threads] [-n iterations-per-thread] "
                    "[-r records-per-thread]\n");
}

int main(int argc, char **argv)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t threads = online > 0 ? (uint64_t)online : 1;
    uint64_t iterations = 1000000;
    uint64_t records_per_thread = 4096;
    int opt;
    while ((opt = getopt(argc, argv, "t:n:r:h")) != -1) {
        switch (opt) {
        case 't': threads = parse_u64("thread count", optarg); break;
        case 'n': iterations = parse_u64("iteration count", optarg); break;
        case 'r': records_per_thread = parse_u64("record count", optarg); break;
        default: usage(); return 2;
        }
    }
    if (threads > 4096) {
        fprintf(stderr, "aggvm-atomics: at most 4096 threads\n");
        return 2;
    }

    struct shared *sh = aligned_alloc(kCacheLine, sizeof(*sh));
    struct worker *workers = calloc(threads, sizeof(*workers));
    if (!sh || !workers) {
        fprintf(stderr, "aggvm-atomics: out of memory\n");
        return 1;
    }
    memset(sh, 0, sizeof(*sh));
    sh->iterations = iterations;
    sh->records_per_thread = records_per_thread;
    sh->nrecords = threads * records_per_thread;
    sh->records = calloc(sh->nrecords, sizeof(struct record));
    if (!sh->records) {
        fprintf(stderr, "aggvm-atomics: out of memory for %" PRIu64 " records\n", sh->nrecords);
        return 1;
    }
    int err = pthread_barrier_init(&sh->start, NULL, (unsigned)threads);
    if (err) {
        fprintf(stderr, "aggvm-atomics: pthread_barrier_init: %s\n", strerror(err));
        return 1;
    }

    double t0 = now_s();
    for (uint64_t i = 0; i < threads; i++) {
        workers[i].sh = sh;
        workers[i].id = i;
        err = pthread_create(&workers[i].tid, NULL, run_worker, &workers[i]);
        if (err) {
            fprintf(stderr, "aggvm-atomics: pthread_create %" PRIu64 ": %s\n", i, strerror(err));
            return 1;
        }
    }
    for (uint64_t i = 0; i < threads; i++) {
        err = pthread_join(workers[i].tid, NULL);
        if (err) {
            fprintf(stderr, "aggvm-atomics: pthread_join %" PRIu64 ": %s\n", i, strerror(err));
            return 1;
        }
    }
    double elapsed = now_s() - t0;

    uint64_t expected = threads * iterations;
    uint64_t total = atomic_load(&sh->total.value);
    uint64_t lane_sum = 0;
    for (int i = 0; i < kLanes; i++)
        lane_sum += atomic_load(&sh->lanes[i].value);
    bool records_ok = verify_records(sh, threads);
    uint64_t mismatches = atomic_load(&sh->early_mismatches);
    bool pass = total == expected && lane_sum == expected && records_ok && mismatches == 0;

    printf("aggvm-atomics: threads=%" PRIu64 " iterations=%" PRIu64 " total=%" PRIu64
           " lanes=%" PRIu64 " expected=%" PRIu64 " records=%" PRIu64
           " live_checks=%" PRIu64 " live_mismatches=%" PRIu64
           " checksum=%s elapsed_ms=%.0f status=%s\n",
           threads, iterations, total, lane_sum, expected, sh->nrecords,
           (uint64_t)atomic_load(&sh->early_checks), mismatches,
           records_ok && mismatches == 0 ? "ok" : "bad", elapsed * 1e3,
           pass ? "pass" : "fail");
    fflush(stdout);
    pthread_barrier_destroy(&sh->start);
    free(sh->records);
    free(workers);
    free(sh);
    return pass ? 0 : 1;
}
