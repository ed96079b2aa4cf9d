/*
 * pool.c - a persistent thread pool for data-parallel loops: n_threads - 1 workers are
 * created once and sleep between jobs; tensor_pool_for splits [0, n) into contiguous chunks
 * (a few per thread) that the caller and the workers claim one at a time, and returns when
 * every chunk is done. Also keeps one scratch buffer for matmul.c's converted activations.
 *
 * Does not own: what the chunks compute. Called by: matmul.c, model/ (attention heads),
 * quant/, engine/ (creates one pool per context).
 *
 * Claiming: one 64-bit word holds the job's generation, its chunk count and the next
 * unclaimed chunk; a thread claims a chunk with a compare-and-swap on it, so a chunk is
 * never run twice, a thread that wakes late finds nothing left, and the caller does all
 * the work itself when the workers are descheduled (a busy machine) instead of waiting for
 * them. A successful claim means the job is still running (the caller waits for every
 * chunk), so the job's description read after it is the right one.
 *
 * Wake-up: a job is published under the mutex. Waiters spin on the word briefly (decode
 * issues many small jobs back to back, and a futex wake costs more than a job) and then
 * sleep on a condition variable, re-checking under the mutex so that no wake-up is lost.
 * Completion works the same way on `done`.
 */
#include "tensor/tensor_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define POOL_MAX_THREADS       512
#define POOL_SPIN_ITERS        20000             /* about tens of microseconds of pause */
#define POOL_SCRATCH_MAX       ((size_t)1 << 32) /* cap on the matmul scratch buffer: 4 GiB */
#define POOL_CHUNKS_PER_THREAD 2                 /* finer chunks even out uneven threads */

/* The claim word: generation (24 bits) | chunk count (20 bits) | next chunk (20 bits). */
#define POOL_CHUNK_BITS 20
#define POOL_CHUNK_MASK ((1u << POOL_CHUNK_BITS) - 1u)
#define POOL_GEN_MASK   ((1u << 24) - 1u)

typedef struct pool_worker {
    struct tensor_pool *pool;
    int index; /* 1 .. n_threads-1; the caller is 0 */
} pool_worker;

struct tensor_pool {
    int n_threads;
    int n_started; /* workers successfully created */
    pthread_t *threads;
    pool_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    _Alignas(64) atomic_uint_least64_t claim; /* see the top of the file */
    _Alignas(64) atomic_uint done;            /* chunks finished of the current job */
    atomic_bool quit;
    uint32_t gen; /* the last generation published (caller only) */
    /* The current job; written before the claim word is published, read after a claim. */
    tensor_range_fn fn;
    void *ctx;
    int64_t n;
    /* Scratch for tensor_pool_scratch. */
    void *scratch;
    size_t scratch_size;
    tensor_matmul_stats stats; /* touched by the calling thread only */
};

static inline uint32_t claim_gen(uint64_t w)
{
    return (uint32_t)(w >> (2 * POOL_CHUNK_BITS));
}

static inline uint32_t claim_count(uint64_t w)
{
    return (uint32_t)(w >> POOL_CHUNK_BITS) & POOL_CHUNK_MASK;
}

static inline uint32_t claim_next(uint64_t w)
{
    return (uint32_t)w & POOL_CHUNK_MASK;
}

