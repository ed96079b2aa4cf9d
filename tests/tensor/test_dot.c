/*
 * test_dot.c - tests src/tensor/dot.c and dot_avx2.c: each scalar reference against a
 * double-precision sum over dequantized values, and each dispatched (SIMD) kernel against
 * its scalar reference on random data of many sizes, odd ones and tails included.
 */
#include "test_util.h"

#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <math.h>

enum { MAX_N = 4096 };

/* Float accumulation of n terms: error well under n * 2^-24 * sum|ab|; this allows
 * 4 * sqrt(n) ulps of the absolute sum plus a floor, far below any indexing mistake. */
static double dot_tol(int64_t n, double abs_sum)
{
    return (4.0 * sqrt((double)n) + 8.0) * 0x1p-24 * abs_sum + 1e-30;
}

static void check_type(uint32_t type, const int64_t *sizes, int n_sizes, bool check_simd)
{
    tt_rng r = {100 + type};
    for (int s = 0; s < n_sizes; s++) {
        const int64_t n = sizes[s];
        tt_dot_case c = tt_make_dot_case(&r, type, n, tt_fill);
        const double tol = dot_tol(n, c.abs_sum);
        const double ref = tensor_vec_dot_ref(type, c.w, c.act, n);
        if (!(fabs(ref - c.exact) <= tol))
            fail_msg("%s n %lld: ref %.9g exact %.9g (tol %.3g)", gguf_ttype_name(type),
                     (long long)n, ref, c.exact, tol);
        if (check_simd) {
            const double got = tensor_vec_dot(type, c.w, c.act, n);
            if (!(fabs(got - ref) <= tol))
                fail_msg("%s n %lld: %s %.9g scalar %.9g (tol %.3g)", gguf_ttype_name(type),
                         (long long)n, tensor_simd_name(), got, ref, tol);
        }
        tt_free_dot_case(&c);
    }
}

static int block_sizes(int64_t *sizes)
{
    int k = 0;
    for (int64_t n = 32; n <= MAX_N; n += 32) sizes[k++] = n;
    return k;
}

static int float_sizes(int64_t *sizes)
{
    int k = block_sizes(sizes);
    const int64_t odd[] = {1, 2, 7, 8, 9, 15, 31, 33, 63, 65, 172, 1001, 4095};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) sizes[k++] = odd[i];
    return k;
}

static bool have_simd(void)
{
    if (strcmp(tensor_simd_name(), "scalar") == 0) {
        printf("NOTE: no SIMD kernels on this CPU; only the scalar references are checked\n");
        return false;
    }
    return true;
}

static void test_dot_float_types(void **state)
{
    int64_t sizes[MAX_N / 32 + 16];
    const int k = float_sizes(sizes);
    const bool simd = have_simd();
    check_type(GGUF_T_F32, sizes, k, simd);
    check_type(GGUF_T_F16, sizes, k, simd);
    check_type(GGUF_T_BF16, sizes, k, simd);
}

static void test_dot_quantized_types(void **state)
{
    int64_t sizes[MAX_N / 32 + 16];
    const int k = block_sizes(sizes);
    const bool simd = have_simd();
    check_type(GGUF_T_Q8_0, sizes, k, simd);
    check_type(GGUF_T_Q4_0, sizes, k, simd);
}

/* Extreme integer values: q = +-127 against +-127 and Q4_0's -8 (nibble 0) against -127 must
 * not saturate the 16-bit pair sums of the SIMD kernels. */
static void test_dot_quantized_extremes(void **state)
{
    enum { NB = 4 };
    block_q8_0 w8[NB], a[NB];
    block_q4_0 w4[NB];
    for (int b = 0; b < NB; b++) {
        w8[b].d = a[b].d = w4[b].d = 0x3c00; /* 1.0 */
        for (int j = 0; j < 32; j++) {
            w8[b].qs[j] = (int8_t)(b < 2 || j % 2 ? -128 : 127);
            a[b].qs[j] = (int8_t)(b % 2 ? -127 : 127);
        }
        for (int j = 0; j < 16; j++) w4[b].qs[j] = 0x00; /* every value -8 */
    }
    float want8 = 0, want4 = 0;
    for (int b = 0; b < NB; b++)
        for (int j = 0; j < 32; j++) {
            want8 += (float)(w8[b].qs[j] * a[b].qs[j]);
            want4 += (float)(-8 * a[b].qs[j]);
        }
    assert_true(tensor_dot_q8_0_ref(w8, a, NB * 32) == want8);
    assert_true(tensor_vec_dot(GGUF_T_Q8_0, w8, a, NB * 32) == want8);
    assert_true(tensor_dot_q4_0_ref(w4, a, NB * 32) == want4);
    assert_true(tensor_vec_dot(GGUF_T_Q4_0, w4, a, NB * 32) == want4);
}

/* Up to 8 blocks the quantized SIMD kernels add the blocks' terms in the reference's order,
 * so they must agree bit for bit: the property that keeps Q8_0 logits at llama.cpp's. */
static void test_dot_quantized_short_rows_exact(void **state)
{
    tt_rng r = {8};
    const uint32_t types[] = {GGUF_T_Q8_0, GGUF_T_Q4_0};
    for (int t = 0; t < 2; t++)
        for (int rep = 0; rep < 50; rep++)
            for (int64_t n = 32; n <= 256; n += 32) {
                tt_dot_case c = tt_make_dot_case(&r, types[t], n, tt_fill);
                const float got = tensor_vec_dot(types[t], c.w, c.act, n);
                const float ref = tensor_vec_dot_ref(types[t], c.w, c.act, n);
                if (got != ref)
                    fail_msg("%s n %lld: %s %.9g scalar %.9g", gguf_ttype_name(types[t]),
                             (long long)n, tensor_simd_name(), (double)got, (double)ref);
                tt_free_dot_case(&c);
            }
}

static void test_vec_dot_types_and_force_scalar(void **state)
{
    assert_int_equal(tensor_vec_dot_type(GGUF_T_F32), GGUF_T_F32);
    assert_int_equal(tensor_vec_dot_type(GGUF_T_F16), GGUF_T_F16);
    assert_int_equal(tensor_vec_dot_type(GGUF_T_BF16), GGUF_T_BF16);
    assert_int_equal(tensor_vec_dot_type(GGUF_T_Q8_0), GGUF_T_Q8_0);
    assert_int_equal(tensor_vec_dot_type(GGUF_T_Q4_0), GGUF_T_Q8_0);
    const bool was = tensor_force_scalar(true);
    assert_false(was);
    assert_string_equal(tensor_simd_name(), "scalar");
    /* Forced scalar, the dispatched dot is the reference, bit for bit. */
    tt_rng r = {7};
    tt_dot_case c = tt_make_dot_case(&r, GGUF_T_F32, 1000, tt_fill);
    assert_true(tensor_vec_dot(GGUF_T_F32, c.w, c.act, 1000) ==
                tensor_vec_dot_ref(GGUF_T_F32, c.w, c.act, 1000));
    tt_free_dot_case(&c);
    assert_true(tensor_force_scalar(false));
    printf("dispatch: %s\n", tensor_simd_name());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_float_types),
        cmocka_unit_test(test_dot_quantized_types),
        cmocka_unit_test(test_dot_quantized_extremes),
        cmocka_unit_test(test_dot_quantized_short_rows_exact),
        cmocka_unit_test(test_vec_dot_types_and_force_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
