/*
 * test_avx512.c - tests src/tensor/dot_avx512.c, calling its kernels directly (not through
 * dispatch): every AVX-512 kernel against its scalar reference on random data of many
 * lengths, tails included; the quantized dot products bit for bit against the AVX2 kernels
 * (whose summation order they promise) and, for rows of at most 8 blocks, against the
 * scalar reference; the activation converters byte for byte; extreme quants (-128 weights,
 * full-scale activations) where the unsigned/signed tricks could overflow; each gemm kernel
 * (pack + run) bit for bit against the dot kernel of its family for odd shapes; and the
 * attention products bit for bit against their references.
 * Without AVX-512 (or VNNI for the quantized kernels) the tests print SKIP and pass.
 */
#include "test_util.h"

#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <math.h>

#if defined(__x86_64__)

static bool have_avx512(void)
{
    if (tensor_avx512_usable()) return true;
    printf("SKIP: this CPU has no AVX-512 F/BW/VL; the AVX-512 kernels are not tested\n");
    return false;
}

static bool have_vnni(void)
{
    if (!have_avx512()) return false;
    if (tensor_avx512_vnni_usable()) return true;
    printf("SKIP: this CPU has no AVX-512 VNNI; the quantized AVX-512 kernels are not tested\n");
    return false;
}

/* A weight row of `type` and an activation row in its vec_dot type, from random floats,
 * each in a buffer of exactly its size (ASan catches reads past the end). */
typedef struct row_pair {
    void *w, *act;
    double abs_sum; /* sum |w_i * a_i| of the values held: the scale of rounding error */
} row_pair;

static row_pair make_pair(tt_rng *r, uint32_t type, int64_t n)
{
    row_pair p;
    float *wf = malloc((size_t)n * sizeof *wf), *af = malloc((size_t)n * sizeof *af);
    assert_true(wf && af);
    tt_fill(r, wf, n);
    tt_fill(r, af, n);
    p.w = malloc(tensor_row_size(type, n));
    p.act = malloc(tensor_row_size(tensor_vec_dot_type(type), n));
    assert_true(p.w && p.act);
    tensor_from_f32(type, wf, p.w, n);
    tensor_kernels_scalar()->act[tensor_vec_dot_type(type)]
        ? tensor_kernels_scalar()->act[tensor_vec_dot_type(type)](af, p.act, n)
        : tensor_from_f32(type, af, p.act, n);
    tensor_to_f32(type, p.w, wf, n);
    tensor_to_f32(tensor_vec_dot_type(type), p.act, af, n);
    p.abs_sum = 0;
    for (int64_t i = 0; i < n; i++) p.abs_sum += fabs((double)wf[i] * af[i]);
    free(wf);
    free(af);
    return p;
}

static void free_pair(row_pair *p)
{
    free(p->w);
    free(p->act);
}

static double sum_tol(int64_t n, double abs_sum)
{
    return (4.0 * sqrt((double)n) + 8.0) * 0x1p-24 * abs_sum + 1e-30;
}

/* ---- float dot products ------------------------------------------------------------------- */

static void check_float_dot(uint32_t type, tensor_dot_fn simd, uint64_t seed)
{
    tt_rng r = {seed};
    for (int64_t n = 1; n <= 4200; n += n < 70 ? 1 : 97) {
        row_pair p = make_pair(&r, type, n);
        const double ref = tensor_vec_dot_ref(type, p.w, p.act, n);
        const double got = simd(p.w, p.act, n);
        const double tol = sum_tol(n, p.abs_sum);
        if (!(fabs(got - ref) <= tol))
            fail_msg("%s n %lld: avx512 %.9g scalar %.9g (tol %.3g)", gguf_ttype_name(type),
                     (long long)n, got, ref, tol);
        free_pair(&p);
    }
}

static void test_dot_f32(void **state)
{
    if (have_avx512()) check_float_dot(GGUF_T_F32, tensor_dot_f32_avx512, 1);
}

static void test_dot_f16(void **state)
{
    if (have_avx512()) check_float_dot(GGUF_T_F16, tensor_dot_f16_avx512, 2);
}

