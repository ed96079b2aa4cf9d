/*
 * test_matmul.c - tests src/tensor/matmul.c: tensor_matmul against a naive double-precision
 * product of the dequantized weights and the converted activations, for every type, many
 * shapes and batch sizes, with no pool, 1 and 2 threads, forced scalar kernels, 3-D expert
 * slices and the chunked fallback; the tiled (gemm) path bit for bit against the untiled dot
 * loop; tensor_matmul_multi against separate products; views over GGUF tensors (errors
 * included) and get_row against the F32 model files.
 */
#include "test_util.h"

#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <math.h>

static const uint32_t all_types[] = {GGUF_T_F32, GGUF_T_F16, GGUF_T_BF16, GGUF_T_Q8_0, GGUF_T_Q4_0};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

/* A random weight tensor of shape (k, n, n_mat) held in memory, with its view. */
typedef struct test_weight {
    void *data;
    tensor_view v;
} test_weight;

static test_weight make_weight(tt_rng *r, uint32_t type, int64_t k, int64_t n, int64_t n_mat)
{
    test_weight w;
    const size_t rb = tensor_row_size(type, k);
    w.data = malloc(rb * (size_t)(n * n_mat));
    float *row = malloc((size_t)k * sizeof *row);
    assert_true(w.data && row);
    for (int64_t i = 0; i < n * n_mat; i++) {
        tt_fill(r, row, k);
        tensor_from_f32(type, row, (uint8_t *)w.data + (size_t)i * rb, k);
    }
    free(row);
    w.v = (tensor_view){
        .data = w.data, .type = type, .ne = {k, n, n_mat, 1}, .row_bytes = rb, .name = "test"};
    return w;
}

/* y[r][o] in double from the dequantized weight rows and the activations converted (and
 * converted back) exactly as the kernels see them; tol[r][o] from sum |w*x|. */
static void reference_matmul(const tensor_view *w, const float *x, int64_t n_rows, double *y,
                             double *tol)
{
    const int64_t k = w->ne[0], n = w->ne[1];
    const uint32_t vt = tensor_vec_dot_type(w->type);
    float *wf = malloc((size_t)k * sizeof *wf), *af = malloc((size_t)k * sizeof *af);
    void *conv = malloc(tensor_row_size(vt, k));
    assert_true(wf && af && conv);
    for (int64_t r = 0; r < n_rows; r++) {
        tensor_convert_act(w->type, x + r * k, conv, k);
        tensor_to_f32(vt, conv, af, k);
        for (int64_t o = 0; o < n; o++) {
            tensor_to_f32(w->type, (const uint8_t *)w->data + (size_t)o * w->row_bytes, wf, k);
            double s = 0, a = 0;
            for (int64_t i = 0; i < k; i++) {
                s += (double)wf[i] * af[i];
                a += fabs((double)wf[i] * af[i]);
            }
            y[r * n + o] = s;
            tol[r * n + o] = (4.0 * sqrt((double)k) + 8.0) * 0x1p-24 * a + 1e-30;
        }
    }
    free(wf);
    free(af);
    free(conv);
}

static void check_matmul(const char *what, tensor_pool *pool, const tensor_view *w, const float *x,
                         int64_t n_rows, bool chunked)
{
    const int64_t n = w->ne[1];
    float *y = malloc((size_t)(n_rows * n) * sizeof *y);
    double *want = malloc((size_t)(n_rows * n) * sizeof *want);
    double *tol = malloc((size_t)(n_rows * n) * sizeof *tol);
    assert_true(y && want && tol);
    for (int64_t i = 0; i < n_rows * n; i++) y[i] = NAN; /* every output must be written */
    if (chunked)
        tensor_matmul_chunked(w, x, n_rows, y);
    else
        tensor_matmul(pool, w, x, n_rows, y);
    reference_matmul(w, x, n_rows, want, tol);
    for (int64_t i = 0; i < n_rows * n; i++) {
        if (!(fabs((double)y[i] - want[i]) <= tol[i]))
            fail_msg("%s %s k %lld n %lld rows %lld: y[%lld][%lld] = %.9g want %.9g (tol %.3g)",
                     what, gguf_ttype_name(w->type), (long long)w->ne[0], (long long)n,
                     (long long)n_rows, (long long)(i / n), (long long)(i % n), (double)y[i],
                     want[i], tol[i]);
    }
    free(y);
    free(want);
    free(tol);
}

