/*
 * test_families.c - tests the kernel family that run-time dispatch picks on the machine it
 * runs on (dot.c's tables: AVX2 or AVX-512 on x86, NEON or NEON with sdot on 64-bit Arm,
 * where `make aarch64-test` runs it under qemu as a Cortex-A72 and as qemu's "max" CPU),
 * entry by entry against the scalar references:
 *  - every dot kernel on rows of 1 to 128 blocks, made both by quantizing random floats and
 *    from random block bytes (every code a format can hold, -128 weights included); the
 *    float types on every length from 1 to 70 and odd ones beyond;
 *  - every activation converter byte for byte, with zero blocks, rounding ties and, for
 *    F16, infinities, NaNs, overflow and subnormals;
 *  - with MICA_EXPECT_SIMD set, that the family's name is that one (run-time detection).
 * The batched (gemm) kernels have their own test (test_avx512.c).
 */
#include "test_util.h"

#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <math.h>

/* The family's entries that are not the scalar references themselves. */
static tensor_dot_fn family_dot(uint32_t type)
{
    const tensor_dot_fn f = tensor_kernels_get()->dot[type];
    return f != tensor_kernels_scalar()->dot[type] ? f : NULL;
}

static tensor_act_fn family_act(uint32_t type)
{
    const tensor_act_fn f = tensor_kernels_get()->act[type];
    return f != tensor_kernels_scalar()->act[type] ? f : NULL;
}

/* Rows of up to this many blocks must give the reference's bits; longer ones its value to
 * rounding. The x86 Q8_0 / Q4_0 kernels add block terms in 8 lanes (dot_avx2.c), which is
 * the reference's order only up to 8 blocks; every other quantized kernel follows its
 * reference's order for any length. */
static int64_t exact_blocks(uint32_t type)
{
#if defined(__x86_64__)
    if (type == GGUF_T_Q8_0 || type == GGUF_T_Q4_0) return 8;
#endif
    return INT64_MAX;
}

/* Float accumulation in another order: 4 sqrt(n) ulps of sum |w_i a_i| plus a floor. */
static double sum_tol(int64_t n, double abs_sum)
{
    return (4.0 * sqrt((double)n) + 8.0) * 0x1p-24 * abs_sum + 1e-30;
}

/* ---- rows ---------------------------------------------------------------------------------- */

typedef struct row_pair {
    void *w, *act;  /* each in a buffer of exactly its size */
    double abs_sum; /* sum |w_i * a_i| of the values held */
} row_pair;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* Elements per block of a type (1 for the float types). */
static int64_t block_size(uint32_t type)
{
    uint32_t bs, ts;
    assert_true(gguf_ttype_layout(type, &bs, &ts));
    return bs;
}

static void fill_bytes(tt_rng *r, void *p, size_t n)
{
    for (size_t i = 0; i < n; i++) ((uint8_t *)p)[i] = (uint8_t)tt_u32(r);
}

/* A random finite fp16 scale, either sign, magnitudes 2^-10 .. 2. */
static uint16_t random_scale(tt_rng *r)
{
    return tensor_f32_to_f16(tt_uniform(r) * 2.0f + (tt_u32(r) % 2 ? 0x1p-10f : -0x1p-10f));
}

/* Random bytes as a weight row of `type`: every quant code, random finite scales. FP8's NaN
 * codes become the largest finite ones (mica never writes them). */
static void raw_weights(tt_rng *r, uint32_t type, void *w, int64_t n)
{
    fill_bytes(r, w, tensor_row_size(type, n));
    for (int64_t b = 0; b < n / block_size(type); b++) {
        switch (type) {
        case GGUF_T_Q8_0:
            ((block_q8_0 *)w)[b].d = random_scale(r);
            break;
        case GGUF_T_Q4_0:
            ((block_q4_0 *)w)[b].d = random_scale(r);
            break;
        case GGUF_T_Q4_K:
            ((block_q4_K *)w)[b].d = random_scale(r);
            ((block_q4_K *)w)[b].dmin = random_scale(r);
            break;
        case GGUF_T_Q6_K:
            ((block_q6_K *)w)[b].d = random_scale(r);
            break;
        case GGUF_T_FP8_E4M3: {
            block_fp8_e4m3 *x = (block_fp8_e4m3 *)w + b;
            x->d = random_scale(r);
            for (int j = 0; j < QK_FP8; j++)
                if ((x->qs[j] & 0x7f) == 0x7f) x->qs[j] ^= 1;
            break;
        }
        default:
            fail_msg("no raw form for %s", gguf_ttype_name(type));
        }
    }
}

