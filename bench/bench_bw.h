/*
 * bench_bw.h - the memory read-bandwidth reader shared by bench/bandwidth.c (the standalone
 * figure) and bench/bench_shapes.c (the denominator of its decode "bandwidth bound").
 * STREAM-like: n threads each sum their own contiguous part of one buffer much larger than
 * the caches, all released together by a barrier; a pass takes the wall time from the
 * release until the slowest thread is done. Header-only (static functions) because each
 * bench program is its own executable; not part of the library.
 */
#ifndef MICA_BENCH_BW_H
#define MICA_BENCH_BW_H

#include "core/core.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define BW_MAX_THREADS 256

typedef struct bw_shared {
    const uint64_t *buf;
    size_t n_words; /* of the whole buffer */
    int n_threads;
    bool use_avx2;
    pthread_barrier_t start, stop;
    uint64_t sink[BW_MAX_THREADS]; /* each thread's sum, so the reads cannot be dropped */
} bw_shared;

typedef struct bw_worker_arg {
    bw_shared *s;
    int index, passes;
} bw_worker_arg;

/* Eight independent sums so the loop is limited by loads, not by one add chain; the
 * compiler turns it into (16-byte) vector loads. */
static inline uint64_t bw_sum_generic(const uint64_t *p, size_t n)
{
    uint64_t a[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    for (; i < n; i++) a[0] += p[i];
    uint64_t s = 0;
    for (int k = 0; k < 8; k++) s += a[k];
    return s;
}

#if defined(__x86_64__)
/* 32-byte loads, four sums: on Zen 5 this reads 10-20 % faster than the 16-byte loop, and
 * the kernels it is compared with load 32 or 64 bytes at a time. p is 32-byte aligned. */
__attribute__((target("avx2"))) static inline uint64_t bw_sum_avx2(const uint64_t *p, size_t n)
{
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i *)(p + i + 4)));
        c = _mm256_add_epi64(c, _mm256_load_si256((const __m256i *)(p + i + 8)));
        d = _mm256_add_epi64(d, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes,
                        _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d)));
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + bw_sum_generic(p + i, n - i);
}
#endif

/* One pass: wait for the release, read this thread's part, wait for all. Parts start on
 * 64-byte boundaries so the aligned loads stay aligned. */
static inline void bw_pass(bw_shared *s, int index)
{
    const size_t n_lines = s->n_words / 8;
    const size_t i0 = 8 * (n_lines * (size_t)index / (size_t)s->n_threads);
    const size_t i1 = 8 * (n_lines * (size_t)(index + 1) / (size_t)s->n_threads);
    pthread_barrier_wait(&s->start);
    uint64_t sum;
#if defined(__x86_64__)
    if (s->use_avx2)
        sum = bw_sum_avx2(s->buf + i0, i1 - i0);
    else
#endif
        sum = bw_sum_generic(s->buf + i0, i1 - i0);
    s->sink[index] += sum;
    pthread_barrier_wait(&s->stop);
}

static inline void *bw_worker(void *arg)
{
    bw_worker_arg *a = arg;
    for (int i = 0; i < a->passes; i++) bw_pass(a->s, a->index);
    return NULL;
}

static inline int bw_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The result of bw_measure: GB/s (1e9 bytes/s) per timed pass, sorted, and their median. */
typedef struct bw_result {
    double median, min, max;
    bool wide_loads; /* the 32-byte loop was used */
    uint64_t checksum;
} bw_result;

/* Reads a buffer of `bytes` with n_threads threads (the caller is one of them): one
 * untimed pass that also faults the pages in, then `reps` timed passes. pass_gbs, when not
 * NULL, receives the reps figures in pass order. Returns false when memory or threads
 * cannot be had. */
static inline bool bw_measure(int n_threads, size_t bytes, int reps, double *pass_gbs,
                              bw_result *out)
{
    if (n_threads < 1 || n_threads > BW_MAX_THREADS || reps < 1 || bytes < 64) return false;
    bw_shared *s = calloc(1, sizeof *s);
    uint64_t *buf = NULL;
    double *gbs = malloc((size_t)reps * sizeof *gbs);
    pthread_t *tid = calloc((size_t)n_threads, sizeof *tid);
    bw_worker_arg *args = calloc((size_t)n_threads, sizeof *args);
    bool ok = s && gbs && tid && args && !posix_memalign((void **)&buf, 4096, bytes);
    int started = 1;
    if (!ok) goto done;
#if defined(__x86_64__)
    __builtin_cpu_init();
    s->use_avx2 = __builtin_cpu_supports("avx2");
#endif
    /* Distinct values so that no page is shared (a zero page would stay in the caches). */
    for (size_t i = 0; i < bytes / 8; i++) buf[i] = i * 0x9e3779b97f4a7c15ull;
    s->buf = buf;
    s->n_words = bytes / 8;
    s->n_threads = n_threads;
    pthread_barrier_init(&s->start, NULL, (unsigned)n_threads);
    pthread_barrier_init(&s->stop, NULL, (unsigned)n_threads);
    for (; started < n_threads; started++) {
        args[started] = (bw_worker_arg){.s = s, .index = started, .passes = reps + 1};
        if (pthread_create(&tid[started], NULL, bw_worker, &args[started])) break;
    }
    if (started < n_threads) {
        /* The barriers wait for n_threads: without all workers nothing can run. */
        ok = false;
        for (int t = 1; t < started; t++) pthread_cancel(tid[t]);
        for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
        goto destroy;
    }
    for (int p = 0; p <= reps; p++) {
        /* The caller is thread 0: its clock starts just before the release and stops after
         * the stop barrier, which no thread passes before every part is read. */
        const double t0 = core_now();
        bw_pass(s, 0);
        const double dt = core_now() - t0;
        if (p > 0) gbs[p - 1] = (double)bytes / dt / 1e9;
    }
    for (int t = 1; t < n_threads; t++) pthread_join(tid[t], NULL);
    if (pass_gbs)
        for (int p = 0; p < reps; p++) pass_gbs[p] = gbs[p];
    qsort(gbs, (size_t)reps, sizeof *gbs, bw_cmp_double);
    out->median = reps % 2 ? gbs[reps / 2] : 0.5 * (gbs[reps / 2 - 1] + gbs[reps / 2]);
    out->min = gbs[0];
    out->max = gbs[reps - 1];
    out->wide_loads = s->use_avx2;
    out->checksum = 0;
    for (int t = 0; t < n_threads; t++) out->checksum ^= s->sink[t];
destroy:
    pthread_barrier_destroy(&s->start);
    pthread_barrier_destroy(&s->stop);
done:
    free(args);
    free(tid);
    free(gbs);
    free(buf);
    free(s);
    return ok;
}

#endif