typedef struct shape {
    int64_t k, n;
    int max_rows; /* batch sizes 1..max_rows */
} shape;

static void run_shapes(const char *what, tensor_pool *pool)
{
    const shape shapes[] = {{32, 1, 17},   {64, 64, 17},  {96, 33, 17},
                            {256, 300, 5}, {1024, 96, 3}, {4096, 17, 2}};
    tt_rng r = {21};
    float *x = malloc(4096 * 17 * sizeof *x);
    assert_non_null(x);
    for (size_t t = 0; t < N_TYPES; t++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            test_weight w = make_weight(&r, all_types[t], shapes[s].k, shapes[s].n, 1);
            for (int rows = 1; rows <= shapes[s].max_rows; rows++) {
                tt_fill(&r, x, shapes[s].k * rows);
                check_matmul(what, pool, &w.v, x, rows, false);
            }
            free(w.data);
        }
    }
    free(x);
}

static void test_matmul_no_pool(void **state)
{
    run_shapes("no pool", NULL);
}

static void test_matmul_threads(void **state)
{
    for (int nt = 1; nt <= 2; nt++) {
        tensor_pool *pool = NULL;
        assert_int_equal(tensor_pool_new(&pool, nt, NULL), MICA_OK);
        run_shapes(nt == 1 ? "1 thread" : "2 threads", pool);
        tensor_pool_free(pool);
    }
}

static void test_matmul_forced_scalar(void **state)
{
    tensor_force_scalar(true);
    run_shapes("scalar", NULL);
    tensor_force_scalar(false);
}

/* Float rows of any length: stories260K's ffn_down has rows of 172 in F16. */
static void test_matmul_odd_rows(void **state)
{
    tt_rng r = {22};
    const uint32_t types[] = {GGUF_T_F32, GGUF_T_F16, GGUF_T_BF16};
    const int64_t ks[] = {1, 7, 172, 333};
    float x[333 * 5];
    tensor_pool *pool = NULL;
    assert_int_equal(tensor_pool_new(&pool, 2, NULL), MICA_OK);
    for (size_t t = 0; t < 3; t++)
        for (size_t i = 0; i < 4; i++) {
            test_weight w = make_weight(&r, types[t], ks[i], 200, 1);
            tt_fill(&r, x, ks[i] * 5);
            check_matmul("odd rows", pool, &w.v, x, 5, false);
            free(w.data);
        }
    tensor_pool_free(pool);
}

/* Each expert of a 3-D tensor is its own matrix. The reference is built from a separate
 * 2-D copy of that expert's rows, so a wrong slice offset cannot cancel out. */
static void test_matmul_expert_slices(void **state)
{
    tt_rng r = {23};
    tensor_pool *pool = NULL;
    assert_int_equal(tensor_pool_new(&pool, 2, NULL), MICA_OK);
    float x[192 * 3];
    for (size_t t = 0; t < N_TYPES; t++) {
        test_weight w = make_weight(&r, all_types[t], 192, 64, 4);
        for (int64_t e = 0; e < 4; e++) {
            tensor_view m = tensor_view_matrix(&w.v, e);
            assert_int_equal(m.ne[0], 192);
            assert_int_equal(m.ne[1], 64);
            assert_int_equal(m.ne[2], 1);
            void *copy = malloc(64 * w.v.row_bytes);
            memcpy(copy, (uint8_t *)w.data + (size_t)e * 64 * w.v.row_bytes, 64 * w.v.row_bytes);
            tensor_view cv = w.v;
            cv.data = copy;
            cv.ne[2] = 1;
            tt_fill(&r, x, 192 * 3);
            float y1[64 * 3], y2[64 * 3];
            tensor_matmul(pool, &m, x, 3, y1);
            tensor_matmul(NULL, &cv, x, 3, y2);
            for (int i = 0; i < 64 * 3; i++)
                if (y1[i] != y2[i]) /* same kernels, same order: bit-identical */
                    fail_msg("%s expert %lld: y[%d] = %.9g, copy gives %.9g",
                             gguf_ttype_name(all_types[t]), (long long)e, i, (double)y1[i],
                             (double)y2[i]);
            check_matmul("expert copy", NULL, &cv, x, 3, false);
            free(copy);
        }
        free(w.data);
    }
    tensor_pool_free(pool);
}