/* ---- quantized dot products --------------------------------------------------------------- */

static void check_quant_dot(uint32_t type, tensor_dot_fn simd, tensor_dot_fn avx2, uint64_t seed)
{
    tt_rng r = {seed};
    for (int64_t nb = 1; nb <= 200; nb += nb < 40 ? 1 : 13) {
        const int64_t n = nb * 32;
        row_pair p = make_pair(&r, type, n);
        const float ref = tensor_vec_dot_ref(type, p.w, p.act, n);
        const float got = simd(p.w, p.act, n);
        const float want = avx2(p.w, p.act, n);
        if (memcmp(&got, &want, sizeof got))
            fail_msg("%s %lld blocks: avx512 %.9g avx2 %.9g (must be bit-identical)",
                     gguf_ttype_name(type), (long long)nb, (double)got, (double)want);
        if (nb <= 8 && memcmp(&got, &ref, sizeof got))
            fail_msg("%s %lld blocks: avx512 %.9g scalar %.9g (same order: must be identical)",
                     gguf_ttype_name(type), (long long)nb, (double)got, (double)ref);
        if (!(fabs((double)got - ref) <= sum_tol(n, p.abs_sum)))
            fail_msg("%s %lld blocks: avx512 %.9g scalar %.9g", gguf_ttype_name(type),
                     (long long)nb, (double)got, (double)ref);
        free_pair(&p);
    }
}

static void test_dot_q8_0(void **state)
{
    if (have_vnni()) check_quant_dot(GGUF_T_Q8_0, tensor_dot_q8_0_avx512, tensor_dot_q8_0_avx2, 3);
}

static void test_dot_q4_0(void **state)
{
    if (have_vnni()) check_quant_dot(GGUF_T_Q4_0, tensor_dot_q4_0_avx512, tensor_dot_q4_0_avx2, 4);
}

/* Quants at the ends of their ranges, where the offset (Q8_0 weights + 128) and the sign
 * trick (|x| = 128) are closest to overflowing: every block's integer sum is known, so the
 * result is checked against a formula. Scales are 1.0 (0x3c00) so terms are the sums. */
static void test_dot_extremes(void **state)
{
    if (!have_vnni()) return;
    enum { NB = 31 }; /* 31 * 32 * 128 * 127 < 2^24: every partial sum is exact */
    block_q8_0 w8[NB], act[NB];
    block_q4_0 w4[NB];
    int64_t want8 = 0, want4 = 0;
    for (int b = 0; b < NB; b++) {
        w8[b].d = w4[b].d = act[b].d = 0x3c00;
        for (int j = 0; j < 32; j++) {
            const int wq = (b + j) % 3 == 0 ? -128 : (b % 2 ? 127 : -127);
            const int aq = (j % 2 ? 127 : -127) * (b % 5 == 0 ? -1 : 1);
            w8[b].qs[j] = (int8_t)wq;
            act[b].qs[j] = (int8_t)aq;
            want8 += (int64_t)wq * aq;
        }
        for (int j = 0; j < 16; j++) {
            const int lo = (b + j) % 2 ? 0 : 15, hi = (b + j) % 3 ? 15 : 0;
            w4[b].qs[j] = (uint8_t)(lo | hi << 4);
            want4 += (int64_t)(lo - 8) * act[b].qs[j] + (int64_t)(hi - 8) * act[b].qs[j + 16];
        }
    }
    /* Every partial sum is an integer below 2^24, so float arithmetic is exact here. */
    assert_float_equal(tensor_dot_q8_0_avx512(w8, act, NB * 32), (float)want8, 0);
    assert_float_equal(tensor_dot_q4_0_avx512(w4, act, NB * 32), (float)want4, 0);
    assert_float_equal(tensor_dot_q8_0_ref(w8, act, NB * 32), (float)want8, 0);
}

/* ---- activation conversion ----------------------------------------------------------------- */

