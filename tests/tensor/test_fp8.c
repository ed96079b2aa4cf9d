/*
 * test_fp8.c - tests src/tensor/fp8.c and the FP8 kernel of dot_k_avx2.c: every E4M3 byte
 * decodes to the value the format defines (computed here with ldexp), encoding inverts
 * decoding, rounds ties to even and saturates at 448; block quantization stays within the
 * format's half-ulp; the FP8 x Q8_0 dot equals dequantize-then-dot within float rounding and
 * its AVX2 kernel equals the scalar reference bit for bit; the type id, name and layout;
 * `mica info` calls the type a mica extension; a tiny FP8 model's logits are close to F32.
 */
#define _GNU_SOURCE /* wait4 in cli_run.h */
#include "kquant_test_util.h"

#include "cli/cli_run.h"

/* E4M3 by its definition: (-1)^s * 2^(e-7) * (1 + m/8), or 2^-6 * m/8 when e = 0. */
static double e4m3_value(uint8_t b)
{
    const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    const double v = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

static bool is_nan_code(uint8_t b)
{
    return (b & 0x7f) == 0x7f;
}

static void test_decode_every_byte(void **state)
{
    for (int b = 0; b < 256; b++) {
        const float got = tensor_fp8_to_f32((uint8_t)b);
        if (is_nan_code((uint8_t)b)) {
            if (!isnan(got)) fail_msg("byte 0x%02x: got %g, want NaN", b, got);
            continue;
        }
        const double want = e4m3_value((uint8_t)b);
        if ((double)got != want || (signbit(got) != 0) != (b >= 0x80))
            fail_msg("byte 0x%02x: got %.9g want %.9g", b, got, want);
        /* The integer units the dot product uses are the same value times 2^9. */
        assert_true((double)tensor_fp8_units((uint8_t)b) == want * 512.0);
    }
    assert_true(tensor_fp8_to_f32(0x7e) == 448.0f);
    assert_true(tensor_fp8_to_f32(0x01) == 0x1p-9f);
    assert_true(tensor_fp8_to_f32(0x08) == 0x1p-6f);
}

static void test_encode_inverts_decode(void **state)
{
    for (int b = 0; b < 256; b++) {
        if (is_nan_code((uint8_t)b)) continue;
        const uint8_t got = tensor_f32_to_fp8(tensor_fp8_to_f32((uint8_t)b));
        if (got != b)
            fail_msg("byte 0x%02x -> %g -> 0x%02x", b, tensor_fp8_to_f32((uint8_t)b), got);
    }
}

/* Between neighbours c and c+1 (both signs): the exact midpoint goes to the even code, a
 * float just off it to the nearer one. Midpoints have 5 significant bits: exact in float. */
static void test_encode_rounds_to_nearest_even(void **state)
{
    for (int c = 0; c < 0x7e; c++) {
        for (int sign = 0; sign < 2; sign++) {
            const uint8_t lo = (uint8_t)(c | (sign << 7)), hi = (uint8_t)((c + 1) | (sign << 7));
            const float a = tensor_fp8_to_f32(lo), b = tensor_fp8_to_f32(hi);
            const float mid = (float)(((double)a + b) / 2);
            assert_true((double)mid == ((double)a + b) / 2);
            const uint8_t even = (c % 2 == 0) ? lo : hi;
            if (tensor_f32_to_fp8(mid) != even)
                fail_msg("midpoint %.9g of 0x%02x/0x%02x -> 0x%02x", mid, lo, hi,
                         tensor_f32_to_fp8(mid));
            const float toward_a = nextafterf(mid, a), toward_b = nextafterf(mid, b);
            assert_int_equal(tensor_f32_to_fp8(toward_a), lo);
            assert_int_equal(tensor_f32_to_fp8(toward_b), hi);
        }
    }
}

static void test_encode_saturates_and_handles_specials(void **state)
{
    assert_int_equal(tensor_f32_to_fp8(448.0f), 0x7e);
    assert_int_equal(tensor_f32_to_fp8(447.0f), 0x7e); /* nearest */
    assert_int_equal(tensor_f32_to_fp8(464.0f), 0x7e); /* would round to 480: saturates */
    assert_int_equal(tensor_f32_to_fp8(1e30f), 0x7e);
    assert_int_equal(tensor_f32_to_fp8(INFINITY), 0x7e);
    assert_int_equal(tensor_f32_to_fp8(-INFINITY), 0xfe);
    assert_int_equal(tensor_f32_to_fp8(-500.0f), 0xfe);
    assert_int_equal(tensor_f32_to_fp8(NAN) & 0x7f, 0x7f);
    assert_int_equal(tensor_f32_to_fp8(0.0f), 0x00);
    assert_int_equal(tensor_f32_to_fp8(-0.0f), 0x80);
    assert_int_equal(tensor_f32_to_fp8(0x1p-10f), 0x00); /* half the smallest subnormal: even */
    assert_int_equal(tensor_f32_to_fp8(nextafterf(0x1p-10f, 1.0f)), 0x01);
    assert_int_equal(tensor_f32_to_fp8(-0x1p-11f), 0x80);
    assert_int_equal(tensor_f32_to_fp8(1e-40f), 0x00);    /* a float subnormal */
    assert_int_equal(tensor_f32_to_fp8(0x1.ep-7f), 0x08); /* 15/16 * 2^-6 -> smallest normal */
}

static void test_type_table(void **state)
{
    uint32_t bs, ts;
    assert_true(gguf_ttype_layout(GGUF_T_FP8_E4M3, &bs, &ts));
    assert_int_equal(bs, 32);
    assert_int_equal(ts, 34);
    assert_string_equal(gguf_ttype_name(GGUF_T_FP8_E4M3), "FP8_E4M3");
    assert_true(gguf_ttype_is_extension(GGUF_T_FP8_E4M3));
    assert_false(gguf_ttype_is_extension(GGUF_T_Q8_0));
    assert_true(GGUF_T_FP8_E4M3 < 64); /* fits the kernel tables */
    assert_true(tensor_type_supported(GGUF_T_FP8_E4M3));
    assert_int_equal(tensor_row_size(GGUF_T_FP8_E4M3, 96), 3 * 34);
    assert_int_equal(tensor_vec_dot_type(GGUF_T_FP8_E4M3), GGUF_T_Q8_0);
}

/* Each element decodes within half an E4M3 ulp of x/d, times d: 2^-4 of |x| in the normal
 * range, 2^-10 * d among subnormals; elements past 448 * d (d rounded down to fp16) are
 * clipped to 448 * d. Returns the RMS error. */
static double check_block_bounds(const float *x, int64_t n, const block_fp8_e4m3 *q)
{
    float y[QK_FP8];
    double err2 = 0;
    for (int64_t b = 0; b < n / QK_FP8; b++) {
        const float *xb = x + b * QK_FP8;
        tensor_to_f32(GGUF_T_FP8_E4M3, &q[b], y, QK_FP8);
        const double d = tensor_f16_to_f32(q[b].d);
        for (int j = 0; j < QK_FP8; j++) {
            const double ax = fabs((double)xb[j]), e = fabs((double)xb[j] - y[j]);
            err2 += e * e;
            double bound = fmax(ax * 0x1p-4, d * 0x1p-10) * (1 + 1e-6);
            if (ax > 448 * d) bound = fmax(bound, ax - 448 * d);
            if (!(e <= bound))
                fail_msg("block %lld element %d: x %.9g -> %.9g, d %.3g (bound %.3g)", (long long)b,
                         j, xb[j], y[j], d, bound);
        }
    }
    return sqrt(err2 / (double)n);
}

static void test_block_quantization_bounds(void **state)
{
    enum { N = 64 * QK_FP8 };
    static float x[N];
    static block_fp8_e4m3 q[N / QK_FP8];
    tt_rng r = {9};
    for (int rep = 0; rep < 8; rep++) {
        if (rep % 2)
            tt_fill(&r, x, N);
        else
            kt_fill_gauss(&r, x, N, (float)ldexp(1.0, 4 * rep - 12));
        if (rep == 2)
            for (int j = 0; j < QK_FP8; j++) x[j] = 0; /* a zero block */
        tensor_from_f32(GGUF_T_FP8_E4M3, x, q, N);
        const double err = check_block_bounds(x, N, q);
        double rms = 0;
        for (int i = 0; i < N; i++) rms += (double)x[i] * x[i];
        rms = sqrt(rms / N);
        /* Relative rounding error is uniform within +-2^-4 at most, so its RMS is below
         * 2^-4 / sqrt(3) = 0.036 of the RMS value. */
        if (!(err <= 0.036 * rms)) fail_msg("rep %d: RMS error %.4g of RMS %.4g", rep, err, rms);
        if (rep == 2)
            for (int j = 0; j < QK_FP8; j++) assert_int_equal(q[0].qs[j], 0);
    }
}

/* Quantizes n values to `type` and back; adds the squared errors and the squared values
 * to *e2 and *x2 and raises *emax to the largest absolute error. */
static void roundtrip_error(uint32_t type, const float *x, int64_t n, double *e2, double *x2,
                            double *emax)
{
    void *q = malloc(tensor_row_size(type, n));
    float *y = malloc((size_t)n * sizeof *y);
    assert_true(q && y);
    tensor_from_f32(type, x, q, n);
    tensor_to_f32(type, q, y, n);
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs((double)x[i] - y[i]);
        *e2 += e * e;
        *x2 += (double)x[i] * x[i];
        if (e > *emax) *emax = e;
    }
    free(q);
    free(y);
}