/* Random quants in [-127, 127] as an activation row of type Q8_0 or Q8_K (the quantizers
 * never make -128; the SIMD kernels may rely on that). */
static void raw_act(tt_rng *r, uint32_t type, void *a, int64_t n)
{
    fill_bytes(r, a, tensor_row_size(type, n));
    if (type == GGUF_T_Q8_0) {
        for (int64_t b = 0; b < n / QK8_0; b++) {
            block_q8_0 *y = (block_q8_0 *)a + b;
            y->d = random_scale(r);
            for (int j = 0; j < QK8_0; j++)
                if (y->qs[j] == -128) y->qs[j] = -127;
        }
        return;
    }
    assert_int_equal(type, GGUF_T_Q8_K);
    for (int64_t b = 0; b < n / QK_K; b++) {
        block_q8_K *y = (block_q8_K *)a + b;
        y->d = tensor_f16_to_f32(random_scale(r));
        for (int j = 0; j < QK_K; j++)
            if (y->qs[j] == -128) y->qs[j] = -127;
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += y->qs[16 * j + i];
            y->bsums[j] = (int16_t)sum;
        }
    }
}

/* A weight row of `type` and an activation row in its vec_dot type (converted by the scalar
 * reference), from random floats or (raw) random bytes. */
static row_pair make_pair(tt_rng *r, uint32_t type, int64_t n, bool raw)
{
    const uint32_t vt = tensor_vec_dot_type(type);
    row_pair p = {xmalloc(tensor_row_size(type, n)), xmalloc(tensor_row_size(vt, n)), 0};
    float *wf = xmalloc((size_t)n * sizeof *wf), *af = xmalloc((size_t)n * sizeof *af);
    if (raw) {
        raw_weights(r, type, p.w, n);
        raw_act(r, vt, p.act, n);
    } else {
        tt_fill(r, wf, n);
        tt_fill(r, af, n);
        tensor_from_f32(type, wf, p.w, n);
        const tensor_act_fn act = tensor_kernels_scalar()->act[vt];
        act ? act(af, p.act, n) : tensor_from_f32(vt, af, p.act, n);
    }
    tensor_to_f32(type, p.w, wf, n);
    tensor_to_f32(vt, p.act, af, n);
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

/* ---- dot products -------------------------------------------------------------------------- */

static void check_dot(uint32_t type, tensor_dot_fn dot, int64_t n, const row_pair *p, bool exact)
{
    const float ref = tensor_vec_dot_ref(type, p->w, p->act, n);
    const float got = dot(p->w, p->act, n);
    if (exact && memcmp(&got, &ref, sizeof got))
        fail_msg("%s n %lld: %s %.9g scalar %.9g (must be bit-identical)", gguf_ttype_name(type),
                 (long long)n, tensor_simd_name(), (double)got, (double)ref);
    const double tol = sum_tol(n, p->abs_sum);
    if (!(fabs((double)got - ref) <= tol))
        fail_msg("%s n %lld: %s %.9g scalar %.9g (tol %.3g)", gguf_ttype_name(type), (long long)n,
                 tensor_simd_name(), (double)got, (double)ref, tol);
}

static void test_float_dots(void **state)
{
    const uint32_t types[] = {GGUF_T_F32, GGUF_T_F16, GGUF_T_BF16};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const tensor_dot_fn dot = family_dot(types[t]);
        if (!dot) continue;
        tt_rng r = {10 + t};
        for (int64_t n = 1; n <= 4200; n += n < 70 ? 1 : 97) {
            row_pair p = make_pair(&r, types[t], n, false);
            check_dot(types[t], dot, n, &p, false);
            free_pair(&p);
        }
        printf("%s %s: checked\n", tensor_simd_name(), gguf_ttype_name(types[t]));
    }
}