static void test_act_conversion(void **state)
{
    if (!have_avx512()) return;
    tt_rng r = {5};
    enum { N = 4096 + 32 };
    float *x = malloc(N * sizeof *x);
    block_q8_0 *a = malloc(N / 32 * sizeof *a), *b = malloc(N / 32 * sizeof *b);
    uint16_t *h1 = malloc(N * sizeof *h1), *h2 = malloc(N * sizeof *h2);
    assert_true(x && a && b && h1 && h2);
    for (int rep = 0; rep < 20; rep++) {
        tt_fill(&r, x, N);
        if (rep % 4 == 1)
            for (int i = 0; i < 64; i++) x[i] = 0.0f; /* all-zero blocks: scale 0 */
        if (rep % 4 == 2)
            for (int i = 0; i < N; i++) x[i] = (float)(i % 255 - 127) / 2.0f; /* ties .5 */
        tensor_quantize_act_q8_0_avx512(x, a, N);
        tensor_quantize_act_q8_0_ref(x, b, N);
        assert_memory_equal(a, b, N / 32 * sizeof *a);
        for (int n = 0; n < 40; n++) { /* odd lengths: the scalar tail */
            tensor_f32_to_f16_row_avx512(x, h1, N - n);
            tensor_f32_to_f16_row_ref(x, h2, N - n);
            assert_memory_equal(h1, h2, (size_t)(N - n) * sizeof *h1);
        }
    }
    free(x);
    free(a);
    free(b);
    free(h1);
    free(h2);
}

/* ---- gemm kernels ---------------------------------------------------------------------------- */

/* Packs n_rows random activation rows for g, runs it over rows [o0, n_out) in pieces of one
 * tile and compares every output with dot(weight row, converted activation row), bit for
 * bit: the kernels promise the dot kernel's exact order. */
static void check_gemm(const tensor_gemm *g, tensor_dot_fn dot, uint32_t type, int64_t k,
                       int64_t n_out, int64_t n_rows, tt_rng *r)
{
    const size_t rb = tensor_row_size(type, k);
    const uint32_t vt = tensor_vec_dot_type(type);
    const size_t ab = tensor_row_size(vt, k);
    uint8_t *w = malloc(rb * (size_t)n_out);
    float *x = malloc((size_t)(k * n_rows) * sizeof *x), *row = malloc((size_t)k * sizeof *row);
    uint8_t *conv = malloc(ab * (size_t)n_rows);
    const size_t pb = g->act_bytes(k, n_rows);
    uint8_t *packed_buf = malloc(pb + 64);
    float *y = malloc((size_t)(n_out * n_rows) * sizeof *y);
    assert_true(w && x && row && conv && packed_buf && y);
    uint8_t *packed = packed_buf + (64 - (uintptr_t)packed_buf % 64) % 64;
    for (int64_t o = 0; o < n_out; o++) {
        tt_fill(r, row, k);
        tensor_from_f32(type, row, w + (size_t)o * rb, k);
    }
    tt_fill(r, x, k * n_rows);
    for (int64_t i = 0; i < k * n_rows; i += 37) x[i] *= 64.0f; /* outliers in some blocks */
    for (int64_t rr = 0; rr < n_rows; rr++)
        tensor_kernels_scalar()->act[vt]
            ? tensor_kernels_scalar()->act[vt](x + rr * k, conv + rr * ab, k)
            : tensor_from_f32(vt, x + rr * k, conv + rr * ab, k);
    /* Pack in two calls split at a group boundary, as the pool may. */
    const int64_t split = n_rows > g->act_group ? g->act_group : n_rows;
    g->pack_act(x, n_rows, k, packed, 0, split);
    g->pack_act(x, n_rows, k, packed, split, n_rows);
    const tensor_view v = {
        .data = w, .type = type, .ne = {k, n_out, 1, 1}, .row_bytes = rb, .name = "gemm"};
    for (int64_t i = 0; i < n_out * n_rows; i++) y[i] = NAN;
    for (int64_t o0 = 0; o0 < n_out; o0 += g->tile) {
        const int64_t o1 = o0 + g->tile < n_out ? o0 + g->tile : n_out;
        g->run(&v, o0, o1, packed, n_rows, y);
    }
    for (int64_t rr = 0; rr < n_rows; rr++)
        for (int64_t o = 0; o < n_out; o++) {
            const float want = dot(w + (size_t)o * rb, conv + rr * ab, k);
            const float got = y[rr * n_out + o];
            if (memcmp(&got, &want, sizeof got))
                fail_msg("%s gemm k %lld n_out %lld rows %lld: y[%lld][%lld] = %.9g, dot %.9g",
                         gguf_ttype_name(type), (long long)k, (long long)n_out, (long long)n_rows,
                         (long long)rr, (long long)o, (double)got, (double)want);
        }
    free(w);
    free(x);
    free(row);
    free(conv);
    free(packed_buf);
    free(y);
}