static void test_matmul_chunked_fallback(void **state)
{
    tt_rng r = {24};
    float *x = malloc(2080 * 3 * sizeof *x);
    assert_non_null(x);
    for (size_t t = 0; t < N_TYPES; t++) {
        test_weight w = make_weight(&r, all_types[t], 2080, 40, 1); /* 3 slices, last partial */
        tt_fill(&r, x, 2080 * 3);
        check_matmul("chunked", NULL, &w.v, x, 3, true);
        free(w.data);
    }
    free(x);
}

/* ---- tiled (gemm) against untiled ---------------------------------------------------------- */

/* y[r][o] by the plain loop the dot kernel of the family in use gives, pair by pair: the
 * activation converted to the vec_dot type, then one dot product per (row, output). */
static void untiled_matmul(const tensor_view *w, const float *x, int64_t n_rows, float *y)
{
    const int64_t k = w->ne[0], n = w->ne[1];
    const uint32_t vt = tensor_vec_dot_type(w->type);
    uint8_t *conv = malloc(tensor_row_size(vt, k));
    assert_non_null(conv);
    for (int64_t r = 0; r < n_rows; r++) {
        tensor_convert_act(w->type, x + r * k, conv, k);
        for (int64_t o = 0; o < n; o++)
            y[r * n + o] = tensor_vec_dot(
                w->type, (const uint8_t *)w->data + (size_t)o * w->row_bytes, conv, k);
    }
    free(conv);
}

/* tensor_matmul (tiled, through the gemm kernels where the CPU has them) equals the untiled
 * loop bit for bit, for odd batch sizes, output counts that are not a multiple of any tile
 * and rows of 1 to 152 blocks; with and without a pool. */
static void test_matmul_tiled_equals_untiled(void **state)
{
    tt_rng r = {25};
    const int64_t qk[] = {32, 224, 288, 544, 896, 4864}, fk[] = {1, 17, 64, 172, 896};
    const int64_t outs[] = {1, 15, 17, 33, 50};
    tensor_pool *pool = NULL;
    assert_int_equal(tensor_pool_new(&pool, 2, NULL), MICA_OK);
    printf("tiled vs untiled with the %s kernels\n", tensor_simd_name());
    float *x = malloc(4864 * 17 * sizeof *x), *y1 = malloc(4864 * 17 * sizeof *y1);
    float *y2 = malloc(4864 * 17 * sizeof *y2);
    assert_true(x && y1 && y2);
    for (size_t t = 0; t < N_TYPES; t++) {
        const bool quant = all_types[t] == GGUF_T_Q8_0 || all_types[t] == GGUF_T_Q4_0;
        const int64_t *ks = quant ? qk : fk;
        const size_t nk = quant ? sizeof qk / sizeof qk[0] : sizeof fk / sizeof fk[0];
        for (size_t ki = 0; ki < nk; ki++)
            for (size_t oi = 0; oi < sizeof outs / sizeof outs[0]; oi++) {
                test_weight w = make_weight(&r, all_types[t], ks[ki], outs[oi], 1);
                for (int64_t rows = 1; rows <= 17; rows += ks[ki] > 1000 ? 5 : 1) {
                    tt_fill(&r, x, ks[ki] * rows);
                    untiled_matmul(&w.v, x, rows, y2);
                    tensor_matmul(rows % 2 ? pool : NULL, &w.v, x, rows, y1);
                    for (int64_t i = 0; i < rows * outs[oi]; i++)
                        if (memcmp(&y1[i], &y2[i], sizeof y1[i]))
                            fail_msg("%s k %lld n %lld rows %lld: y[%lld][%lld] tiled %.9g untiled "
                                     "%.9g",
                                     gguf_ttype_name(all_types[t]), (long long)ks[ki],
                                     (long long)outs[oi], (long long)rows,
                                     (long long)(i / outs[oi]), (long long)(i % outs[oi]),
                                     (double)y1[i], (double)y2[i]);
                }
                free(w.data);
            }
    }
    free(x);
    free(y1);
    free(y2);
    tensor_pool_free(pool);
}

