/*
 * test_convert.c - tests src/tensor/convert.c: half and bfloat16 conversion against
 * independent double-precision rounding, every half bit pattern, the F16C instructions
 * when the CPU has them, and the F16 model files (numpy-rounded) against the F32 ones.
 */
#include "test_util.h"

#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <float.h>
#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static bool half_is_nan(uint16_t h)
{
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}

/* The value of a half from its definition, in double. */
static double half_value(uint16_t h)
{
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp((double)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

/* The half nearest to f (ties to even), computed in double from the definition: scale to
 * units of the half ulp at f's binade, round with rint (ties to even in the default mode),
 * then find the bit pattern of that value by binary search over the ordered positive
 * halves. */
static uint16_t ref_f32_to_f16(float f)
{
    const uint16_t sign = signbit(f) ? 0x8000 : 0;
    const double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00;
    int e;
    frexp(a, &e); /* a = frac * 2^e, frac in [0.5, 1): the binade is 2^(e-1) */
    int ulp_exp = e - 1 - 10;
    if (ulp_exp < -24) ulp_exp = -24; /* subnormal range: fixed ulp 2^-24 */
    const double v = ldexp(rint(ldexp(a, -ulp_exp)), ulp_exp);
    uint16_t lo = 0, hi = 0x7c00;
    while (lo < hi) {
        uint16_t mid = (uint16_t)((lo + hi) / 2);
        if (half_value(mid) < v)
            lo = (uint16_t)(mid + 1);
        else
            hi = mid;
    }
    assert_true(half_value(lo) == v);
    return sign | lo;
}

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_f16_all_halves_roundtrip(void **state)
{
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = tensor_f16_to_f32((uint16_t)h);
        const uint16_t back = tensor_f32_to_f16(f);
        if (half_is_nan((uint16_t)h)) {
            if (!isnan(f)) fail_msg("half 0x%04x is NaN but decodes to %g", h, (double)f);
            if (!half_is_nan(back)) fail_msg("NaN half 0x%04x re-encodes to 0x%04x", h, back);
            continue;
        }
        if ((double)f != half_value((uint16_t)h))
            fail_msg("half 0x%04x decodes to %.9g, want %.9g", h, (double)f,
                     half_value((uint16_t)h));
        if (back != h) fail_msg("half 0x%04x -> %.9g -> 0x%04x", h, (double)f, back);
    }
}

static void check_f16_against_ref(float f)
{
    const uint16_t got = tensor_f32_to_f16(f);
    if (isnan(f)) {
        if (!half_is_nan(got)) fail_msg("NaN %g gives half 0x%04x", (double)f, got);
        return;
    }
    const uint16_t want = ref_f32_to_f16(f);
    if (got != want) fail_msg("f32 %.9g: got half 0x%04x want 0x%04x", (double)f, got, want);
}

static void test_f16_random_vs_double_rounding(void **state)
{
    tt_rng r = {1};
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = tt_u32(&r);
        if (i & 1) {
            /* Bias to the half range with low mantissa bits near a tie (0x1000). */
            u = (u & 0x80000000u) | ((0x30u + (u >> 24) % 0x18u) << 23) | (u & 0x7fe000u) |
                (0x0fffu + (u % 3));
        }
        check_f16_against_ref(bits_to_f32(u));
    }
    /* Edges: the largest half, the tie to infinity, the smallest subnormal and its half. */
    const float edges[] = {65504.0f,   65519.996f, 65520.0f,  0x1p-24f,     0x1p-25f,
                           0x1.8p-25f, 0x1p-26f,   0x1p-14f,  0x1.ffcp-15f, 0.0f,
                           -0.0f,      INFINITY,   -INFINITY, 1e-45f,       3.0e38f};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) check_f16_against_ref(edges[i]);
    assert_int_equal(tensor_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(tensor_f32_to_f16(0x1p-25f), 0x0000);   /* tie to even: 0 */
    assert_int_equal(tensor_f32_to_f16(0x1.8p-24f), 0x0002); /* 1.5 ulp: tie to even 2 */
    assert_true(half_is_nan(tensor_f32_to_f16(NAN)));
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) static uint16_t hw_f32_to_f16(float f)
{
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

static void test_f16_vs_f16c_instruction(void **state)
{
    if (!tensor_x86_has_f16c()) {
        printf("SKIP: this CPU has no F16C\n");
        skip();
    }
    tt_rng r = {2};
    for (int i = 0; i < 2000000; i++) {
        const uint32_t u = tt_u32(&r); /* every class, NaN payloads included */
        const float f = bits_to_f32(u);
        const uint16_t got = tensor_f32_to_f16(f), want = hw_f32_to_f16(f);
        if (got != want) fail_msg("f32 bits 0x%08x: got 0x%04x, F16C 0x%04x", u, got, want);
    }
}
#else
static void test_f16_vs_f16c_instruction(void **state)
{
    printf("SKIP: not x86-64, no F16C\n");
    skip();
}
#endif

/* The F16 row conversion the dispatcher picks (F16C) must equal the scalar one bit for
 * bit, tails included. */
static void test_f16_row_simd_matches_scalar(void **state)
{
    tt_rng r = {3};
    float x[300];
    uint16_t a[300], b[300];
    for (int n = 1; n <= 300; n += 7) {
        for (int i = 0; i < n; i++) x[i] = tt_uniform(&r) * 70000.0f * (float)(i % 3 == 0);
        tt_fill(&r, x + n / 2, n - n / 2);
        tensor_convert_act(GGUF_T_F16, x, a, n);
        tensor_f32_to_f16_row_ref(x, b, n);
        for (int i = 0; i < n; i++)
            if (a[i] != b[i])
                fail_msg("n %d index %d: %s 0x%04x scalar 0x%04x", n, i, tensor_simd_name(), a[i],
                         b[i]);
    }
}

/* The bfloat16 nearest to f, ties to even, from the definition (8 significant bits). */
static double ref_bf16_value(float f)
{
    const double a = fabs((double)f);
    int e;
    frexp(a, &e);
    int ulp_exp = e - 1 - 7;
    if (ulp_exp < -133) ulp_exp = -133;
    double v = ldexp(rint(ldexp(a, -ulp_exp)), ulp_exp);
    if (v > (double)FLT_MAX) v = INFINITY;
    return signbit(f) ? -v : v;
}

static void test_bf16_conversions(void **state)
{
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = tensor_bf16_to_f32((uint16_t)h);
        const uint16_t back = tensor_f32_to_bf16(f);
        if (isnan(f)) {
            if (!isnan(tensor_bf16_to_f32(back))) fail_msg("NaN bf16 0x%04x lost", h);
        } else if (back != h) {
            fail_msg("bf16 0x%04x -> %.9g -> 0x%04x", h, (double)f, back);
        }
    }
    tt_rng r = {4};
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = tt_u32(&r);
        if (i & 1) u = (u & 0xffff0000u) | (0x7fffu + (u % 3)); /* near ties */
        const float f = bits_to_f32(u);
        if (isnan(f)) {
            assert_true(isnan(tensor_bf16_to_f32(tensor_f32_to_bf16(f))));
            continue;
        }
        const double got = tensor_bf16_to_f32(tensor_f32_to_bf16(f)), want = ref_bf16_value(f);
        if (got != want) fail_msg("f32 %.9g: bf16 %.9g want %.9g", (double)f, got, want);
    }
}

