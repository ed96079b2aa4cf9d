/*
 * swiglu.c - the gated activation of SwiGLU feed-forward layers, h[i] = silu(g[i]) * u[i]
 * with silu(x) = x / (1 + exp(-x)), for every CPU family: a scalar reference and AVX2,
 * AVX-512 and NEON twins that compute every element with the same float operations in the
 * same order, so they give the reference's bits and the choice of family never changes a
 * result (nor does an element's place in a row: tails go through the same code, masked).
 *
 * exp is our own (libm's expf is scalar and took a tenth of a prompt's time): Cody-Waite
 * reduction x = n ln2 + r with |r| <= ln2/2, Cephes' degree-7 polynomial for exp(r) (about
 * 1 ulp) and the scaling by 2^n in two exact halves, so that results that overflow or are
 * subnormal round once, as libm's do. ggml's SIMD silu is likewise a polynomial.
 *
 * Does not own: the FFN around it (model/forward.c, train/). Called by: model/, train/,
 * tests (through the kernel table, dot.c).
 */
#include "tensor/tensor_int.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

/* Inputs of exp outside [SW_LO, SW_HI] give 0 (or the smallest subnormal) and +inf anyway;
 * clamping keeps 2^n within two normal halves. */
#define SW_LO    -104.0f
#define SW_HI    89.0f
#define SW_LOG2E 1.44269504088896341f
#define SW_C1    0.693359375f    /* ln 2 = C1 - C2, C1 exact in 9 bits */
#define SW_C2    -2.12194440e-4f /* the rest of ln 2 */
#define SW_P0    1.9875691500e-4f
#define SW_P1    1.3981999507e-3f
#define SW_P2    8.3334519073e-3f
#define SW_P3    4.1665795894e-2f
#define SW_P4    1.6666665459e-1f
#define SW_P5    5.0000001201e-1f

/* ---- scalar reference ---------------------------------------------------------------------- */

/* 2^k for -75 <= k <= 64 (a normal float). */
static float sw_pow2(int32_t k)
{
    const uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* floor(k / 2), as an arithmetic shift gives it in the SIMD twins. */
static int32_t sw_half_floor(int32_t k)
{
    return k >= 0 ? k / 2 : -((1 - k) / 2);
}

static float sw_exp(float x)
{
    if (isnan(x)) return x;
    if (x < SW_LO) x = SW_LO;
    if (x > SW_HI) x = SW_HI;
    const float n = rintf(x * SW_LOG2E);
    float r = fmaf(n, -SW_C1, x);
    r = fmaf(n, -SW_C2, r);
    float y = fmaf(SW_P0, r, SW_P1);
    y = fmaf(y, r, SW_P2);
    y = fmaf(y, r, SW_P3);
    y = fmaf(y, r, SW_P4);
    y = fmaf(y, r, SW_P5);
    const float p = fmaf(y, r * r, r) + 1.0f;
    const int32_t k = (int32_t)n, k1 = sw_half_floor(k);
    return p * sw_pow2(k1) * sw_pow2(k - k1);
}

void tensor_swiglu_ref(const float *g, const float *u, float *h, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i];
        h[i] = gi / (1.0f + sw_exp(-gi)) * u[i];
    }
}

/* ---- x86 ----------------------------------------------------------------------------------- */

#if defined(__x86_64__)
#define SW_AVX2_FN __attribute__((target("avx2,fma")))
#define SW_A512_FN __attribute__((target("avx512f,avx2,fma")))

