/*
 * bench_kernels.c - the quantized matmul kernels timed in isolation (build/bench_kernels;
 * --help): tensor_matmul on the projections of the Qwen2.5-0.5B shape (n_embd 896, n_ff
 * 4864, 2 KV heads of 64; 24 layers) with random weights, without the rest of the forward
 * pass. It tells whether decode is limited by the kernel or by memory:
 *
 *   - "decode L2": 256 rows of an up matrix (rows of 896) or 64 of a down matrix (rows of
 *     4864), well inside L2, multiplied again and again by one activation row on one
 *     thread: the kernel's own speed in GB/s of weights (each call's activation packing
 *     included, as in the forward pass);
 *   - "decode mem": the 24 layers' matrices (the bytes a decoded token reads, far beyond the
 *     caches) on 1 thread and on the pool: GB/s of weights streamed, against the read
 *     bandwidth bench_bw.h measures with the same threads (and the tg t/s it would allow);
 *   - "prompt": the same matrices times 64 activation rows on the pool (pp64 as far as the
 *     matmuls go).
 *
 * --no-vbmi switches the Q4_0 decode kernel to its path for CPUs without VBMI, to compare.
 *
 * The machine is shared, so each round is timed by the CPU time the process used divided by
 * its threads (what the round takes with the cores to itself: the pool's workers spin while
 * they wait, so time lost to a descheduled thread still counts) and by the wall clock. Each
 * figure is the best of -r rounds by CPU time, the best by wall time in brackets; the rounds
 * alternate between the types. Output: a table on stdout; "bench_kernels: what" on stderr and
 * exit 1 on an error.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_bw.h"
#include "tensor/tensor_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define BK_EMBD      896
#define BK_FF        4864
#define BK_KV        128 /* 2 KV heads of 64 */
#define BK_LAYERS    24
#define BK_MATS      7 /* q, k, v, o, gate, up, down */
#define BK_PROMPT    64
#define BK_L2_ROWS   256
#define BK_L2_CALLS  2000
#define BK_MAX_REPS  100
#define BK_MAX_TYPES 2

typedef struct bk_opts {
    int threads, reps;
    bool no_vbmi; /* the Q4_0 decode path without VBMI byte permutes */
    uint32_t types[BK_MAX_TYPES];
    int n_types;
} bk_opts;

/* One weight type's matrices: BK_LAYERS * BK_MATS views into one buffer. */
typedef struct bk_set {
    uint32_t type;
    uint8_t *data;
    size_t bytes;
    tensor_view w[BK_LAYERS * BK_MATS];
} bk_set;

/* The measurements, each timed once per round and type. */
enum { BK_L2, BK_L2_DOWN, BK_MEM1, BK_MEMN, BK_PP, BK_N };

static int bk_fail(const char *what, const char *arg)
{
    fprintf(stderr, "bench_kernels: %s%s\n", arg, what);
    return 1;
}

static void bk_usage(void)
{
    puts("usage: bench_kernels [-t THREADS] [-r ROUNDS] [--types q4_0,q8_0] [--no-vbmi]\n"
         "Times tensor_matmul on the Qwen2.5-0.5B projections with random weights: decode\n"
         "from L2 (1 thread), decode from memory (1 thread and THREADS, default 2) against the\n"
         "read bandwidth, and 64-row prompt batches. Best of ROUNDS (default 5) by CPU time\n"
         "per thread, best by wall time in brackets. --no-vbmi: the Q4_0 decode\n"
         "kernel without VBMI byte permutes (the path of CPUs without VBMI).");
}

static bool bk_parse_types(const char *s, bk_opts *o)
{
    o->n_types = 0;
    while (*s) {
        const size_t n = strcspn(s, ",");
        if (o->n_types == BK_MAX_TYPES) return false;
        if (n == 4 && !strncmp(s, "q4_0", 4))
            o->types[o->n_types++] = GGUF_T_Q4_0;
        else if (n == 4 && !strncmp(s, "q8_0", 4))
            o->types[o->n_types++] = GGUF_T_Q8_0;
        else
            return false;
        s += n + (s[n] == ',');
    }
    return o->n_types > 0;
}

/* Returns 0 to run, 1 on a usage error (reported), 2 after --help. */
static int bk_parse(int argc, char **argv, bk_opts *o)
{
    *o = (bk_opts){.threads = 2, .reps = 5, .types = {GGUF_T_Q4_0, GGUF_T_Q8_0}, .n_types = 2};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bk_usage();
            return 2;
        }
        if (!strcmp(a, "--no-vbmi")) {
            o->no_vbmi = true;
            continue;
        }
        if (i + 1 >= argc) return bk_fail(": unknown option or missing value (see --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--types")) {
            if (!bk_parse_types(v, o)) return bk_fail(": expected q4_0 and/or q8_0", v);
            continue;
        }
        char *end;
        errno = 0;
        const long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < 1) return bk_fail(": expected a positive integer", v);
        if (!strcmp(a, "-t") && n <= 64)
            o->threads = (int)n;
        else if (!strcmp(a, "-r") && n <= BK_MAX_REPS)
            o->reps = (int)n;
        else
            return bk_fail(": unknown option or value out of range (see --help)", a);
    }
    return 0;
}

