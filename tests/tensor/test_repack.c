/*
 * test_repack.c - tests src/tensor/repack.c and the kernels that read its interleaved Q4_0
 * layout (dot_avx512.c), against the same weights in the file's layout:
 *  - every row unpacks to its original bytes, and tensor_get_row gives the same floats;
 *  - tensor_matmul gives the same bits for decode (1 activation row) and batches of 2 to 64
 *    rows, on rows of 1 to 512 blocks (the longest the kernel takes), 16 to 160 output rows,
 *    matrices of a 3-D stack (experts) and row ranges of a matrix (a merged gate/up stack);
 *  - with the scalar references forced (no kernel for the layout), and through
 *    tensor_matmul_chunked, the rows are read back correctly (same bits as the file's
 *    layout with the same kernels);
 *  - which views are repackable: Q4_0 only, whole tiles of 16 rows, not longer than 512
 *    blocks.
 * On CPUs without AVX-512 VNNI nothing is repackable and the tests say SKIP.
 */
#include "test_util.h"

#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <string.h>

typedef struct q4_matrix {
    void *file;       /* the file's layout */
    void *packed;     /* the interleaved copy, 64-byte aligned */
    tensor_view v, p; /* views of each */
} q4_matrix;

static void skip_unless_repackable(void)
{
    const tensor_view probe = {.data = "", .type = GGUF_T_Q4_0, .ne = {32, 16, 1, 1}};
    if (!tensor_view_repackable(&probe)) {
        printf("SKIP: the %s kernels read no interleaved layout\n", tensor_simd_name());
        skip();
    }
}

static q4_matrix make_matrix(tt_rng *r, int64_t k, int64_t n_out, int64_t n_mat)
{
    q4_matrix m;
    const int64_t rows = n_out * n_mat;
    const size_t rb = tensor_row_size(GGUF_T_Q4_0, k), bytes = (size_t)rows * rb;
    float *x = malloc((size_t)k * sizeof *x);
    m.file = malloc(bytes);
    m.packed = aligned_alloc(64, (bytes + 63) / 64 * 64);
    assert_non_null(x && m.file && m.packed);
    for (int64_t i = 0; i < rows; i++) {
        tt_fill(r, x, k);
        tensor_from_f32(GGUF_T_Q4_0, x, (uint8_t *)m.file + (size_t)i * rb, k);
    }
    free(x);
    m.v = (tensor_view){.data = m.file,
                        .type = GGUF_T_Q4_0,
                        .ne = {k, n_out, n_mat, 1},
                        .row_bytes = rb,
                        .name = "w"};
    m.p = m.v;
    assert_true(tensor_view_repackable(&m.p));
    assert_int_equal(tensor_view_bytes(&m.p), bytes);
    tensor_view_repack(&m.p, m.packed);
    assert_true(m.p.data == m.packed && m.p.layout == TENSOR_LAYOUT_Q4_0_X16);
    return m;
}

static void free_matrix(q4_matrix *m)
{
    free(m->file);
    free(m->packed);
}

static void expect_same_bits(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
            fail_msg("%s: element %lld: %.9g, file layout %.9g", what, (long long)i, (double)got[i],
                     (double)want[i]);
}

/* y = W x for both views of one matrix (2-D views), compared bit for bit. */
static void check_matmul(tensor_pool *pool, const tensor_view *file, const tensor_view *packed,
                         tt_rng *r, int64_t n_rows, const char *what)
{
    const int64_t k = file->ne[0], n_out = file->ne[1];
    float *x = malloc((size_t)(n_rows * k) * sizeof *x);
    float *want = malloc((size_t)(n_rows * n_out) * sizeof *want);
    float *got = malloc((size_t)(n_rows * n_out) * sizeof *got);
    assert_non_null(x && want && got);
    tt_fill(r, x, n_rows * k);
    tensor_matmul(pool, file, x, n_rows, want);
    tensor_matmul(pool, packed, x, n_rows, got);
    char msg[160];
    snprintf(msg, sizeof msg, "%s, k %lld, %lld rows out, %lld rows in", what, (long long)k,
             (long long)n_out, (long long)n_rows);
    expect_same_bits(got, want, n_rows * n_out, msg);
    free(x);
    free(want);
    free(got);
}