static void test_block_dots(void **state)
{
    const uint32_t types[] = {GGUF_T_Q8_0, GGUF_T_Q4_0, GGUF_T_Q4_K, GGUF_T_Q6_K, GGUF_T_FP8_E4M3};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const tensor_dot_fn dot = family_dot(types[t]);
        if (!dot) continue;
        tt_rng r = {20 + t};
        const int64_t bs = block_size(types[t]);
        for (int64_t nb = 1; nb <= 128; nb += nb < 40 ? 1 : 11)
            for (int raw = 0; raw < 2; raw++) {
                row_pair p = make_pair(&r, types[t], nb * bs, raw);
                check_dot(types[t], dot, nb * bs, &p, nb <= exact_blocks(types[t]));
                free_pair(&p);
            }
        printf("%s %s: checked\n", tensor_simd_name(), gguf_ttype_name(types[t]));
    }
}

/* ---- activation conversion ----------------------------------------------------------------- */

/* Random rows, some with zero blocks, some with exact .5 ties after scaling, some with
 * magnitudes across F16's whole range. */
static void fill_act_input(tt_rng *r, float *x, int64_t n, int kind)
{
    tt_fill(r, x, n);
    for (int64_t i = 0; i < n; i++) {
        if (kind == 1 && i % 96 < 32) x[i] = 0.0f;
        if (kind == 2) x[i] = (float)(i % 255 - 127) / 2.0f;
        if (kind == 3) x[i] *= ldexpf(1.0f, (int)(tt_u32(r) % 48) - 30);
    }
}

/* Values where float-to-half conversion is easy to get wrong. */
static const float f16_specials[] = {
    INFINITY,        -INFINITY,       NAN,          -NAN,     65504.0f,
    65519.99f,       65520.0f,        -1e6f,        0x1p-14f, 0x1p-24f,
    0x1p-25f,        0x3p-26f,        0x1p-26f,     1e-40f,   -0.0f,
    1.0f + 0x1p-11f, 1.0f + 0x3p-11f, 0x1.ffep-15f, 5.96e-8f, -3.1e-5f,
};

static void check_act(uint32_t type, tensor_act_fn act, tensor_act_fn ref, const float *x,
                      int64_t n)
{
    const size_t bytes = tensor_row_size(type, n);
    uint8_t *a = xmalloc(bytes), *b = xmalloc(bytes);
    act(x, a, n);
    ref(x, b, n);
    for (size_t i = 0; i < bytes; i++)
        if (a[i] != b[i])
            fail_msg("%s act n %lld: byte %zu is %02x, scalar %02x", gguf_ttype_name(type),
                     (long long)n, i, a[i], b[i]);
    free(a);
    free(b);
}

static void test_act_conversion(void **state)
{
    const uint32_t types[] = {GGUF_T_F16, GGUF_T_Q8_0, GGUF_T_Q8_K};
    enum { MAX_N = 4096 + 70 };
    float *x = xmalloc(MAX_N * sizeof *x);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const tensor_act_fn act = family_act(types[t]);
        if (!act) continue;
        const tensor_act_fn ref = tensor_kernels_scalar()->act[types[t]];
        const int64_t bs = block_size(types[t]);
        tt_rng r = {30 + t};
        for (int kind = 0; kind < 4; kind++) {
            fill_act_input(&r, x, MAX_N, kind);
            for (int64_t n = bs; n <= MAX_N; n += n < 70 ? bs : 97 * bs)
                check_act(types[t], act, ref, x, n);
            check_act(types[t], act, ref, x, MAX_N / bs * bs);
        }
        if (types[t] == GGUF_T_F16) {
            const int64_t ns = (int64_t)(sizeof f16_specials / sizeof f16_specials[0]);
            for (int64_t i = 0; i < MAX_N; i++) x[i] = f16_specials[i % ns] * (i % 3 ? 1 : -1);
            check_act(types[t], act, ref, x, MAX_N);
        }
        printf("%s act %s: checked\n", tensor_simd_name(), gguf_ttype_name(types[t]));
    }
    free(x);
}

/* ---- the family itself ------------------------------------------------------------------- */

static void test_family_name(void **state)
{
    const char *want = getenv("MICA_EXPECT_SIMD");
    printf("family in use: %s\n", tensor_simd_name());
    if (want) assert_string_equal(tensor_simd_name(), want);
#if defined(__aarch64__)
    assert_string_not_equal(tensor_simd_name(), "scalar"); /* NEON is part of AArch64 */
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_name),
        cmocka_unit_test(test_float_dots),
        cmocka_unit_test(test_block_dots),
        cmocka_unit_test(test_act_conversion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
