/*
 * test_kquants.c - tests src/tensor/quant_k.c, dot_k.c and the K-quant kernels of
 * dot_k_avx2.c: hand-built Q4_K / Q6_K / Q8_K blocks decode by the formats' formulas; the
 * quantizers' output is byte-identical to llama.cpp's (hashes recorded from libggml) and
 * within the error bounds the formats allow; the dot products equal dequantize-then-dot
 * within float rounding; the AVX2 kernels equal the scalar references bit for bit on random
 * data of many lengths; and a tiny model in Q4_K / Q6_K loads and gives logits close to F32.
 */
#include "kquant_test_util.h"

enum { NB_MAX = 24, N_MAX = NB_MAX * QK_K };

/* ---- hand-built blocks --------------------------------------------------------------- */

/* Packs 6-bit scales and mins as ggml-common.h describes block_q4_K's scales[12] (written
 * here from the description, not with the quantizer's packer). */
static void pack_q4_K_scales(uint8_t out[12], const uint8_t sc[8], const uint8_t m[8])
{
    for (int j = 0; j < 4; j++) {
        out[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        out[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        out[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
}

static void test_q4_K_decodes_by_formula(void **state)
{
    const uint8_t sc[8] = {1, 17, 63, 0, 33, 48, 5, 62}, m[8] = {0, 63, 9, 31, 47, 16, 32, 1};
    block_q4_K b;
    b.d = 0x3800;    /* 0.5 */
    b.dmin = 0x3400; /* 0.25 */
    pack_q4_K_scales(b.scales, sc, m);
    uint8_t q[QK_K];
    for (int i = 0; i < QK_K; i++) q[i] = (uint8_t)((i * 7 + i / 16) % 16);
    /* qs[32g + l]: element 64g + l in the low nibble, 64g + 32 + l in the high one. */
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            b.qs[32 * g + l] = (uint8_t)(q[64 * g + l] | (q[64 * g + 32 + l] << 4));
    float y[QK_K];
    tensor_to_f32(GGUF_T_Q4_K, &b, y, QK_K);
    for (int i = 0; i < QK_K; i++) {
        const double want = 0.5 * sc[i / 32] * q[i] - 0.25 * m[i / 32];
        if (y[i] != want) fail_msg("element %d: got %.9g want %.9g", i, y[i], want);
    }
    for (int j = 0; j < 8; j++) {
        uint8_t s, mm;
        tensor_q4_K_scale_min(b.scales, j, &s, &mm);
        assert_int_equal(s, sc[j]);
        assert_int_equal(mm, m[j]);
    }
}

static void test_q6_K_decodes_by_formula(void **state)
{
    const int8_t sc[16] = {1, -1, 127, -128, 5, 64, -37, 0, 2, 100, -100, 3, 9, -9, 17, 33};
    block_q6_K b;
    b.d = 0x2c00; /* 2^-4 */
    memcpy(b.scales, sc, sizeof sc);
    uint8_t q[QK_K]; /* 6-bit levels */
    for (int i = 0; i < QK_K; i++) q[i] = (uint8_t)((i * 29 + 11) % 64);
    /* Per half of 128: ql[l] = q[l] low | q[l+64] high nibble, ql[l+32] = q[l+32] | q[l+96],
     * qh[l] = the top two bits of q[l], q[l+32], q[l+64], q[l+96] at bits 0, 2, 4, 6. */
    memset(b.ql, 0, sizeof b.ql);
    memset(b.qh, 0, sizeof b.qh);
    for (int h = 0; h < 2; h++) {
        const uint8_t *qq = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            b.ql[64 * h + l] = (uint8_t)((qq[l] & 15) | ((qq[l + 64] & 15) << 4));
            b.ql[64 * h + l + 32] = (uint8_t)((qq[l + 32] & 15) | ((qq[l + 96] & 15) << 4));
            for (int k = 0; k < 4; k++)
                b.qh[32 * h + l] |= (uint8_t)((qq[l + 32 * k] >> 4) << (2 * k));
        }
    }
    float y[QK_K];
    tensor_to_f32(GGUF_T_Q6_K, &b, y, QK_K);
    for (int i = 0; i < QK_K; i++) {
        const double want = 0.0625 * sc[i / 16] * (q[i] - 32);
        if (y[i] != want) fail_msg("element %d: got %.9g want %.9g", i, y[i], want);
    }
}

static void test_q8_K_decodes_and_sums(void **state)
{
    tt_rng r = {3};
    float x[2 * QK_K], y[2 * QK_K];
    kt_fill_gauss(&r, x, 2 * QK_K, 0.7f);
    x[100] = 5.0f; /* the largest magnitude of block 0: level -127 with d = -5/127 */
    for (int i = QK_K; i < 2 * QK_K; i++) x[i] = 0; /* an all-zero block */
    block_q8_K b[2];
    tensor_from_f32(GGUF_T_Q8_K, x, b, 2 * QK_K);
    assert_int_equal(b[0].qs[100], -127);
    assert_true(fabsf(b[0].d - (-5.0f / 127.0f)) <= 1e-7f);
    tensor_to_f32(GGUF_T_Q8_K, b, y, 2 * QK_K);
    for (int i = 0; i < QK_K; i++) {
        assert_true(b[0].qs[i] >= -127 && b[0].qs[i] <= 127);
        if (y[i] != b[0].d * b[0].qs[i]) fail_msg("element %d decodes to %g", i, y[i]);
        if (!(fabsf(y[i] - x[i]) <= fabsf(b[0].d) * 0.5f * 1.0001f))
            fail_msg("element %d: %g -> %g, more than d/2 = %g off", i, x[i], y[i], b[0].d / 2);
    }
    for (int j = 0; j < 16; j++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += b[0].qs[16 * j + i];
        assert_int_equal(b[0].bsums[j], s);
        assert_int_equal(b[1].bsums[j], 0);
    }
    assert_true(b[1].d == 0.0f);
    for (int i = 0; i < QK_K; i++) assert_int_equal(b[1].qs[i], 0);
}

static void test_types_and_sizes(void **state)
{
    assert_true(tensor_type_supported(GGUF_T_Q4_K));
    assert_true(tensor_type_supported(GGUF_T_Q6_K));
    assert_false(tensor_type_supported(GGUF_T_Q8_K)); /* activations only */
    assert_int_equal(tensor_row_size(GGUF_T_Q4_K, 512), 288);
    assert_int_equal(tensor_row_size(GGUF_T_Q6_K, 512), 420);
    assert_int_equal(tensor_row_size(GGUF_T_Q8_K, 512), 584);
    assert_int_equal(tensor_vec_dot_type(GGUF_T_Q4_K), GGUF_T_Q8_K);
    assert_int_equal(tensor_vec_dot_type(GGUF_T_Q6_K), GGUF_T_Q8_K);
    assert_string_equal(gguf_ttype_name(GGUF_T_Q4_K), "Q4_K");
    assert_false(gguf_ttype_is_extension(GGUF_T_Q4_K));
}

/* ---- quantizers ---------------------------------------------------------------------- */

/* Hashes (FNV-1a 64) of the bytes llama.cpp's quantize_row_q4_K_ref / quantize_row_q6_K_ref
 * write for the rows below: libggml-base.so from the node-llama-cpp 3.22.1 linux-x64 build
 * of llama.cpp, called on the same floats (a harness outside this repository). The same
 * harness found mica's output identical on 3000 rows of seven distributions. */
static const uint64_t ggml_q4_K_hash[2] = {0x2e16dbc493db2650ull, 0xe2918093f2ea5b4eull};
static const uint64_t ggml_q6_K_hash[2] = {0xab850c25a21be0e7ull, 0x18e8240bd9ef7c99ull};

static void reference_rows(int which, float *x, int64_t n)
{
    tt_rng r = {1000 + (uint64_t)which};
    if (which == 0)
        tt_fill(&r, x, n); /* magnitudes 2^-3 .. 2^3, some zeros */
    else
        kt_fill_gauss(&r, x, n, 0.02f); /* weight-like */
}

static void test_quantizers_match_llama_cpp(void **state)
{
    enum { N = 8 * QK_K };
    static float x[N];
    static block_q4_K q4[N / QK_K];
    static block_q6_K q6[N / QK_K];
    for (int which = 0; which < 2; which++) {
        reference_rows(which, x, N);
        tensor_from_f32(GGUF_T_Q4_K, x, q4, N);
        tensor_from_f32(GGUF_T_Q6_K, x, q6, N);
        const uint64_t h4 = kt_fnv1a(q4, sizeof q4), h6 = kt_fnv1a(q6, sizeof q6);
        if (h4 != ggml_q4_K_hash[which])
            fail_msg("rows %d: Q4_K hash %016llx, llama.cpp's %016llx", which,
                     (unsigned long long)h4, (unsigned long long)ggml_q4_K_hash[which]);
        if (h6 != ggml_q6_K_hash[which])
            fail_msg("rows %d: Q6_K hash %016llx, llama.cpp's %016llx", which,
                     (unsigned long long)h6, (unsigned long long)ggml_q6_K_hash[which]);
    }
}

/* The 4-bit level of element i of a Q4_K block (read by the layout, as the test above). */
static int q4_K_level(const block_q4_K *b, int i)
{
    const int g = i / 64, l = i % 32;
    return (i % 64) < 32 ? b->qs[32 * g + l] & 15 : b->qs[32 * g + l] >> 4;
}

/* Every element is at the nearest of its sub-block's 16 levels ds*q - dm (half a step
 * away at most), or beyond the end of that range and clipped to the end level. Sub-blocks
 * whose scale rounded to 0 hold -dm only and are not checked here. Returns the RMS error. */
static double check_q4_K_bounds(const float *x, int64_t n, const block_q4_K *q)
{
    float y[QK_K];
    double err2 = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *xb = x + b * QK_K;
        tensor_to_f32(GGUF_T_Q4_K, &q[b], y, QK_K);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            tensor_q4_K_scale_min(q[b].scales, j, &sc, &m);
            const double ds = (double)tensor_f16_to_f32(q[b].d) * sc;
            const double dm = (double)tensor_f16_to_f32(q[b].dmin) * m;
            for (int l = 0; l < 32; l++) {
                const int i = 32 * j + l, lv = q4_K_level(&q[b], i);
                const double e = fabs((double)xb[i] - y[i]);
                err2 += e * e;
                if (ds == 0) continue;
                const bool clipped = (lv == 0 && xb[i] < -dm) || (lv == 15 && xb[i] > 15 * ds - dm);
                if (!clipped && !(e <= ds * 0.5 * (1 + 1e-5) + 1e-6 * fabs((double)xb[i])))
                    fail_msg("block %lld element %d: x %.9g -> %.9g (level %d), step %.3g",
                             (long long)b, i, xb[i], y[i], lv, ds);
            }
        }
    }
    return sqrt(err2 / (double)n);
}

static int q6_K_level(const block_q6_K *b, int i)
{
    const int h = i / 128, r = i % 128, l = r % 32, k = r / 32;
    const int lo = (b->ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 15;
    return lo | (((b->qh[32 * h + l] >> (2 * k)) & 3) << 4);
}

/* As check_q4_K_bounds for Q6_K's symmetric levels ds * (q - 32), q in 0..63. */
static double check_q6_K_bounds(const float *x, int64_t n, const block_q6_K *q)
{
    float y[QK_K];
    double err2 = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *xb = x + b * QK_K;
        tensor_to_f32(GGUF_T_Q6_K, &q[b], y, QK_K);
        for (int i = 0; i < QK_K; i++) {
            const double ds = (double)tensor_f16_to_f32(q[b].d) * q[b].scales[i / 16];
            const int lv = q6_K_level(&q[b], i);
            const double e = fabs((double)xb[i] - y[i]);
            err2 += e * e;
            if (ds == 0) continue;
            const double t = xb[i] / ds; /* in level units */
            const bool clipped = (lv == 0 && t < -32) || (lv == 63 && t > 31);
            if (!clipped && !(e <= fabs(ds) * 0.5 * (1 + 1e-5) + 1e-6 * fabs((double)xb[i])))
                fail_msg("block %lld element %d: x %.9g -> %.9g (level %d), step %.3g",
                         (long long)b, i, xb[i], y[i], lv, ds);
        }
    }
    return sqrt(err2 / (double)n);
}

static void test_quantizer_error_bounds(void **state)
{
    enum { N = 16 * QK_K };
    static float x[N];
    static block_q4_K q4[N / QK_K];
    static block_q6_K q6[N / QK_K];
    tt_rng r = {42};
    for (int rep = 0; rep < 6; rep++) {
        if (rep % 2)
            tt_fill(&r, x, N);
        else
            kt_fill_gauss(&r, x, N, 1.0f / (float)(1 + rep));
        if (rep == 4)
            for (int i = 0; i < QK_K; i++) x[i] = 0.25f; /* a constant super-block */
        double rms = 0;
        for (int i = 0; i < N; i++) rms += (double)x[i] * x[i];
        rms = sqrt(rms / N);
        tensor_from_f32(GGUF_T_Q4_K, x, q4, N);
        tensor_from_f32(GGUF_T_Q6_K, x, q6, N);
        const double e4 = check_q4_K_bounds(x, N, q4), e6 = check_q6_K_bounds(x, N, q6);
        /* Uniform quantization of a sub-block's range R with 2^b levels has RMS error
         * R / (2^b - 1) / sqrt(12). For 32 Gaussian values R ~ 4.1 sigma (Q4_K: 4 bits,
         * 0.079 sigma) and the largest of 16 |values| ~ 2 sigma over 32 steps (Q6_K: 0.018
         * sigma); scale rounding adds some. Bounds with headroom, far below what a wrong
         * scale, min or level mapping gives. */
        if (rep % 2 == 0) {
            if (!(e4 <= 0.10 * rms))
                fail_msg("rep %d: Q4_K RMS error %.4g of RMS %.4g", rep, e4, rms);
            if (!(e6 <= 0.025 * rms))
                fail_msg("rep %d: Q6_K RMS error %.4g of RMS %.4g", rep, e6, rms);
        }
        if (rep == 4) { /* a constant block is exact up to the fp16 scales */
            float y[QK_K];
            tensor_to_f32(GGUF_T_Q6_K, q6, y, QK_K);
            tu_check_close("Q6_K constant block", y, x, QK_K, 0.25 * 1e-3);
            tensor_to_f32(GGUF_T_Q4_K, q4, y, QK_K);
            tu_check_close("Q4_K constant block", y, x, QK_K, 0.25 * 1e-3);
        }
    }
}

static void test_zero_rows_quantize_to_zero(void **state)
{
    float x[QK_K] = {0}, y[QK_K];
    block_q4_K q4;
    block_q6_K q6;
    tensor_from_f32(GGUF_T_Q4_K, x, &q4, QK_K);
    tensor_from_f32(GGUF_T_Q6_K, x, &q6, QK_K);
    tensor_to_f32(GGUF_T_Q4_K, &q4, y, QK_K);
    for (int i = 0; i < QK_K; i++) assert_true(y[i] == 0.0f);
    tensor_to_f32(GGUF_T_Q6_K, &q6, y, QK_K);
    for (int i = 0; i < QK_K; i++) assert_true(y[i] == 0.0f);
}

/* ---- dot products -------------------------------------------------------------------- */

static void test_dot_refs_equal_dequantized_dot(void **state)
{
    const uint32_t types[] = {GGUF_T_Q4_K, GGUF_T_Q6_K};
    tt_rng r = {5};
    for (int t = 0; t < 2; t++) {
        for (int64_t nb = 1; nb <= NB_MAX; nb++) {
            const int64_t n = nb * QK_K;
            tt_dot_case c = tt_make_dot_case(&r, types[t], n, kt_fill_gauss1);
            /* The integer sums are exact; each super-block adds a few float roundings of
             * terms bounded by the absolute sum (and Q4_K's min term by as much again). */
            const double tol = (16.0 * (double)nb + 16) * 0x1p-24 * c.abs_sum * 2 + 1e-30;
            const double got = tensor_vec_dot_ref(types[t], c.w, c.act, n);
            if (!(fabs(got - c.exact) <= tol))
                fail_msg("%s n %lld: ref %.9g exact %.9g (tol %.3g)", gguf_ttype_name(types[t]),
                         (long long)n, got, c.exact, tol);
            tt_free_dot_case(&c);
        }
    }
}

static void test_avx2_equals_scalar(void **state)
{
    if (!kt_have_avx2()) skip();
#if defined(__x86_64__)
    tt_rng r = {11};
    for (int64_t nb = 1; nb <= NB_MAX; nb++) {
        const int64_t n = nb * QK_K;
        for (int t = 0; t < 2; t++) {
            const uint32_t type = t ? GGUF_T_Q6_K : GGUF_T_Q4_K;
            tt_dot_case c = tt_make_dot_case(&r, type, n, kt_fill_gauss1);
            const float ref = tensor_vec_dot_ref(type, c.w, c.act, n);
            const float got =
                t ? tensor_dot_q6_K_avx2(c.w, c.act, n) : tensor_dot_q4_K_avx2(c.w, c.act, n);
            if (memcmp(&got, &ref, sizeof got))
                fail_msg("%s n %lld: avx2 %.9g scalar %.9g", gguf_ttype_name(type), (long long)n,
                         got, ref);
            tt_free_dot_case(&c);
        }
    }
#endif
}

/* Random bytes in every field (scales of either sign, all nibbles/levels) with activations
 * at the extremes +-127: no 16-bit saturation in the SIMD kernels. */
static void test_avx2_equals_scalar_on_raw_blocks(void **state)
{
    if (!kt_have_avx2()) skip();
#if defined(__x86_64__)
    enum { NB = 5 };
    block_q4_K w4[NB];
    block_q6_K w6[NB];
    block_q8_K a[NB];
    tt_rng r = {17};
    for (int rep = 0; rep < 200; rep++) {
        uint8_t *p4 = (uint8_t *)w4, *p6 = (uint8_t *)w6;
        for (size_t i = 0; i < sizeof w4; i++) p4[i] = (uint8_t)tt_u32(&r);
        for (size_t i = 0; i < sizeof w6; i++) p6[i] = (uint8_t)tt_u32(&r);
        for (int b = 0; b < NB; b++) {
            w4[b].d = w6[b].d = (uint16_t)(0x3000 + tt_u32(&r) % 0x1000); /* finite halves */
            w4[b].dmin = (uint16_t)(0x3000 + tt_u32(&r) % 0x1000);
            a[b].d = tt_uniform(&r);
            for (int i = 0; i < QK_K; i++) {
                const uint32_t u = tt_u32(&r);
                a[b].qs[i] = (int8_t)(rep % 3 == 0 ? (u & 1 ? 127 : -127) : (int)(u % 255) - 127);
            }
            for (int j = 0; j < 16; j++) {
                int s = 0;
                for (int i = 0; i < 16; i++) s += a[b].qs[16 * j + i];
                a[b].bsums[j] = (int16_t)s;
            }
        }
        const float r4 = tensor_dot_q4_K_ref(w4, a, NB * QK_K),
                    g4 = tensor_dot_q4_K_avx2(w4, a, NB * QK_K);
        const float r6 = tensor_dot_q6_K_ref(w6, a, NB * QK_K),
                    g6 = tensor_dot_q6_K_avx2(w6, a, NB * QK_K);
        if (memcmp(&r4, &g4, sizeof r4))
            fail_msg("rep %d Q4_K: avx2 %.9g scalar %.9g", rep, g4, r4);
        if (memcmp(&r6, &g6, sizeof r6))
            fail_msg("rep %d Q6_K: avx2 %.9g scalar %.9g", rep, g6, r6);
    }
#endif
}

static void test_avx2_q8_K_equals_scalar(void **state)
{
    if (!kt_have_avx2()) skip();
#if defined(__x86_64__)
    enum { N = 8 * QK_K };
    static float x[N];
    static block_q8_K ref[N / QK_K], got[N / QK_K];
    tt_rng r = {23};
    for (int rep = 0; rep < 40; rep++) {
        if (rep % 2)
            tt_fill(&r, x, N);
        else
            kt_fill_gauss(&r, x, N, 3.0f);
        if (rep == 2) {
            for (int i = 0; i < QK_K; i++) x[i] = 0; /* zero block */
            x[QK_K + 7] = -2.0f, x[QK_K + 9] = 2.0f; /* tie of magnitudes: the first wins */
            for (int i = 0; i < QK_K; i++)
                x[2 * QK_K + i] = (float)(i % 5) * 0.5f - 1.0f; /* ties */
        }
        tensor_quantize_row_q8_K_ref(x, ref, N);
        tensor_quantize_row_q8_K_avx2(x, got, N);
        for (int b = 0; b < N / QK_K; b++)
            if (memcmp(&ref[b], &got[b], sizeof ref[b]))
                fail_msg("rep %d block %d: AVX2 Q8_K differs from the reference", rep, b);
    }
#endif
}

/* k = 1280 is more than tensor_matmul_chunked's slice of 1024: two slices of whole
 * super-blocks. */
static void test_matmul_uses_the_dot_kernels(void **state)
{
    kt_check_matmul(GGUF_T_Q4_K, 1280, 37);
    kt_check_matmul(GGUF_T_Q6_K, 1280, 37);
    kt_check_matmul(GGUF_T_Q4_K, 256, 300);
}

/* ---- models -------------------------------------------------------------------------- */

static void test_model_logits_close_to_f32(void **state)
{
    enum { V = 320 };
    float f32[V], q8[V], q4_0[V], q6k[V], q4k[V];
    kt_model_logits(GGUF_T_F32, f32, V);
    kt_model_logits(GGUF_T_Q8_0, q8, V);
    kt_model_logits(GGUF_T_Q4_0, q4_0, V);
    kt_model_logits(GGUF_T_Q6_K, q6k, V);
    kt_model_logits(GGUF_T_Q4_K, q4k, V);
    const double e8 = kt_rel_rms(q8, f32, V), e40 = kt_rel_rms(q4_0, f32, V);
    const double e6 = kt_rel_rms(q6k, f32, V), e4 = kt_rel_rms(q4k, f32, V);
    printf("logits vs F32, relative RMS error: Q8_0 %.4g, Q6_K %.4g, Q4_K %.4g, Q4_0 %.4g\n", e8,
           e6, e4, e40);
    /* 6.56 bits per weight land between Q8_0 and the 4-bit types, and Q4_K's sub-block
     * scales and mins beat Q4_0's single scale; each well short of garbage (error ~1). */
    if (!(e6 < e40 && e6 < 0.05)) fail_msg("Q6_K error %.4g (Q4_0 %.4g)", e6, e40);
    if (!(e4 < 1.2 * e40 && e4 < 0.2)) fail_msg("Q4_K error %.4g (Q4_0 %.4g)", e4, e40);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_K_decodes_by_formula),
        cmocka_unit_test(test_q6_K_decodes_by_formula),
        cmocka_unit_test(test_q8_K_decodes_and_sums),
        cmocka_unit_test(test_types_and_sizes),
        cmocka_unit_test(test_quantizers_match_llama_cpp),
        cmocka_unit_test(test_quantizer_error_bounds),
        cmocka_unit_test(test_zero_rows_quantize_to_zero),
        cmocka_unit_test(test_dot_refs_equal_dequantized_dot),
        cmocka_unit_test(test_avx2_equals_scalar),
        cmocka_unit_test(test_avx2_equals_scalar_on_raw_blocks),
        cmocka_unit_test(test_avx2_q8_K_equals_scalar),
        cmocka_unit_test(test_matmul_uses_the_dot_kernels),
        cmocka_unit_test(test_model_logits_close_to_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