/* The figures of docs/fp8.md: FP8 against Q8_0 (the same 34 bytes per 32) on Gaussian
 * values and on the real weights of stories260K. Asserts FP8's bound on both. */
static void test_accuracy_against_q8_0(void **state)
{
    enum { N = 1 << 16 };
    static float x[N];
    tt_rng r = {77};
    for (int i = 0; i < N; i += 2) { /* Box-Muller: standard normal pairs */
        const double u1 = (tt_uniform(&r) + 1.0) / 2 + 0x1p-60, u2 = (tt_uniform(&r) + 1.0) / 2;
        const double rad = sqrt(-2 * log(u1));
        x[i] = (float)(rad * cos(6.283185307179586 * u2));
        x[i + 1] = (float)(rad * sin(6.283185307179586 * u2));
    }
    double e2f = 0, x2 = 0, maxf = 0, e2q = 0, maxq = 0;
    roundtrip_error(GGUF_T_FP8_E4M3, x, N, &e2f, &x2, &maxf);
    roundtrip_error(GGUF_T_Q8_0, x, N, &e2q, &x2, &maxq);
    x2 /= 2;
    printf("Gaussian, %d values: relative RMS error FP8_E4M3 %.4g, Q8_0 %.4g; max abs error "
           "FP8_E4M3 %.4g, Q8_0 %.4g (sigma 1)\n",
           N, sqrt(e2f / x2), sqrt(e2q / x2), maxf, maxq);
    if (!(sqrt(e2f / x2) <= 0.036)) fail_msg("FP8 relative RMS error %.4g", sqrt(e2f / x2));

    /* Heavy tails (Gaussian times e^(1.5 g'), magnitudes spread over decades within a
     * block): the share of values that lose more than 10% of themselves. FP8's relative
     * error stays below 2^-4 outside the subnormals; Q8_0's grows as |x| falls below amax. */
    static float y[N];
    memcpy(y, x, sizeof y);
    for (int i = 0; i < N; i++) x[i] = y[i] * (float)exp(1.5 * y[(i * 7919 + 1) % N]);
    const uint32_t both[2] = {GGUF_T_FP8_E4M3, GGUF_T_Q8_0};
    double share[2];
    for (int t = 0; t < 2; t++) {
        static uint8_t q[N / 32 * 34];
        tensor_from_f32(both[t], x, q, N);
        tensor_to_f32(both[t], q, y, N);
        int bad = 0;
        for (int i = 0; i < N; i++) bad += fabs((double)x[i] - y[i]) > 0.1 * fabs((double)x[i]);
        share[t] = (double)bad / N;
    }
    printf("heavy-tailed, %d values: share with relative error > 10%%: FP8_E4M3 %.4g, Q8_0 "
           "%.4g\n",
           N, share[0], share[1]);
    if (!(share[0] < 0.01)) fail_msg("FP8: %.4g of heavy-tailed values off by > 10%%", share[0]);

    char path[512];
    TU_SHARED_PATH(path, "testdata/stories260K/models/stories260K.F32.gguf");
    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    e2f = x2 = maxf = e2q = maxq = 0;
    double x2q = 0, wmax = 0;
    int64_t count = 0;
    for (uint64_t t = 0; t < f->n_tensors; t++) {
        const gguf_tensor *g = &f->tensors[t];
        if (g->type != GGUF_T_F32 || g->n_dims != 2 || g->ne[0] % QK_FP8) continue;
        const int64_t n = gguf_tensor_nelements(g);
        float *w = malloc((size_t)n * sizeof *w);
        assert_non_null(w);
        memcpy(w, g->data, (size_t)n * sizeof *w);
        for (int64_t i = 0; i < n; i++) wmax = fmax(wmax, fabs((double)w[i]));
        roundtrip_error(GGUF_T_FP8_E4M3, w, n, &e2f, &x2, &maxf);
        roundtrip_error(GGUF_T_Q8_0, w, n, &e2q, &x2q, &maxq);
        count += n;
        free(w);
    }
    gguf_close(f);
    assert_true(count > 200000);
    printf("stories260K, %lld weights of the 2-D tensors with rows of a multiple of 32: relative "
           "RMS error FP8_E4M3 %.4g, Q8_0 %.4g; max abs error FP8_E4M3 %.4g, Q8_0 %.4g (largest "
           "|w| %.4g)\n",
           (long long)count, sqrt(e2f / x2), sqrt(e2q / x2q), maxf, maxq, wmax);
    if (!(sqrt(e2f / x2) <= 0.036)) fail_msg("FP8 relative RMS error %.4g", sqrt(e2f / x2));
}

