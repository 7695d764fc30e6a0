// SPDX-License-Identifier: GPL-2.0-or-later
//
// aggvm-stream: a STREAM-like memory bandwidth pass (copy, scale, add, triad)
// over three arrays, split across threads.  Best-of-N timing as in McCalpin's
// STREAM; the arrays' final values are checked against the closed form so a
// run that lost writes (a coherence bug) fails instead of reporting a number.

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum kernel { kCopy, kScale, kAdd, kTriad, kKernels };
static const char *const kNames[kKernels] = {"copy", "scale", "add", "triad"};
// Arrays each kernel streams: copy/scale read 1 write 1, add/triad read 2 write 1.
static const int kArrays[kKernels] = {2, 2, 3, 3};
static const double kScalar = 3.0;

struct job {
    double *a, *b, *c;
    size_t n;
    size_t threads;
    int passes;
    pthread_barrier_t barrier;
    double best[kKernels];
};

struct worker {
    pthread_t tid;
    struct job *job;
    size_t lo, hi;
    bool timer;  // this worker times the kernels
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void run_kernel(const struct worker *w, enum kernel k)
{
    double *restrict a = w->job->a, *restrict b = w->job->b, *restrict c = w->job->c;
    switch (k) {
    case kCopy:  for (size_t i = w->lo; i < w->hi; i++) c[i] = a[i]; break;
    case kScale: for (size_t i = w->lo; i < w->hi; i++) b[i] = kScalar * c[i]; break;
    case kAdd:   for (size_t i = w->lo; i < w->hi; i++) c[i] = a[i] + b[i]; break;
    case kTriad: for (size_t i = w->lo; i < w->hi; i++) a[i] = b[i] + kScalar * c[i]; break;
    default: break;
    }
}

// Thread 0 times each kernel between two barriers; the others just run it.
static void *run_worker(void *arg)
{
    struct worker *w = arg;
    struct job *job = w->job;
    bool timer = w->timer;
    for (size_t i = w->lo; i < w->hi; i++) {
        job->a[i] = 1.0;
        job->b[i] = 2.0;
        job->c[i] = 0.0;
    }
    for (int p = 0; p < job->passes; p++) {
        for (int k = 0; k < kKernels; k++) {
            pthread_barrier_wait(&job->barrier);
            double t0 = timer ? now_s() : 0;
            run_kernel(w, (enum kernel)k);
            pthread_barrier_wait(&job->barrier);
            if (timer) {
                double t = now_s() - t0;
                // The first pass faults the pages in; STREAM skips it too.
                if (p > 0 && (job->best[k] == 0 || t < job->best[k]))
                    job->best[k] = t;
            }
        }
    }
    return NULL;
}

// The closed-form values after `passes` rounds of the four kernels.
static bool verify(const struct job *job)
{
    double a = 1.0, b = 2.0, c = 0.0;
    for (int p = 0; p < job->passes; p++) {
        c = a;
        b = kScalar * c;
        c = a + b;
        a = b + kScalar * c;
    }
    for (size_t i = 0; i < job->n; i++) {
        if (fabs(job->a[i] - a) > 1e-9 * fabs(a) || fabs(job->b[i] - b) > 1e-9 * fabs(b) ||
            fabs(job->c[i] - c) > 1e-9 * fabs(c)) {
            fprintf(stderr, "aggvm-stream: element %zu is (%g, %g, %g), expected (%g, %g, %g)\n",
                    i, job->a[i], job->b[i], job->c[i], a, b, c);
            return false;
        }
    }
    return true;
}

static uint64_t parse_u64(const char *what, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || end == s || v == 0) {
        fprintf(stderr, "aggvm-stream: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    uint64_t array_mb = 8, threads = 1, passes = 4;
    int opt;
    while ((opt = getopt(argc, argv, "m:t:p:h")) != -1) {
        switch (opt) {
        case 'm': array_mb = parse_u64("array size", optarg); break;
        case 't': threads = parse_u64("thread count", optarg); break;
        case 'p': passes = parse_u64("pass count", optarg); break;
        default:
            fprintf(stderr, "usage: aggvm-stream [-m MiB-per-array] [-t threads] [-p passes]\n");
            return 2;
        }
    }
    if (passes < 2 || passes > 100 || threads > 4096 || array_mb > (1u << 20)) {
        fprintf(stderr, "aggvm-stream: need 2 <= passes <= 100 (values grow 13x a pass), threads <= 4096\n");
        return 2;
    }

    struct job job = {.threads = threads, .passes = (int)passes};
    job.n = array_mb * 1024 * 1024 / sizeof(double);
    if (job.n < threads) {
        fprintf(stderr, "aggvm-stream: array too small for %" PRIu64 " threads\n", threads);
        return 2;
    }
    job.a = aligned_alloc(4096, job.n * sizeof(double));
    job.b = aligned_alloc(4096, job.n * sizeof(double));
    job.c = aligned_alloc(4096, job.n * sizeof(double));
    struct worker *workers = calloc(threads, sizeof(*workers));
    if (!job.a || !job.b || !job.c || !workers) {
        fprintf(stderr, "aggvm-stream: out of memory for 3 x %" PRIu64 " MiB\n", array_mb);
        return 1;
    }
    int err = pthread_barrier_init(&job.barrier, NULL, (unsigned)threads);
    if (err) {
        fprintf(stderr, "aggvm-stream: pthread_barrier_init: %s\n", strerror(err));
        return 1;
    }
    for (size_t t = 0; t < threads; t++) {
        workers[t].job = &job;
        workers[t].lo = job.n * t / threads;
        workers[t].hi = job.n * (t + 1) / threads;
        workers[t].timer = t == 0;
        err = pthread_create(&workers[t].tid, NULL, run_worker, &workers[t]);
        if (err) {
            fprintf(stderr, "aggvm-stream: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }
    for (size_t t = 0; t < threads; t++) {
        err = pthread_join(workers[t].tid, NULL);
        if (err) {
            fprintf(stderr, "aggvm-stream: pthread_join: %s\n", strerror(err));
            return 1;
        }
    }

    bool ok = verify(&job);
    printf("aggvm-stream: threads=%" PRIu64 " array_mb=%" PRIu64 " passes=%" PRIu64, threads,
           array_mb, passes);
    for (int k = 0; k < kKernels; k++) {
        double bytes = (double)kArrays[k] * job.n * sizeof(double);
        printf(" %s_mb_s=%.1f", kNames[k], job.best[k] > 0 ? bytes / job.best[k] / 1e6 : 0.0);
    }
    printf(" check=%s status=%s\n", ok ? "ok" : "bad", ok ? "pass" : "fail");
    fflush(stdout);
    pthread_barrier_destroy(&job.barrier);
    free(workers);
    free(job.a);
    free(job.b);
    free(job.c);
    return ok ? 0 : 1;
}