/* Rows (ne[1]) and row length (ne[0]) of matrix m of a layer. */
static void bk_shape(int m, int64_t *rows, int64_t *k)
{
    static const int64_t r[BK_MATS] = {BK_EMBD, BK_KV, BK_KV, BK_EMBD, BK_FF, BK_FF, BK_EMBD};
    *rows = r[m];
    *k = m == BK_MATS - 1 ? BK_FF : BK_EMBD;
}

/* Random weights in [-1, 1) quantized row by row. */
static bool bk_set_make(bk_set *s, uint32_t type, core_rng *rng)
{
    size_t off[BK_LAYERS * BK_MATS + 1] = {0};
    for (int i = 0; i < BK_LAYERS * BK_MATS; i++) {
        int64_t rows, k;
        bk_shape(i % BK_MATS, &rows, &k);
        off[i + 1] = off[i] + (size_t)rows * tensor_row_size(type, k);
    }
    s->type = type;
    s->bytes = off[BK_LAYERS * BK_MATS];
    s->data = malloc(s->bytes);
    float *row = malloc(BK_FF * sizeof *row);
    if (!s->data || !row) {
        free(row);
        return false;
    }
    for (int i = 0; i < BK_LAYERS * BK_MATS; i++) {
        int64_t rows, k;
        bk_shape(i % BK_MATS, &rows, &k);
        const size_t rb = tensor_row_size(type, k);
        s->w[i] = (tensor_view){.data = s->data + off[i],
                                .type = type,
                                .ne = {k, rows, 1, 1},
                                .row_bytes = rb,
                                .name = "bench"};
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t j = 0; j < k; j++) row[j] = (float)(2.0 * core_rng_uniform(rng) - 1.0);
            tensor_from_f32(type, row, s->data + off[i] + (size_t)r * rb, k);
        }
    }
    free(row);
    return true;
}

/* A round's time: CPU seconds of the process per thread, and wall seconds. */
typedef struct bk_time {
    double cpu, wall;
} bk_time;

static double bk_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bk_time bk_now(void)
{
    return (bk_time){bk_cpu_now(), core_now()};
}

static bk_time bk_since(bk_time t0, int threads)
{
    return (bk_time){(bk_cpu_now() - t0.cpu) / threads, core_now() - t0.wall};
}

/* Every matrix of the set times n_rows activation rows. */
static bk_time bk_time_set(tensor_pool *p, const bk_set *s, const float *x, int64_t n_rows,
                           float *y)
{
    const bk_time t0 = bk_now();
    for (int i = 0; i < BK_LAYERS * BK_MATS; i++) tensor_matmul(p, &s->w[i], x, n_rows, y);
    return bk_since(t0, p ? tensor_pool_size(p) : 1);
}

/* BK_L2_CALLS products of the first BK_L2_ROWS rows of the first up matrix, or of a quarter
 * as many rows of the (5.4 times longer) down matrix. */
static bk_time bk_time_l2(const bk_set *s, bool down, const float *x, float *y)
{
    const tensor_view w = down ? tensor_view_rows(&s->w[BK_MATS - 1], 0, BK_L2_ROWS / 4)
                               : tensor_view_rows(&s->w[5], 0, BK_L2_ROWS);
    tensor_matmul(NULL, &w, x, 1, y); /* into the cache */
    const bk_time t0 = bk_now();
    for (int c = 0; c < BK_L2_CALLS; c++) tensor_matmul(NULL, &w, x, 1, y);
    return bk_since(t0, 1);
}

/* The shortest CPU and wall times of n rounds. */
static bk_time bk_best(const bk_time *t, int n)
{
    bk_time b = t[0];
    for (int i = 1; i < n; i++) {
        b.cpu = t[i].cpu < b.cpu ? t[i].cpu : b.cpu;
        b.wall = t[i].wall < b.wall ? t[i].wall : b.wall;
    }
    return b;
}