static inline void pool_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claims and runs chunks of job `gen` as thread t until none is left or the job changed. */
static void pool_run_chunks(tensor_pool *p, uint32_t gen, int t)
{
    for (;;) {
        uint64_t w = atomic_load_explicit(&p->claim, memory_order_acquire);
        if (claim_gen(w) != gen || claim_next(w) >= claim_count(w)) return;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &w, w + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        const int64_t c = claim_next(w), nc = claim_count(w);
        const int64_t i0 = p->n * c / nc, i1 = p->n * (c + 1) / nc;
        if (i1 > i0) p->fn(p->ctx, i0, i1, t);
        const unsigned finished = atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1;
        if (finished == nc && t != 0) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Waits until the claim word's generation differs from seen (or quit); returns it. */
static uint32_t pool_wait_job(tensor_pool *p, uint32_t seen)
{
    for (int i = 0; i < POOL_SPIN_ITERS; i++) {
        const uint32_t g = claim_gen(atomic_load_explicit(&p->claim, memory_order_acquire));
        if (g != seen || atomic_load(&p->quit)) return g;
        pool_cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    while (claim_gen(atomic_load(&p->claim)) == seen && !atomic_load(&p->quit))
        pthread_cond_wait(&p->cv_work, &p->mu);
    const uint32_t g = claim_gen(atomic_load(&p->claim));
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *pool_worker_main(void *arg)
{
    pool_worker *w = arg;
    tensor_pool *p = w->pool;
    uint32_t seen = 0;
    for (;;) {
        seen = pool_wait_job(p, seen);
        if (atomic_load(&p->quit)) break;
        pool_run_chunks(p, seen, w->index);
    }
    return NULL;
}

static void pool_wait_done(tensor_pool *p, unsigned n_chunks)
{
    for (int i = 0; i < POOL_SPIN_ITERS; i++) {
        if (atomic_load_explicit(&p->done, memory_order_acquire) == n_chunks) return;
        pool_cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->done) != n_chunks) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static void pool_stop_workers(tensor_pool *p)
{
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->threads[i], NULL);
    p->n_started = 0;
}

mica_status tensor_pool_new(tensor_pool **out, int n_threads, mica_err *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > POOL_MAX_THREADS)
        return core_fail(err, MICA_EINVAL, "thread pool: %d threads (must be 1..%d)", n_threads,
                         POOL_MAX_THREADS);
    tensor_pool *p = calloc(1, sizeof *p);
    if (!p) return core_fail(err, MICA_ENOMEM, "thread pool: out of memory");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->claim, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->quit, false);
    if (n_threads > 1) {
        p->threads = core_calloc((size_t)n_threads - 1, sizeof *p->threads);
        p->workers = core_calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->threads || !p->workers) {
            tensor_pool_free(p);
            return core_fail(err, MICA_ENOMEM, "thread pool: out of memory");
        }
        for (int i = 0; i < n_threads - 1; i++) {
            p->workers[i] = (pool_worker){.pool = p, .index = i + 1};
            if (pthread_create(&p->threads[i], NULL, pool_worker_main, &p->workers[i]) != 0) {
                tensor_pool_free(p);
                return core_fail(err, MICA_ENOMEM, "thread pool: cannot create thread %d of %d",
                                 i + 2, n_threads);
            }
            p->n_started++;
        }
    }
    *out = p;
    return MICA_OK;
}

void tensor_pool_free(tensor_pool *p)
{
    if (!p) return;
    pool_stop_workers(p);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv_work);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->workers);
    free(p->scratch);
    free(p);
}

int tensor_pool_size(const tensor_pool *p)
{
    return p ? p->n_threads : 1;
}

void tensor_pool_for(tensor_pool *p, int64_t n, tensor_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (!p || p->n_threads == 1 || n == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    int64_t nc = (int64_t)p->n_threads * POOL_CHUNKS_PER_THREAD;
    if (nc > n) nc = n;
    if (nc > (int64_t)POOL_CHUNK_MASK) nc = POOL_CHUNK_MASK;
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->gen = (p->gen + 1) & POOL_GEN_MASK;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    const uint64_t w =
        ((uint64_t)p->gen << (2 * POOL_CHUNK_BITS)) | ((uint64_t)nc << POOL_CHUNK_BITS);
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->claim, w, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    pool_run_chunks(p, p->gen, 0);
    pool_wait_done(p, (unsigned)nc);
}

void *tensor_pool_scratch(tensor_pool *p, size_t bytes)
{
    if (!p || bytes > POOL_SCRATCH_MAX) return NULL;
    if (bytes <= p->scratch_size) return p->scratch;
    /* Grow by half again so a slowly growing batch does not reallocate every call. */
    size_t want = bytes + bytes / 2;
    if (want > POOL_SCRATCH_MAX) want = POOL_SCRATCH_MAX;
    void *s = malloc(want);
    if (!s) return NULL;
    free(p->scratch);
    p->scratch = s;
    p->scratch_size = want;
    return s;
}

void tensor_pool_count_matmul(tensor_pool *p, const tensor_view *w, int64_t n_rows)
{
    if (!p) return;
    p->stats.calls++;
    p->stats.rows += (uint64_t)n_rows;
    p->stats.macs += (uint64_t)w->ne[0] * (uint64_t)w->ne[1] * (uint64_t)n_rows;
    p->stats.weight_bytes += (uint64_t)w->ne[1] * w->row_bytes;
}

tensor_matmul_stats tensor_pool_matmul_stats(const tensor_pool *p)
{
    return p->stats;
}

void tensor_pool_reset_matmul_stats(tensor_pool *p)
{
    p->stats = (tensor_matmul_stats){0};
}