/* tensor_matmul_multi: the same bits as one tensor_matmul per weight, whether the weights
 * can share the input's conversion (same type and length) or not, and one counted call per
 * weight. */
static void test_matmul_multi(void **state)
{
    tt_rng r = {26};
    tensor_pool *pool = NULL;
    assert_int_equal(tensor_pool_new(&pool, 2, NULL), MICA_OK);
    float x[288 * 9];
    tt_fill(&r, x, 288 * 9);
    for (size_t t = 0; t < N_TYPES; t++) {
        test_weight a = make_weight(&r, all_types[t], 288, 40, 1);
        test_weight b = make_weight(&r, all_types[t], 288, 7, 1);
        test_weight c = make_weight(&r, all_types[(t + 1) % N_TYPES], 288, 19, 1); /* other type */
        const tensor_view *ws[3] = {&a.v, &b.v, &c.v};
        for (int rows = 1; rows <= 9; rows += 4) {
            float ya[40 * 9], yb[7 * 9], yc[19 * 9], za[40 * 9], zb[7 * 9], zc[19 * 9];
            float *const ys[3] = {ya, yb, yc};
            for (int n_w = 2; n_w <= 3; n_w++) {
                tensor_pool_reset_matmul_stats(pool);
                tensor_matmul_multi(pool, ws, n_w, x, rows, ys);
                const tensor_matmul_stats st = tensor_pool_matmul_stats(pool);
                assert_int_equal(st.calls, n_w);
                assert_int_equal(st.rows, (uint64_t)(n_w * rows));
                tensor_matmul(NULL, &a.v, x, rows, za);
                tensor_matmul(NULL, &b.v, x, rows, zb);
                assert_memory_equal(ya, za, sizeof(float) * 40 * (size_t)rows);
                assert_memory_equal(yb, zb, sizeof(float) * 7 * (size_t)rows);
                if (n_w == 3) {
                    tensor_matmul(NULL, &c.v, x, rows, zc);
                    assert_memory_equal(yc, zc, sizeof(float) * 19 * (size_t)rows);
                }
            }
        }
        free(a.data);
        free(b.data);
        free(c.data);
    }
    tensor_pool_free(pool);
}

/* ---- views over GGUF tensors -------------------------------------------------------------- */

static void test_view_checks(void **state)
{
    static uint8_t data[64 * 4 * 34];
    gguf_tensor t = {.name = "blk.0.ffn_down.weight",
                     .n_dims = 2,
                     .ne = {256, 4, 1, 1},
                     .type = GGUF_T_Q5_K,
                     .nbytes = 4 * 176,
                     .data = data};
    tensor_view v;
    mica_err err = {0};
    assert_int_equal(tensor_view_from_gguf(&v, &t, "m.gguf", &err), MICA_EUNSUPPORTED);
    assert_string_equal(err.msg, "m.gguf: tensor 'blk.0.ffn_down.weight' has type Q5_K, which "
                                 "mica cannot compute with");
    t.type = GGUF_T_Q8_0;
    t.nbytes = 4 * 8 * 34 + 1;
    assert_int_equal(tensor_view_from_gguf(&v, &t, "m.gguf", &err), MICA_EFORMAT);
    assert_non_null(strstr(err.msg, "blk.0.ffn_down.weight"));
    t.nbytes = 4 * 8 * 34;
    assert_int_equal(tensor_view_from_gguf(&v, &t, "m.gguf", &err), MICA_OK);
    assert_int_equal(v.row_bytes, 8 * 34);
    assert_int_equal(v.ne[1], 4);
    assert_ptr_equal(v.data, data);
    t.ne[0] = 250; /* not a multiple of 32 */
    assert_int_equal(tensor_view_from_gguf(&v, &t, "m.gguf", &err), MICA_EFORMAT);
}