static void bk_report(const bk_opts *o, const bk_set *s, bk_time t[BK_N][BK_MAX_REPS],
                      const bw_result bw[2])
{
    const char *name = s->type == GGUF_T_Q4_0 ? "q4_0" : "q8_0";
    bk_time b;
    for (int m = BK_L2; m <= BK_L2_DOWN; m++) {
        const tensor_view *w = &s->w[m == BK_L2 ? 5 : BK_MATS - 1];
        const int rows = m == BK_L2 ? BK_L2_ROWS : BK_L2_ROWS / 4;
        const double bytes = (double)rows * w->row_bytes * BK_L2_CALLS;
        b = bk_best(t[m], o->reps);
        printf("%s  decode L2   1 thread : %6.2f GB/s  (%6.2f), rows of %lld\n", name,
               bytes / b.cpu / 1e9, bytes / b.wall / 1e9, (long long)w->ne[0]);
    }
    for (int m = BK_MEM1; m <= BK_MEMN; m++) {
        const int th = m == BK_MEM1 ? 1 : o->threads;
        const double bwm = bw[m - BK_MEM1].median;
        b = bk_best(t[m], o->reps);
        printf("%s  decode mem  %d thread%s: %6.2f GB/s  (%6.2f) = %5.1f%% of %.2f GB/s read, "
               "%6.1f tok/s (%6.1f)\n",
               name, th, th > 1 ? "s" : " ", s->bytes / b.cpu / 1e9, s->bytes / b.wall / 1e9,
               100.0 * s->bytes / b.cpu / 1e9 / bwm, bwm, 1.0 / b.cpu, 1.0 / b.wall);
    }
    b = bk_best(t[BK_PP], o->reps);
    printf("%s  prompt %d  %d threads: %6.1f tok/s  (%6.1f)\n", name, BK_PROMPT, o->threads,
           BK_PROMPT / b.cpu, BK_PROMPT / b.wall);
}

static int bk_run(const bk_opts *o, tensor_pool *pool, bk_set *sets, float *x, float *y)
{
    static bk_time t[BK_MAX_TYPES][BK_N][BK_MAX_REPS];
    bw_result bw[2];
    if (!bw_measure(1, (size_t)256 << 20, 5, NULL, &bw[0]) ||
        !bw_measure(o->threads, (size_t)256 << 20, 5, NULL, &bw[1]))
        return bk_fail("cannot measure the bandwidth (memory or threads)", "");
    for (int i = 0; i < o->n_types; i++) bk_time_set(pool, &sets[i], x, 1, y); /* warm-up */
    for (int r = 0; r < o->reps; r++)
        for (int i = 0; i < o->n_types; i++) {
            t[i][BK_L2][r] = bk_time_l2(&sets[i], false, x, y);
            t[i][BK_L2_DOWN][r] = bk_time_l2(&sets[i], true, x, y);
            t[i][BK_MEM1][r] = bk_time_set(NULL, &sets[i], x, 1, y);
            t[i][BK_MEMN][r] = bk_time_set(pool, &sets[i], x, 1, y);
            t[i][BK_PP][r] = bk_time_set(pool, &sets[i], x, BK_PROMPT, y);
        }
    for (int i = 0; i < o->n_types; i++) bk_report(o, &sets[i], t[i], bw);
    return 0;
}

int main(int argc, char **argv)
{
    bk_opts o;
    const int prc = bk_parse(argc, argv, &o);
    if (prc) return prc == 2 ? 0 : 1;
    bk_set sets[BK_MAX_TYPES] = {0};
    tensor_pool *pool = NULL;
    mica_err err;
    float *x = malloc((size_t)BK_PROMPT * BK_FF * sizeof *x);
    float *y = malloc((size_t)BK_PROMPT * BK_FF * sizeof *y);
    core_rng rng;
    core_rng_seed(&rng, 0x6d696361);
    int rc = 1;
    if (!x || !y) {
        bk_fail("out of memory", "");
        goto done;
    }
    for (size_t i = 0; i < (size_t)BK_PROMPT * BK_FF; i++)
        x[i] = (float)(2.0 * core_rng_uniform(&rng) - 1.0);
    for (int i = 0; i < o.n_types; i++)
        if (!bk_set_make(&sets[i], o.types[i], &rng)) {
            bk_fail("out of memory for the weights", "");
            goto done;
        }
    if (tensor_pool_new(&pool, o.threads, &err) != MICA_OK) {
        bk_fail(err.msg, "cannot create the thread pool: ");
        goto done;
    }
#if defined(__x86_64__)
    const bool vbmi = tensor_avx512_set_vbmi(!o.no_vbmi);
#else
    const bool vbmi = false;
#endif
    printf("bench_kernels: %s kernels%s, %d threads, best of %d rounds by CPU time (wall)\n",
           tensor_simd_name(), vbmi ? " (Q4_0 decode with VBMI)" : "", o.threads, o.reps);
    rc = bk_run(&o, pool, sets, x, y);
done:
    tensor_pool_free(pool);
    for (int i = 0; i < o.n_types; i++) free(sets[i].data);
    free(x);
    free(y);
    return rc;
}
