/*
 * test_pool.c - tests src/tensor/pool.c: every index runs exactly once, in contiguous
 * chunks, each call with a thread index below the pool size whose OS thread is always the
 * same (0 = the caller) and differs between indices, for many sizes, thread counts and
 * repeated jobs; workers do take chunks; argument checks; clean shutdown (ASan/LSan would
 * report leaked or unjoined threads).
 */
#include "test_util.h"

#include "tensor/tensor_int.h"

#include <pthread.h>
#include <stdatomic.h>

enum { MAX_T = 8 };

typedef struct pool_probe {
    atomic_int *hits; /* per index */
    atomic_int calls[MAX_T];
    pthread_t who[MAX_T];
    atomic_int seen[MAX_T]; /* who[t] is set */
    atomic_int bad;         /* calls with a bad thread index, an empty range, or a thread index
                             * run by two OS threads (checked on the caller: cmocka's asserts
                             * must not run on worker threads) */
} pool_probe;

static void probe_fn(void *ctx, int64_t i0, int64_t i1, int thread)
{
    pool_probe *p = ctx;
    if (thread < 0 || thread >= MAX_T || i0 >= i1) {
        atomic_fetch_add(&p->bad, 1);
        return;
    }
    atomic_fetch_add(&p->calls[thread], 1);
    /* Only thread `thread` runs calls with this index, so who[thread] has one writer. */
    if (!atomic_load(&p->seen[thread])) {
        p->who[thread] = pthread_self();
        atomic_store(&p->seen[thread], 1);
    } else if (!pthread_equal(p->who[thread], pthread_self())) {
        atomic_fetch_add(&p->bad, 1);
    }
    for (int64_t i = i0; i < i1; i++) atomic_fetch_add(&p->hits[i], 1);
}

static void run_and_check(tensor_pool *pool, int n_threads, int64_t n)
{
    pool_probe p;
    memset(&p, 0, sizeof p);
    p.hits = calloc((size_t)(n > 0 ? n : 1), sizeof *p.hits);
    assert_non_null(p.hits);
    tensor_pool_for(pool, n, probe_fn, &p);
    assert_int_equal(atomic_load(&p.bad), 0);
    for (int64_t i = 0; i < n; i++)
        if (atomic_load(&p.hits[i]) != 1)
            fail_msg("threads %d n %lld: index %lld ran %d times", n_threads, (long long)n,
                     (long long)i, atomic_load(&p.hits[i]));
    for (int t = 0; t < MAX_T; t++) {
        if (t >= n_threads && atomic_load(&p.calls[t]))
            fail_msg("thread index %d of %d used", t, n_threads);
        for (int u = t + 1; u < MAX_T; u++)
            if (atomic_load(&p.seen[t]) && atomic_load(&p.seen[u]))
                assert_false(pthread_equal(p.who[t], p.who[u]));
    }
    /* The caller is thread 0. */
    if (atomic_load(&p.seen[0])) assert_true(pthread_equal(p.who[0], pthread_self()));
    free(p.hits);
}

static void test_pool_every_index_once(void **state)
{
    const int64_t sizes[] = {0, 1, 2, 3, 5, 7, 8, 64, 1000, 100003};
    for (int nt = 1; nt <= 6; nt++) {
        tensor_pool *pool = NULL;
        mica_err err = {0};
        assert_int_equal(tensor_pool_new(&pool, nt, &err), MICA_OK);
        assert_int_equal(tensor_pool_size(pool), nt);
        for (int rep = 0; rep < 10; rep++)
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
                run_and_check(pool, nt, sizes[s]);
        tensor_pool_free(pool);
    }
}

static void test_pool_null_runs_inline(void **state)
{
    run_and_check(NULL, 1, 1234);
    assert_int_equal(tensor_pool_size(NULL), 1);
    tensor_pool_free(NULL);
}

typedef struct wait_probe {
    atomic_int worker_chunks; /* chunks run by threads other than the caller */
    atomic_int timed_out;
} wait_probe;

/* The caller's chunks wait (up to 10 s) until a worker has run a chunk, so the job can only
 * finish without a timeout if the workers take part. */
static void wait_fn(void *ctx, int64_t i0, int64_t i1, int thread)
{
    wait_probe *p = ctx;
    if (thread != 0) {
        atomic_fetch_add(&p->worker_chunks, 1);
        return;
    }
    const double t0 = core_now();
    while (!atomic_load(&p->worker_chunks)) {
        if (core_now() - t0 > 10.0) {
            atomic_store(&p->timed_out, 1);
            return;
        }
    }
}

/* With more than one thread and enough chunks, more than one OS thread does work. */
static void test_pool_uses_workers(void **state)
{
    tensor_pool *pool = NULL;
    assert_int_equal(tensor_pool_new(&pool, 3, NULL), MICA_OK);
    for (int rep = 0; rep < 3; rep++) {
        wait_probe p = {0};
        tensor_pool_for(pool, 300, wait_fn, &p);
        assert_int_equal(atomic_load(&p.timed_out), 0);
        assert_true(atomic_load(&p.worker_chunks) > 0);
    }
    tensor_pool_free(pool);
}

static void test_pool_rejects_bad_sizes(void **state)
{
    tensor_pool *pool = (tensor_pool *)&pool;
    mica_err err = {0};
    assert_int_equal(tensor_pool_new(&pool, 0, &err), MICA_EINVAL);
    assert_null(pool);
    assert_non_null(strstr(err.msg, "0 threads"));
    assert_int_equal(tensor_pool_new(&pool, -3, &err), MICA_EINVAL);
    assert_int_equal(tensor_pool_new(&pool, 100000, &err), MICA_EINVAL);
}

/* Create and free many pools, some without ever running a job: workers must exit. */
static void test_pool_create_free_cycles(void **state)
{
    for (int i = 0; i < 50; i++) {
        tensor_pool *pool = NULL;
        assert_int_equal(tensor_pool_new(&pool, 1 + i % 4, NULL), MICA_OK);
        if (i % 2) run_and_check(pool, 1 + i % 4, 17);
        tensor_pool_free(pool);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_every_index_once),
        cmocka_unit_test(test_pool_null_runs_inline),
        cmocka_unit_test(test_pool_uses_workers),
        cmocka_unit_test(test_pool_rejects_bad_sizes),
        cmocka_unit_test(test_pool_create_free_cycles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