SW_AVX2_FN static inline __m256 sw_exp8(__m256 x)
{
    /* max/min with the constant first: a NaN input passes through (as the reference's). */
    x = _mm256_min_ps(_mm256_set1_ps(SW_HI), _mm256_max_ps(_mm256_set1_ps(SW_LO), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(SW_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-SW_C1), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-SW_C2), r);
    __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(SW_P0), r, _mm256_set1_ps(SW_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(SW_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(SW_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(SW_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(SW_P5));
    const __m256 p =
        _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i k = _mm256_cvttps_epi32(n), k1 = _mm256_srai_epi32(k, 1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    const __m256 s2 =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(k, k1), bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

SW_AVX2_FN static inline __m256 sw_swiglu8(__m256 g, __m256 u)
{
    const __m256 e = sw_exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

SW_AVX2_FN void tensor_swiglu_avx2(const float *g, const float *u, float *h, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(h + i, sw_swiglu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), lanes);
        const __m256 v = sw_swiglu8(_mm256_maskload_ps(g + i, m), _mm256_maskload_ps(u + i, m));
        _mm256_maskstore_ps(h + i, m, v);
    }
}

SW_A512_FN static inline __m512 sw_exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(SW_HI), _mm512_max_ps(_mm512_set1_ps(SW_LO), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(SW_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-SW_C1), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-SW_C2), r);
    __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(SW_P0), r, _mm512_set1_ps(SW_P1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(SW_P2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(SW_P3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(SW_P4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(SW_P5));
    const __m512 p =
        _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    const __m512i k = _mm512_cvttps_epi32(n), k1 = _mm512_srai_epi32(k, 1);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(k1, bias), 23));
    const __m512 s2 =
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(k, k1), bias), 23));
    return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

SW_A512_FN static inline __m512 sw_swiglu16(__m512 g, __m512 u)
{
    const __m512 e = sw_exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}

SW_A512_FN void tensor_swiglu_avx512(const float *g, const float *u, float *h, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(h + i, sw_swiglu16(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(
            h + i, m,
            sw_swiglu16(_mm512_maskz_loadu_ps(m, g + i), _mm512_maskz_loadu_ps(m, u + i)));
    }
}
#endif

/* ---- NEON ---------------------------------------------------------------------------------- */

#if defined(__aarch64__)
static inline float32x4_t sw_exp4(float32x4_t x)
{
    /* FMAX/FMIN return NaN for a NaN input (as the reference). */
    x = vminq_f32(vdupq_n_f32(SW_HI), vmaxq_f32(vdupq_n_f32(SW_LO), x));
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(SW_LOG2E)));
    float32x4_t r = vfmaq_f32(x, n, vdupq_n_f32(-SW_C1)); /* x + n * -C1, fused */
    r = vfmaq_f32(r, n, vdupq_n_f32(-SW_C2));
    float32x4_t y = vfmaq_f32(vdupq_n_f32(SW_P1), vdupq_n_f32(SW_P0), r);
    y = vfmaq_f32(vdupq_n_f32(SW_P2), y, r);
    y = vfmaq_f32(vdupq_n_f32(SW_P3), y, r);
    y = vfmaq_f32(vdupq_n_f32(SW_P4), y, r);
    y = vfmaq_f32(vdupq_n_f32(SW_P5), y, r);
    const float32x4_t p = vaddq_f32(vfmaq_f32(r, y, vmulq_f32(r, r)), vdupq_n_f32(1.0f));
    const int32x4_t k = vcvtq_s32_f32(n), k1 = vshrq_n_s32(k, 1);
    const int32x4_t bias = vdupq_n_s32(127);
    const float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(k1, bias), 23));
    const float32x4_t s2 =
        vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vsubq_s32(k, k1), bias), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}

static inline float32x4_t sw_swiglu4(float32x4_t g, float32x4_t u)
{
    const float32x4_t e = sw_exp4(vnegq_f32(g));
    return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), e)), u);
}

void tensor_swiglu_neon(const float *g, const float *u, float *h, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(h + i, sw_swiglu4(vld1q_f32(g + i), vld1q_f32(u + i)));
    if (i < n) {
        float gt[4] = {0}, ut[4] = {0}, ht[4];
        memcpy(gt, g + i, (size_t)(n - i) * sizeof *gt);
        memcpy(ut, u + i, (size_t)(n - i) * sizeof *ut);
        vst1q_f32(ht, sw_swiglu4(vld1q_f32(gt), vld1q_f32(ut)));
        memcpy(h + i, ht, (size_t)(n - i) * sizeof *ht);
    }
}
#endif

void tensor_swiglu(const float *g, const float *u, float *h, int64_t n)
{
    tensor_kernels_get()->swiglu(g, u, h, n);
}
