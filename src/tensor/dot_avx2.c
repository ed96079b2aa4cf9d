/*
 * dot_avx2.c - the AVX2 + FMA + F16C kernels: dot products for F32, F16, BF16, Q8_0 and
 * Q4_0 weights, activation quantization to Q8_0 and float-to-half row conversion. Each has
 * a scalar twin in dot.c / quant.c / convert.c with the same signature; tests compare them.
 *
 * Only these functions are compiled for AVX2 (per-function target attributes), so the rest
 * of the library stays generic x86-64; dot.c calls them only when tensor_avx2_usable().
 * On other architectures this file is empty. Does not own dispatch (dot.c).
 *
 * The activation quantizer and the half conversion give bit-identical results to their
 * references (same IEEE operations, same rounding). The float dot products sum in a
 * different order than the references (8 lanes, then a horizontal add), so they agree to
 * rounding; the quantized ones round each block's term as the reference does.
 */
#include "tensor/tensor_int.h"

#if defined(__x86_64__)

#include <cpuid.h>
#include <immintrin.h>

#define AVX2_FN __attribute__((target("avx2,fma,f16c")))

/* CPUID leaf 1, ECX bit 29. Asked directly because clang's __builtin_cpu_supports does not
 * know "f16c". The OS saving YMM state is implied by the AVX2 check that goes with it. */
bool tensor_x86_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

bool tensor_avx2_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && tensor_x86_has_f16c();
}

AVX2_FN static inline float avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_FN static inline __m256 avx2_load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