/* Binds every matrix of the quantized and F16 model files and checks get_row against the
 * F32 file within the format's rounding: Q8_0 half a step (amax/127/2) plus the fp16 scale
 * error, Q4_0 one step (amax/8), F16 2^-11 relative. A wrong block or nibble order is far
 * outside these bounds. */
static void test_get_row_vs_f32_file(void **state)
{
    const char *types[] = {"F16", "Q8_0", "Q4_0"};
    int checked = 0;
    for (size_t ti = 0; ti < 3; ti++) {
        char p32[512], pq[512], rel[128];
        snprintf(rel, sizeof rel, "testdata/llamacpp/models/llama-moe.F32.gguf");
        TU_SHARED_PATH(p32, rel);
        snprintf(rel, sizeof rel, "testdata/llamacpp/models/llama-moe.%s.gguf", types[ti]);
        TU_SHARED_PATH(pq, rel);
        gguf_file *f32 = NULL, *fq = NULL;
        mica_err err = {0};
        if (gguf_open(&f32, p32, &err) || gguf_open(&fq, pq, &err)) fail_msg("%s", err.msg);
        for (uint64_t i = 0; i < fq->n_tensors; i++) {
            tensor_view v, v32;
            if (tensor_view_from_gguf(&v, &fq->tensors[i], pq, &err)) fail_msg("%s", err.msg);
            const gguf_tensor *s = gguf_find_tensor(f32, v.name);
            assert_non_null(s);
            if (tensor_view_from_gguf(&v32, s, p32, &err)) fail_msg("%s", err.msg);
            const int64_t k = v.ne[0], rows = v.ne[1] * v.ne[2];
            tensor_view flat = v, flat32 = v32;
            flat.ne[1] = flat32.ne[1] = rows; /* every row of every expert */
            flat.ne[2] = flat32.ne[2] = 1;
            float *got = malloc((size_t)k * sizeof *got), *want = malloc((size_t)k * sizeof *want);
            for (int64_t row = 0; row < rows; row++) {
                tensor_get_row(&flat, row, got);
                tensor_get_row(&flat32, row, want);
                for (int64_t b = 0; b < k; b += 32) {
                    const int64_t bn = k - b < 32 ? k - b : 32;
                    double amax = 0;
                    for (int64_t j = 0; j < bn; j++) amax = fmax(amax, fabs(want[b + j]));
                    for (int64_t j = b; j < b + bn; j++) {
                        double tol = v.type == GGUF_T_Q8_0   ? amax / 127 * 0.5 + amax * 1e-3
                                     : v.type == GGUF_T_Q4_0 ? amax / 8 * 1.01
                                     : v.type == GGUF_T_F16  ? fabs(want[j]) * 0x1p-11 + 0x1p-25
                                                             : 0.0;
                        if (!(fabs((double)got[j] - want[j]) <= tol))
                            fail_msg("%s %s row %lld [%lld]: %.9g vs F32 %.9g (tol %.3g)", pq,
                                     v.name, (long long)row, (long long)j, (double)got[j],
                                     (double)want[j], tol);
                    }
                }
            }
            free(got);
            free(want);
            checked++;
        }
        gguf_close(f32);
        gguf_close(fq);
    }
    assert_true(checked > 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_no_pool),
        cmocka_unit_test(test_matmul_threads),
        cmocka_unit_test(test_matmul_forced_scalar),
        cmocka_unit_test(test_matmul_odd_rows),
        cmocka_unit_test(test_matmul_expert_slices),
        cmocka_unit_test(test_matmul_chunked_fallback),
        cmocka_unit_test(test_matmul_tiled_equals_untiled),
        cmocka_unit_test(test_matmul_multi),
        cmocka_unit_test(test_view_checks),
        cmocka_unit_test(test_get_row_vs_f32_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