static void check_gemm_shapes(const tensor_gemm *g, tensor_dot_fn dot, uint32_t type,
                              const int64_t *ks, int n_ks, uint64_t seed)
{
    tt_rng r = {seed};
    const int64_t outs[] = {1, 5, 15, 16, 17, 33, 50};
    for (int i = 0; i < n_ks; i++)
        for (size_t o = 0; o < sizeof outs / sizeof outs[0]; o++)
            for (int64_t rows = 1; rows <= 17; rows += (ks[i] > 1000 ? 4 : 1))
                check_gemm(g, dot, type, ks[i], outs[o], rows, &r);
}

static void test_gemm_float(void **state)
{
    if (!have_avx512()) return;
    const int64_t ks[] = {1, 7, 16, 17, 64, 172, 333, 1024};
    const int n = (int)(sizeof ks / sizeof ks[0]);
    check_gemm_shapes(&tensor_gemm_f32_avx512, tensor_dot_f32_avx512, GGUF_T_F32, ks, n, 6);
    check_gemm_shapes(&tensor_gemm_f16_avx512, tensor_dot_f16_avx512, GGUF_T_F16, ks, n, 7);
}

static void test_gemm_quantized(void **state)
{
    if (!have_vnni()) return;
    /* 1, 7, 8, 9, 17, 28 (n_embd 896) and 152 (n_ff 4864) blocks */
    const int64_t ks[] = {32, 224, 256, 288, 544, 896, 4864};
    const int n = (int)(sizeof ks / sizeof ks[0]);
    check_gemm_shapes(&tensor_gemm_q8_0_avx512, tensor_dot_q8_0_avx2, GGUF_T_Q8_0, ks, n, 8);
    check_gemm_shapes(&tensor_gemm_q4_0_avx512, tensor_dot_q4_0_avx2, GGUF_T_Q4_0, ks, n, 9);
    /* The Q4_0 decode path has a VBMI version; cover the other one too. */
    if (tensor_avx512_vbmi_usable()) {
        assert_false(tensor_avx512_set_vbmi(false));
        check_gemm_shapes(&tensor_gemm_q4_0_avx512, tensor_dot_q4_0_avx2, GGUF_T_Q4_0, ks, n, 10);
        assert_true(tensor_avx512_set_vbmi(true));
    } else {
        printf("NOTE: no AVX-512 VBMI; its Q4_0 decode path is not tested\n");
    }
}

/* ---- attention products ---------------------------------------------------------------------- */

/* Scores and weighted sums bit for bit against the references (same float operations in the
 * same order), for query row counts around the 16 lanes, odd head sizes and key counts, and
 * ragged per-row key counts for the sums. */