AVX2_FN static inline __m256 avx2_load_bf16(const uint16_t *p)
{
    /* bf16 is the top half of an f32: widen to 32 bits and shift into place. */
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

AVX2_FN static inline float avx2_f16(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* ---- float dot products ---------------------------------------------------------------- */

/* Four accumulators hide the FMA latency; the 8-wide loop and the scalar loop take tails. */
AVX2_FN float tensor_dot_f32_avx2(const void *w, const void *act, int64_t n)
{
    const float *a = w, *b = act;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float sum = avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

AVX2_FN float tensor_dot_f16_avx2(const void *w, const void *act, int64_t n)
{
    const uint16_t *a = w, *b = act;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(avx2_load_f16(a + i), avx2_load_f16(b + i), s0);
        s1 = _mm256_fmadd_ps(avx2_load_f16(a + i + 8), avx2_load_f16(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(avx2_load_f16(a + i + 16), avx2_load_f16(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(avx2_load_f16(a + i + 24), avx2_load_f16(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(avx2_load_f16(a + i), avx2_load_f16(b + i), s0);
    float sum = avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) sum += avx2_f16(a[i]) * avx2_f16(b[i]);
    return sum;
}

AVX2_FN float tensor_dot_bf16_avx2(const void *w, const void *act, int64_t n)
{
    const uint16_t *a = w, *b = act;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(avx2_load_bf16(a + i), avx2_load_bf16(b + i), s0);
        s1 = _mm256_fmadd_ps(avx2_load_bf16(a + i + 8), avx2_load_bf16(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(avx2_load_bf16(a + i + 16), avx2_load_bf16(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(avx2_load_bf16(a + i + 24), avx2_load_bf16(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(avx2_load_bf16(a + i), avx2_load_bf16(b + i), s0);
    float sum = avx2_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) sum += tensor_bf16_to_f32(a[i]) * tensor_bf16_to_f32(b[i]);
    return sum;
}

/* ---- quantized dot products -------------------------------------------------------------- */

/* Eight int32 partial sums of x[j]*y[j] over 32 signed bytes. maddubs multiplies unsigned
 * by signed bytes, so x's sign moves onto y: |x| * (y * sign(x)). |x| <= 128 and |y| <= 127
 * (activations never hold -128), so the pairwise int16 sums cannot saturate. */
AVX2_FN static inline __m256i avx2_mul_sum_i8(__m256i x, __m256i y)
{
    const __m256i ax = _mm256_sign_epi8(x, x);
    const __m256i sy = _mm256_sign_epi8(y, x);
    const __m256i pairs = _mm256_maddubs_epi16(ax, sy);
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

/* Q4_0 nibbles as 32 signed bytes in element order: low nibbles are elements 0..15, high
 * nibbles 16..31, each minus 8. */
AVX2_FN static inline __m256i avx2_unpack_q4_0(const uint8_t *qs)
{
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, m4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
    const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    return _mm256_sub_epi8(q, _mm256_set1_epi8(8));
}

/* The eight lanes of each of v[0..7] summed: lane k of the result is the sum of v[k].
 * Integer adds are exact, so the pairing order does not matter. */
AVX2_FN static inline __m256i avx2_hsum8_epi32(const __m256i v[8])
{
    /* After two rounds of hadd, lane group 0 holds halves of sums 0..3 (elements 0-3) and
     * group 1 the other halves (elements 4-7); likewise for 4..7. */
    const __m256i h0123 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i h4567 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                            _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

/* Shared body of the Q8_0 and Q4_0 kernels (q4 is a constant after inlining). Like the
 * scalar reference, each block contributes (d_w*d_x) * (float)isum with isum exact and one
 * rounding per product; groups of 8 blocks are computed side by side in 8 lanes, and the
 * lanes are summed in order at the end. With at most 8 blocks per row this is the scalar
 * reference's exact order, so short rows give bit-identical results: Q8_0 activations turn
 * rounding ties of one ulp into whole steps later on, and staying close to ggml's order
 * keeps logits within 1e-7 of llama.cpp's. */
/* The terms (d_w*d_x) * (float)isum of blocks b0 .. b0+g-1 (g <= 8) in lanes 0 .. g-1, the
 * other lanes 0. q4 selects the weight format (a constant after inlining). */
AVX2_FN static inline __m256 avx2_block_terms(const void *w, const block_q8_0 *y, int64_t b0, int g,
                                              bool q4)
{
    const block_q8_0 *x8 = w;
    const block_q4_0 *x4 = w;
    __m256i part[8];
    uint16_t hw[8] = {0}, hx[8] = {0}; /* half 0 = 0.0: unused lanes get scale 0 */
    for (int k = 0; k < 8; k++) {
        if (k >= g) {
            part[k] = _mm256_setzero_si256();
            continue;
        }
        const int64_t b = b0 + k;
        const __m256i qx =
            q4 ? avx2_unpack_q4_0(x4[b].qs) : _mm256_loadu_si256((const __m256i *)x8[b].qs);
        part[k] = avx2_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)y[b].qs));
        hw[k] = q4 ? x4[b].d : x8[b].d;
        hx[k] = y[b].d;
    }
    const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hw)),
                                       _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hx)));
    return _mm256_mul_ps(scale, _mm256_cvtepi32_ps(avx2_hsum8_epi32(part)));
}

/* Shared body of the Q8_0 and Q4_0 kernels. Like the scalar reference, each block
 * contributes (d_w*d_x) * (float)isum with isum exact and one rounding per product; groups
 * of 8 blocks are computed side by side in 8 lanes, and the lanes are summed in order at
 * the end. With at most 8 blocks per row this is exactly the reference's order. That
 * matters more than it seems: Q8_0 activation quantization turns a one-ulp difference at a
 * rounding tie into a whole step in the next layer, and lane-wise FMA accumulation (the
 * first version) moved qwen3-dense.Q8_0 logits 1e-3 away from llama.cpp's. */
AVX2_FN static inline float avx2_dot_q_q8_0(const void *w, const block_q8_0 *y, int64_t nb, bool q4)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t b0 = 0;
    for (; b0 + 8 <= nb; b0 += 8) acc = _mm256_add_ps(acc, avx2_block_terms(w, y, b0, 8, q4));
    if (b0 < nb) acc = _mm256_add_ps(acc, avx2_block_terms(w, y, b0, (int)(nb - b0), q4));
    _Alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    float sum = 0.0f;
    for (int k = 0; k < 8; k++) sum += lanes[k];
    return sum;
}

AVX2_FN float tensor_dot_q8_0_avx2(const void *w, const void *act, int64_t n)
{
    assert(n % QK8_0 == 0);
    return avx2_dot_q_q8_0(w, act, n / QK8_0, false);
}

AVX2_FN float tensor_dot_q4_0_avx2(const void *w, const void *act, int64_t n)
{
    assert(n % QK4_0 == 0);
    return avx2_dot_q_q8_0(w, act, n / QK4_0, true);
}

/* ---- activation conversion --------------------------------------------------------------- */

AVX2_FN static inline float avx2_hmax(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

AVX2_FN void tensor_quantize_act_q8_0_avx2(const float *x, block_q8_0 *y, int64_t n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    assert(n % QK8_0 == 0);
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float *xb = x + b * QK8_0;
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(xb + 8 * k);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
        }
        const float m = avx2_hmax(amax);
        const float id = m != 0.0f ? 127.0f / m : 0.0f;
        y[b].d = tensor_f32_to_f16(m / 127.0f);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            const __m256 s = _mm256_mul_ps(v[k], _mm256_set1_ps(id));
            const __m256 r = _mm256_round_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q[k] = _mm256_cvtps_epi32(r);
        }
        /* The packs work within 128-bit lanes, leaving 4-byte groups in the order
         * 0,2,4,6,1,3,5,7 of the wanted groups; the permutation puts them back. */
        const __m256i q01 = _mm256_packs_epi32(q[0], q[1]);
        const __m256i q23 = _mm256_packs_epi32(q[2], q[3]);
        const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q01, q23), order);
        _mm256_storeu_si256((__m256i *)y[b].qs, q8);
    }
}

AVX2_FN void tensor_f32_to_f16_row_avx2(const float *x, uint16_t *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(y + i), h);
    }
    for (; i < n; i++) y[i] = tensor_f32_to_f16(x[i]);
}

void tensor_act_f16_avx2(const float *x, void *y, int64_t n)
{
    tensor_f32_to_f16_row_avx2(x, y, n);
}

void tensor_act_q8_0_avx2(const float *x, void *y, int64_t n)
{
    tensor_quantize_act_q8_0_avx2(x, y, n);
}

#else
typedef int tensor_dot_avx2_unused; /* ISO C: a translation unit must not be empty */
#endif