/* ---- dot products -------------------------------------------------------------------- */

static void test_dot_ref_equals_dequantized_dot(void **state)
{
    tt_rng r = {31};
    for (int64_t nb = 1; nb <= 130; nb++) {
        const int64_t n = nb * QK_FP8;
        tt_dot_case c = tt_make_dot_case(&r, GGUF_T_FP8_E4M3, n, kt_fill_gauss1);
        /* Exact integer sums; per block two roundings (scale, term) and one addition. */
        const double tol = (4.0 * (double)nb + 8) * 0x1p-24 * c.abs_sum + 1e-30;
        const double got = tensor_vec_dot_ref(GGUF_T_FP8_E4M3, c.w, c.act, n);
        if (!(fabs(got - c.exact) <= tol))
            fail_msg("n %lld: ref %.9g exact %.9g (tol %.3g)", (long long)n, got, c.exact, tol);
        tt_free_dot_case(&c);
    }
}

static void test_avx2_equals_scalar(void **state)
{
    if (!kt_have_avx2()) skip();
#if defined(__x86_64__)
    tt_rng r = {37};
    for (int64_t nb = 1; nb <= 130; nb++) {
        const int64_t n = nb * QK_FP8;
        tt_dot_case c = tt_make_dot_case(&r, GGUF_T_FP8_E4M3, n, kt_fill_gauss1);
        const float ref = tensor_dot_fp8_ref(c.w, c.act, n),
                    got = tensor_dot_fp8_avx2(c.w, c.act, n);
        if (memcmp(&ref, &got, sizeof ref))
            fail_msg("n %lld: avx2 %.9g scalar %.9g", (long long)n, got, ref);
        tt_free_dot_case(&c);
    }
#endif
}