/* tensor_from_f32 / tensor_to_f32 for the plain float types agree with the scalars. */
static void test_row_conversion_float_types(void **state)
{
    tt_rng r = {5};
    float x[77], back[77];
    uint16_t h[77];
    tt_fill(&r, x, 77);
    tensor_from_f32(GGUF_T_F16, x, h, 77);
    tensor_to_f32(GGUF_T_F16, h, back, 77);
    for (int i = 0; i < 77; i++) {
        assert_int_equal(h[i], ref_f32_to_f16(x[i]));
        assert_true(back[i] == (float)half_value(h[i]));
    }
    tensor_from_f32(GGUF_T_BF16, x, h, 77);
    tensor_to_f32(GGUF_T_BF16, h, back, 77);
    for (int i = 0; i < 77; i++) assert_true((double)back[i] == ref_bf16_value(x[i]));
    assert_int_equal(tensor_row_size(GGUF_T_F32, 77), 308);
    assert_int_equal(tensor_row_size(GGUF_T_F16, 172), 344);
    assert_int_equal(tensor_row_size(GGUF_T_Q8_0, 64), 68);
    assert_int_equal(tensor_row_size(GGUF_T_Q4_0, 64), 36);
    assert_true(tensor_type_supported(GGUF_T_BF16));
    assert_false(tensor_type_supported(GGUF_T_Q5_K));
    assert_false(tensor_type_supported(GGUF_T_Q4_1));
}

/* The F16 model files were rounded by numpy (astype(float16), ties to even) from the same
 * float32 values as the F32 files: our rounding must give the same bytes. */
static void test_f16_files_match_numpy_rounding(void **state)
{
    char p32[512], p16[512];
    int compared = 0;
    for (size_t mi = 0; mi < TT_N_MODELS; mi++) {
        char rel[128];
        snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.F32.gguf", tt_models[mi]);
        TU_SHARED_PATH(p32, rel);
        snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.F16.gguf", tt_models[mi]);
        TU_SHARED_PATH(p16, rel);
        gguf_file *f32 = NULL, *f16 = NULL;
        mica_err err = {0};
        if (gguf_open(&f32, p32, &err) || gguf_open(&f16, p16, &err)) fail_msg("%s", err.msg);
        for (uint64_t i = 0; i < f16->n_tensors; i++) {
            const gguf_tensor *t = &f16->tensors[i];
            if (t->type != GGUF_T_F16) continue;
            const gguf_tensor *s = gguf_find_tensor(f32, t->name);
            assert_non_null(s);
            const int64_t n = gguf_tensor_nelements(t);
            assert_int_equal(n, gguf_tensor_nelements(s));
            uint16_t *h = malloc((size_t)n * 2);
            assert_non_null(h);
            tensor_from_f32(GGUF_T_F16, s->data, h, n);
            if (memcmp(h, t->data, (size_t)n * 2) != 0)
                fail_msg("%s: tensor %s differs from numpy's rounding", p16, t->name);
            free(h);
            compared++;
        }
        gguf_close(f32);
        gguf_close(f16);
    }
    assert_true(compared > 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_all_halves_roundtrip),
        cmocka_unit_test(test_f16_random_vs_double_rounding),
        cmocka_unit_test(test_f16_vs_f16c_instruction),
        cmocka_unit_test(test_f16_row_simd_matches_scalar),
        cmocka_unit_test(test_bf16_conversions),
        cmocka_unit_test(test_row_conversion_float_types),
        cmocka_unit_test(test_f16_files_match_numpy_rounding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
