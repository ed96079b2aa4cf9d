/*
 * test_swiglu.c - tests src/tensor/swiglu.c:
 *  - the scalar reference against the exact value computed in double with libm's exp: at
 *    most 3 ulp of the result over gates from -88 to 110 (dense near 0, where SwiGLU's
 *    inputs live, and across exp's subnormal range; below -88.7, exp(-g) overflows floats
 *    and silu is -0, as with libm's expf);
 *  - IEEE special cases as silu is defined: silu(0) = 0, silu(+inf) = +inf, silu(-inf) and
 *    NaN give NaN (as x / (1 + expf(-x)) does);
 *  - the kernel family in use (AVX2 / AVX-512 on x86, NEON on Arm; the scalar reference
 *    elsewhere) gives the reference's bits on every length from 1 to 70 and odd ones beyond
 *    (tails), in place and out of place.
 */
#include "test_util.h"

#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <math.h>
#include <string.h>

static double exact_swiglu(float g, float u)
{
    return (double)g / (1.0 + exp(-(double)g)) * (double)u;
}

/* Distance in units of the last place of the exact value (floats' ulp at its magnitude). */
static double ulps(float got, double want)
{
    if (want == 0.0) return got == 0.0f ? 0.0 : INFINITY;
    int e;
    frexp(want, &e);
    const double ulp = ldexp(1.0, (e - 24 < -149 ? -149 : e - 24));
    return fabs((double)got - want) / ulp;
}

static void test_reference_accuracy(void **state)
{
    (void)state;
    enum { N = 200001 };
    float *g = malloc(N * sizeof *g), *u = malloc(N * sizeof *u), *h = malloc(N * sizeof *h);
    assert_non_null(g && u && h);
    tt_rng r = {7};
    for (int i = 0; i < N; i++) {
        /* Half the gates in [-8, 8], the rest across [-88, 110]. */
        g[i] = i % 2 ? 8.0f * tt_uniform(&r) : 11.0f + 99.0f * tt_uniform(&r);
        u[i] = 1.0f + 0.5f * tt_uniform(&r);
    }
    tensor_swiglu_ref(g, u, h, N);
    double worst = 0;
    int at = 0;
    for (int i = 0; i < N; i++) {
        const double d = ulps(h[i], exact_swiglu(g[i], u[i]));
        if (d > worst) worst = d, at = i;
    }
    printf("swiglu reference: largest error %.2f ulp (gate %.9g)\n", worst, (double)g[at]);
    if (worst > 3.0)
        fail_msg("gate %.9g up %.9g: %.9g, exact %.17g (%.2f ulp)", (double)g[at], (double)u[at],
                 (double)h[at], exact_swiglu(g[at], u[at]), worst);
    free(g);
    free(u);
    free(h);
}

static void test_special_values(void **state)
{
    (void)state;
    const float g[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 200.0f, -200.0f, 1e-30f};
    const float u[] = {2.0f, 2.0f, 2.0f, 2.0f, 2.0f, 0.5f, 0.5f, 3.0f};
    const int n = (int)(sizeof g / sizeof g[0]);
    float h[sizeof g / sizeof g[0]];
    tensor_swiglu_ref(g, u, h, n);
    assert_true(h[0] == 0.0f && h[1] == 0.0f);
    assert_true(isinf(h[2]) && h[2] > 0);
    assert_true(isnan(h[3]) && isnan(h[4]));
    assert_true(h[5] == 100.0f);               /* exp(-200) is 0: silu(x) = x */
    assert_true(h[6] == 0.0f);                 /* exp(200) is inf: -200 / inf */
    assert_true(h[7] == 1e-30f * 0.5f * 3.0f); /* silu(x) = x / 2 near 0 */
}

/* Bits equal, NaNs as NaNs. */
static void expect_same(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        if (isnan(got[i]) && isnan(want[i])) continue;
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
            fail_msg("%s: element %lld of %lld: %.9g, reference %.9g", what, (long long)i,
                     (long long)n, (double)got[i], (double)want[i]);
    }
}

static void test_family_equals_reference(void **state)
{
    (void)state;
    const tensor_swiglu_fn f = tensor_kernels_get()->swiglu;
    printf("swiglu kernel: %s\n", f == tensor_swiglu_ref ? "scalar reference" : tensor_simd_name());
    tt_rng r = {11};
    const float special[] = {0.0f,  -0.0f,  INFINITY, -INFINITY, NAN,    88.7f,   -88.7f,
                             89.5f, -89.5f, 104.0f,   -104.0f,   110.0f, -110.0f, 1e-40f};
    for (int64_t n = 1; n <= 4099; n += n < 70 ? 1 : 37) {
        float *g = malloc((size_t)n * sizeof *g), *u = malloc((size_t)n * sizeof *u);
        float *want = malloc((size_t)n * sizeof *want), *got = malloc((size_t)n * sizeof *got);
        assert_non_null(g && u && want && got);
        tt_fill(&r, g, n);
        tt_fill(&r, u, n);
        for (int64_t i = 0; i < n; i++) {
            g[i] *= 16.0f; /* gates up to +-128: every range of exp */
            if (tt_u32(&r) % 13 == 0) g[i] = special[tt_u32(&r) % (sizeof special / 4)];
        }
        tensor_swiglu_ref(g, u, want, n);
        f(g, u, got, n);
        expect_same(got, want, n, "out of place");
        f(g, u, g, n);
        expect_same(g, want, n, "in place");
        free(g);
        free(u);
        free(want);
        free(got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_accuracy),
        cmocka_unit_test(test_special_values),
        cmocka_unit_test(test_family_equals_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