/* Every byte value (NaN codes included, which read as +-480) against q = +-127: the exact
 * int32 block sums and 16-bit products must not overflow. */
static void test_avx2_equals_scalar_on_raw_blocks(void **state)
{
    if (!kt_have_avx2()) skip();
#if defined(__x86_64__)
    enum { NB = 11 };
    block_fp8_e4m3 w[NB];
    block_q8_0 a[NB];
    tt_rng r = {41};
    for (int rep = 0; rep < 300; rep++) {
        for (int b = 0; b < NB; b++) {
            w[b].d = (uint16_t)(0x2000 + tt_u32(&r) % 0x2000);
            a[b].d = (uint16_t)(0x2000 + tt_u32(&r) % 0x2000) | (tt_u32(&r) & 0x8000);
            for (int j = 0; j < QK_FP8; j++) {
                const uint32_t u = tt_u32(&r);
                w[b].qs[j] = (uint8_t)(rep == 0 ? (b * QK_FP8 + j) & 0xff : rep == 1 ? 0x7e : u);
                a[b].qs[j] = (int8_t)(rep < 2 ? 127 : (int)((u >> 8) % 255) - 127);
            }
        }
        const float ref = tensor_dot_fp8_ref(w, a, NB * QK_FP8);
        const float got = tensor_dot_fp8_avx2(w, a, NB * QK_FP8);
        if (memcmp(&ref, &got, sizeof ref))
            fail_msg("rep %d: avx2 %.9g scalar %.9g", rep, got, ref);
    }
    /* All 0x7E (448) against 127: the block sum is 32 * 448*512 * 127, exact in int32. */
    const double want =
        (double)QK_FP8 * 448.0 * 127.0 * NB * tensor_f16_to_f32(w[0].d) * tensor_f16_to_f32(a[0].d);
    for (int b = 0; b < NB; b++) {
        w[b].d = w[0].d;
        a[b].d = a[0].d;
        memset(w[b].qs, 0x7e, QK_FP8);
        memset(a[b].qs, 127, QK_FP8);
    }
    const float got = tensor_dot_fp8_avx2(w, a, NB * QK_FP8);
    assert_true(fabs(got - want) <= 1e-6 * fabs(want));
#endif
}