static void test_attention_products(void **state)
{
    if (!have_avx512()) return;
    tt_rng r = {11};
    const int hds[] = {1, 7, 16, 64, 100, 128};
    const int nqs[] = {1, 3, 7, 14, 16, 17, 33};
    enum { MAX_K = 70, MAX_Q = 33, MAX_HD = 128, STRIDE = 2 * MAX_HD + 5 };
    float *kv = malloc((size_t)MAX_K * STRIDE * sizeof *kv);
    float *qs = malloc((size_t)MAX_Q * MAX_HD * sizeof *qs);
    float *s1 = malloc((size_t)MAX_Q * (MAX_K + 3) * sizeof *s1);
    float *s2 = malloc((size_t)MAX_Q * (MAX_K + 3) * sizeof *s2);
    float *o1 = malloc((size_t)MAX_Q * MAX_HD * sizeof *o1);
    float *o2 = malloc((size_t)MAX_Q * MAX_HD * sizeof *o2);
    assert_true(kv && qs && s1 && s2 && o1 && o2);
    for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++)
        for (size_t qi = 0; qi < sizeof nqs / sizeof nqs[0]; qi++)
            for (int32_t nk = 1; nk <= MAX_K; nk += 23) {
                const int hd = hds[hi], nq = nqs[qi];
                const size_t ss = (size_t)nk + 3;
                tt_fill(&r, kv, (int64_t)MAX_K * STRIDE);
                tt_fill(&r, qs, (int64_t)MAX_Q * MAX_HD);
                const float *q[MAX_Q];
                float *oa[MAX_Q], *ob[MAX_Q];
                int32_t n[MAX_Q];
                for (int a = 0; a < nq; a++) {
                    q[a] = qs + (size_t)a * MAX_HD;
                    oa[a] = o1 + (size_t)a * MAX_HD;
                    ob[a] = o2 + (size_t)a * MAX_HD;
                    n[a] = 1 + (int32_t)(tt_u32(&r) % (uint32_t)nk);
                }
                tensor_attn_scores_avx512(q, nq, kv + 3, STRIDE, nk, hd, 0.125f, s1, ss);
                tensor_attn_scores_ref(q, nq, kv + 3, STRIDE, nk, hd, 0.125f, s2, ss);
                for (int a = 0; a < nq; a++)
                    for (int32_t i = 0; i < nk; i++)
                        if (memcmp(&s1[a * ss + i], &s2[a * ss + i], sizeof *s1))
                            fail_msg("scores hd %d nq %d nk %d: s[%d][%d] = %.9g, ref %.9g", hd, nq,
                                     nk, a, i, (double)s1[a * ss + i], (double)s2[a * ss + i]);
                tensor_attn_values_avx512(s2, ss, nq, n, kv + 5, STRIDE, hd, oa);
                tensor_attn_values_ref(s2, ss, nq, n, kv + 5, STRIDE, hd, ob);
                for (int a = 0; a < nq; a++)
                    if (memcmp(oa[a], ob[a], (size_t)hd * sizeof *o1))
                        fail_msg("values hd %d nq %d nk %d: row %d (n %d) differs", hd, nq, nk, a,
                                 n[a]);
            }
    free(kv);
    free(qs);
    free(s1);
    free(s2);
    free(o1);
    free(o2);
}

/* The dispatcher picks the AVX-512 family on CPUs that have it. */
static void test_dispatch(void **state)
{
    if (!have_avx512()) return;
    printf("dispatch: %s\n", tensor_simd_name());
    assert_non_null(strstr(tensor_simd_name(), "avx512"));
    assert_ptr_equal(tensor_kernels_get()->gemm[GGUF_T_F16], &tensor_gemm_f16_avx512);
    if (tensor_avx512_vnni_usable())
        assert_ptr_equal(tensor_dot_kernel(GGUF_T_Q4_0), tensor_dot_q4_0_avx512);
    assert_ptr_equal(tensor_dot_kernel(GGUF_T_BF16), tensor_dot_bf16_avx2); /* AVX2 stays */
    tensor_force_scalar(true);
    assert_null(tensor_kernels_get()->gemm[GGUF_T_F16]);
    tensor_force_scalar(false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_f32),
        cmocka_unit_test(test_dot_f16),
        cmocka_unit_test(test_dot_q8_0),
        cmocka_unit_test(test_dot_q4_0),
        cmocka_unit_test(test_dot_extremes),
        cmocka_unit_test(test_act_conversion),
        cmocka_unit_test(test_gemm_float),
        cmocka_unit_test(test_gemm_quantized),
        cmocka_unit_test(test_attention_products),
        cmocka_unit_test(test_dispatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else

int main(void)
{
    printf("SKIP: not an x86-64 build; there are no AVX-512 kernels to test\n");
    return 0;
}

#endif