static void test_rows_unpack(void **state)
{
    (void)state;
    skip_unless_repackable();
    tt_rng r = {3};
    q4_matrix m = make_matrix(&r, 96, 48, 1);
    uint8_t row[3 * sizeof(block_q4_0)];
    float a[96], b[96];
    for (int64_t o = 0; o < 48; o++) {
        tensor_x16_unpack_row(&m.p, o, row);
        assert_memory_equal(row, (uint8_t *)m.file + (size_t)o * m.v.row_bytes, sizeof row);
        tensor_get_row(&m.v, o, a);
        tensor_get_row(&m.p, o, b);
        expect_same_bits(b, a, 96, "tensor_get_row");
    }
    free_matrix(&m);
}

static void test_matmul_same_bits(void **state)
{
    (void)state;
    skip_unless_repackable();
    mica_err err;
    tensor_pool *pool;
    if (tensor_pool_new(&pool, 2, &err)) fail_msg("%s", err.msg);
    tt_rng r = {5};
    const int64_t ks[] = {32, 96, 512, 896, 4864, 512 * 32};
    const int64_t outs[] = {16, 48, 160};
    const int64_t n_rows[] = {1, 2, 7, 8, 9, 17, 64};
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
        for (size_t b = 0; b < sizeof outs / sizeof outs[0]; b++) {
            if (ks[a] * outs[b] > 512 * 32 * 16) continue; /* the longest rows once */
            q4_matrix m = make_matrix(&r, ks[a], outs[b], 1);
            for (size_t c = 0; c < sizeof n_rows / sizeof n_rows[0]; c++)
                check_matmul(pool, &m.v, &m.p, &r, n_rows[c], "matrix");
            free_matrix(&m);
        }
    tensor_pool_free(pool);
}

static void test_experts_and_row_ranges(void **state)
{
    (void)state;
    skip_unless_repackable();
    tt_rng r = {9};
    q4_matrix m = make_matrix(&r, 128, 64, 3); /* 3 experts of 64 rows (gate 32 + up 32) */
    for (int64_t e = 0; e < 3; e++) {
        const tensor_view fe = tensor_view_matrix(&m.v, e), pe = tensor_view_matrix(&m.p, e);
        check_matmul(NULL, &fe, &pe, &r, 1, "expert");
        check_matmul(NULL, &fe, &pe, &r, 5, "expert");
        const tensor_view fu = tensor_view_rows(&fe, 32, 32), pu = tensor_view_rows(&pe, 32, 32);
        check_matmul(NULL, &fu, &pu, &r, 1, "rows 32..63 of an expert");
        check_matmul(NULL, &fu, &pu, &r, 12, "rows 32..63 of an expert");
    }
    free_matrix(&m);
}

static void test_fallbacks_read_rows(void **state)
{
    (void)state;
    skip_unless_repackable();
    tt_rng r = {13};
    enum { K = 2048, N = 32, R = 3 }; /* two slices of tensor_matmul_chunked */
    q4_matrix m = make_matrix(&r, K, N, 1);
    float *x = malloc(R * K * sizeof *x), want[R * N], got[R * N];
    assert_non_null(x);
    tt_fill(&r, x, R * K);
    tensor_force_scalar(true);
    tensor_matmul(NULL, &m.v, x, R, want);
    tensor_matmul(NULL, &m.p, x, R, got);
    tensor_force_scalar(false);
    expect_same_bits(got, want, R * N, "scalar references on the interleaved layout");
    tensor_matmul_chunked(&m.v, x, R, want);
    tensor_matmul_chunked(&m.p, x, R, got);
    expect_same_bits(got, want, R * N, "tensor_matmul_chunked");
    free(x);
    free_matrix(&m);
}

static void test_what_is_repackable(void **state)
{
    (void)state;
    skip_unless_repackable();
    const uint8_t byte = 0;
    tensor_view v = {.data = &byte, .type = GGUF_T_Q4_0, .ne = {64, 32, 2, 1}};
    assert_true(tensor_view_repackable(&v));
    v.ne[1] = 24; /* not whole tiles */
    assert_false(tensor_view_repackable(&v));
    v.ne[1] = 32;
    v.ne[0] = 513 * 32; /* longer than the kernel takes */
    assert_false(tensor_view_repackable(&v));
    v.ne[0] = 64;
    v.type = GGUF_T_Q8_0;
    assert_false(tensor_view_repackable(&v));
    v.type = GGUF_T_Q4_0;
    v.layout = TENSOR_LAYOUT_Q4_0_X16; /* already */
    assert_false(tensor_view_repackable(&v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_unpack),
        cmocka_unit_test(test_matmul_same_bits),
        cmocka_unit_test(test_experts_and_row_ranges),
        cmocka_unit_test(test_fallbacks_read_rows),
        cmocka_unit_test(test_what_is_repackable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