static void test_matmul_uses_the_dot_kernel(void **state)
{
    kt_check_matmul(GGUF_T_FP8_E4M3, 1120, 41); /* two slices for the chunked path */
    kt_check_matmul(GGUF_T_FP8_E4M3, 32, 300);
}

/* ---- files and models ---------------------------------------------------------------- */

static void test_info_names_the_extension(void **state)
{
    char path[512];
    run_tmp_path(path, sizeof path, "fp8", "model.gguf");
    model_synth_params p = kt_model_params(GGUF_T_FP8_E4M3);
    mica_err err;
    if (model_synth_write(path, &p, &err)) fail_msg("model_synth_write: %s", err.msg);
    run_result r = run_mica((const char *[]){"info", path, NULL});
    assert_int_equal(r.status, 0);
    if (!strstr(r.out, "FP8_E4M3") || !strstr(r.out, "mica extension type") ||
        !strstr(r.out, "other GGUF readers"))
        fail_msg("mica info says:\n%s", r.out);
    free(r.out);
    free(r.err);
    /* A Q8_0 file gets no such note. */
    p.type = GGUF_T_Q8_0;
    if (model_synth_write(path, &p, &err)) fail_msg("model_synth_write: %s", err.msg);
    r = run_mica((const char *[]){"info", path, NULL});
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.out, "mica extension"));
    free(r.out);
    free(r.err);
    unlink(path);
}

static void test_model_logits_close_to_f32(void **state)
{
    enum { V = 320 };
    float f32[V], q8[V], fp8[V], q4[V];
    kt_model_logits(GGUF_T_F32, f32, V);
    kt_model_logits(GGUF_T_Q8_0, q8, V);
    kt_model_logits(GGUF_T_FP8_E4M3, fp8, V);
    kt_model_logits(GGUF_T_Q4_0, q4, V);
    const double e8 = kt_rel_rms(q8, f32, V), ef = kt_rel_rms(fp8, f32, V);
    const double e4 = kt_rel_rms(q4, f32, V);
    printf("logits vs F32, relative RMS error: Q8_0 %.4g, FP8_E4M3 %.4g, Q4_0 %.4g\n", e8, ef, e4);
    /* 3 mantissa bits: well behind Q8_0's 8-bit levels at the same size, well ahead of 4-bit
     * Q4_0, and far from garbage (relative error ~1). */
    if (!(ef > e8 && ef < e4 && ef < 0.1))
        fail_msg("FP8 error %.4g (Q8_0 %.4g, Q4_0 %.4g)", ef, e8, e4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_every_byte),
        cmocka_unit_test(test_encode_inverts_decode),
        cmocka_unit_test(test_encode_rounds_to_nearest_even),
        cmocka_unit_test(test_encode_saturates_and_handles_specials),
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_block_quantization_bounds),
        cmocka_unit_test(test_accuracy_against_q8_0),
        cmocka_unit_test(test_dot_ref_equals_dequantized_dot),
        cmocka_unit_test(test_avx2_equals_scalar),
        cmocka_unit_test(test_avx2_equals_scalar_on_raw_blocks),
        cmocka_unit_test(test_matmul_uses_the_dot_kernel),
        cmocka_unit_test(test_info_names_the_extension),
        cmocka_unit_test(test_model_logits_close_to_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
