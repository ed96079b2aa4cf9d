/*
 * dot_k_avx2.c - AVX2 + FMA + F16C kernels for the K-quant and FP8 types: Q4_K x Q8_K,
 * Q6_K x Q8_K and FP8_E4M3 x Q8_0 dot products, and Q8_K activation quantization. Each is
 * bit-identical to its scalar reference (dot_k.c, fp8.c, quant_k.c): integer parts are exact,
 * and the float steps are the reference's, in the reference's order.
 *
 * Only these functions are compiled for AVX2 (per-function target attributes); dot.c calls
 * them only when tensor_avx2_usable(). On other architectures this file is empty. Does not
 * own dispatch (dot.c) or the Q8_0/F16 kernels (dot_avx2.c).
 *
 * The K-quant references keep eight int32 lanes per super-block, lane l summing the
 * elements whose index is l mod 8 (ggml's order). maddubs adds neighbouring bytes, so both
 * operands are first permuted (kq_lane_order) so that neighbours share a lane class: after
 * it, 16-bit word 2k and 2k+1 of a 32-element group belong to class k, and madd_epi16 with
 * the sub-block scales leaves class k's sum in int32 lane k.
 */
#include "tensor/tensor_int.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* a contracted mul+add would round differently from the refs */
#endif

#define KQ_AVX2_FN __attribute__((target("avx2,fma,f16c")))

/* Reorders 32 bytes (elements e0..e31) into
 *   low 128 bits:  e0 e8 e16 e24  e1 e9 e17 e25  e2 e10 e18 e26  e3 e11 e19 e27
 *   high 128 bits: e4 e12 e20 e28 ... e7 e15 e23 e31
 * so byte pairs (2m, 2m+1) hold two elements of the same class i % 8, 16-bit word m of the
 * low half is class m/2, of the high half class 4 + m/2; and words 2k, 2k+1 hold elements
 * from the first and the second 16 respectively (Q6_K's two scales per 32). */
KQ_AVX2_FN static inline __m256i kq_lane_order(__m256i v)
{
    const __m256i dwords = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i bytes = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0,
                                           4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(v, dwords), bytes);
}

KQ_AVX2_FN static inline __m256i kq_load(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* sums[l] += d * lane[l] for the eight lanes, then (at the end) the lanes added in order. */
KQ_AVX2_FN static inline __m256 kq_accumulate(__m256 sums, __m256i lane, float d)
{
    return _mm256_add_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lane)));
}

KQ_AVX2_FN static inline float kq_finish(float sumf, __m256 sums)
{
    _Alignas(32) float l[8];
    _mm256_store_ps(l, sums);
    for (int k = 0; k < 8; k++) sumf += l[k];
    return sumf;
}

/* ---- Q4_K ---------------------------------------------------------------------------- */

/* The 6-bit scales (sc[0..7]) and mins (m[0..7]) of a Q4_K block as bytes: the layout of
 * tensor_q4_K_scale_min, unpacked four at a time with 32-bit masks. */
static inline void kq_q4_K_unpack(const uint8_t *packed, uint8_t sc[8], uint8_t m[8])
{
    uint32_t u[3];
    memcpy(u, packed, 12);
    const uint32_t lo6 = 0x3f3f3f3fu, lo4 = 0x0f0f0f0fu, top2 = 0x03030303u;
    const uint32_t s_lo = u[0] & lo6, m_lo = u[1] & lo6;
    const uint32_t s_hi = (u[2] & lo4) | (((u[0] >> 6) & top2) << 4);
    const uint32_t m_hi = ((u[2] >> 4) & lo4) | (((u[1] >> 6) & top2) << 4);
    memcpy(sc, &s_lo, 4);
    memcpy(sc + 4, &s_hi, 4);
    memcpy(m, &m_lo, 4);
    memcpy(m + 4, &m_hi, 4);
}

/* sum over j of m[j] * (bsums[2j] + bsums[2j+1]), exact. */
KQ_AVX2_FN static inline int32_t kq_q4_K_mins(const int16_t *bsums, const uint8_t m[8])
{
    int64_t m8;
    memcpy(&m8, m, 8);
    const __m128i pairs = _mm_shuffle_epi8(
        _mm_cvtsi64_si128(m8), _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
    const __m256i mp = _mm256_madd_epi16(kq_load(bsums), _mm256_cvtepu8_epi16(pairs));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(mp), _mm256_extracti128_si256(mp, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

KQ_AVX2_FN float tensor_dot_q4_K_avx2(const void *w, const void *act, int64_t n)
{
    const block_q4_K *x = w;
    const block_q8_K *y = act;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    assert(n % QK_K == 0);
    __m256 sums = _mm256_setzero_ps();
    float sumf = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        uint8_t sc[8], m[8];
        kq_q4_K_unpack(x[b].scales, sc, m);
        int64_t sc8;
        memcpy(&sc8, sc, 8);
        /* pshufb with byte j, then 0x80 (zero) in every word broadcasts sc[j] as int16. */
        const __m256i scv = _mm256_broadcastsi128_si256(_mm_cvtsi64_si128(sc8));
        __m256i lane = _mm256_setzero_si256();
        for (int g = 0; g < QK_K / 64; g++) {
            /* Byte l of qs[32g..] holds element l of sub-block 2g (low nibble) and of 2g+1
             * (high), so one reordering serves both. */
            const __m256i raw = kq_lane_order(kq_load(x[b].qs + 32 * g));
            const __m256i lo = _mm256_and_si256(raw, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            const __m256i y0 = kq_lane_order(kq_load(y[b].qs + 64 * g));
            const __m256i y1 = kq_lane_order(kq_load(y[b].qs + 64 * g + 32));
            const __m256i s0 =
                _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(0x8000 | (2 * g))));
            const __m256i s1 =
                _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(0x8000 | (2 * g + 1))));
            /* Nibbles are unsigned and |q8| <= 127: pair sums <= 2*15*127, no saturation. */
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s0);
            const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s1);
            lane = _mm256_add_epi32(lane, _mm256_add_epi32(p0, p1));
        }
        sums = kq_accumulate(sums, lane, _cvtsh_ss(x[b].d) * y[b].d);
        const float dmin = _cvtsh_ss(x[b].dmin) * y[b].d;
        const float t = dmin * (float)kq_q4_K_mins(y[b].bsums, m);
        sumf -= t;
    }
    return kq_finish(sumf, sums);
}

/* ---- Q6_K ---------------------------------------------------------------------------- */

KQ_AVX2_FN float tensor_dot_q6_K_avx2(const void *w, const void *act, int64_t n)
{
    const block_q6_K *x = w;
    const block_q8_K *y = act;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    const __m256i m32 = _mm256_set1_epi8(32);
    assert(n % QK_K == 0);
    __m256 sums = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        /* The 16 scales as int16: dword g holds (scale 2g, scale 2g+1), the pair madd needs
         * for group g of 32 (first 16, second 16). */
        const __m256i scv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[b].scales));
        __m256i lane = _mm256_setzero_si256();
        for (int h = 0; h < QK_K / 128; h++) {
            const __m256i ql0 = kq_lane_order(kq_load(x[b].ql + 64 * h));
            const __m256i ql1 = kq_lane_order(kq_load(x[b].ql + 64 * h + 32));
            const __m256i qh = kq_lane_order(kq_load(x[b].qh + 32 * h));
            /* The four groups of 32 of this half: low 4 bits from ql0/ql1 nibbles, high 2 bits
             * from successive bit pairs of qh. */
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
            q[1] = _mm256_or_si256(
                _mm256_and_si256(ql1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
            q[2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
            q[3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
            for (int c = 0; c < 4; c++) {
                const int g = 4 * h + c;
                const __m256i a = _mm256_sub_epi8(q[c], m32);
                const __m256i yq = kq_lane_order(kq_load(y[b].qs + 32 * g));
                /* |a| <= 32, |q8| <= 127: pair sums <= 8128, no saturation. */
                const __m256i p =
                    _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(yq, a));
                const __m256i s = _mm256_permutevar8x32_epi32(scv, _mm256_set1_epi32(g));
                lane = _mm256_add_epi32(lane, _mm256_madd_epi16(p, s));
            }
        }
        sums = kq_accumulate(sums, lane, _cvtsh_ss(x[b].d) * y[b].d);
    }
    return kq_finish(0.0f, sums);
}

/* ---- FP8_E4M3 ------------------------------------------------------------------------- */

/* The int32 sum over one block of units(w[j]) * q[j] (see tensor_fp8_units), in 8 lanes.
 * Each weight is M * 2^s units with M = 8 + mantissa (normal) or the mantissa (subnormal),
 * s = max(exponent - 1, 0): the products M * q fit in 16 bits, and madd_epi16 with 2^s
 * (<= 2^14) widens and scales them exactly. */
KQ_AVX2_FN static inline __m256i fp8_block_sum(const uint8_t *wq, const int8_t *q)
{
    const __m256i b = kq_load(wq), y = kq_load(q);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i e = _mm256_and_si256(_mm256_srli_epi16(b, 3), _mm256_set1_epi8(0x0f));
    const __m256i normal = _mm256_cmpgt_epi8(e, zero);
    const __m256i mant = _mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi8(7)),
                                         _mm256_and_si256(normal, _mm256_set1_epi8(8)));
    const __m256i s = _mm256_subs_epu8(e, _mm256_set1_epi8(1));
    /* 2^s as two bytes per element, looked up from s (0..14). */
    const __m256i pow_lo = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                                            2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i pow_hi = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, -128, 0,
                                            0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, -128);
    const __m256i plo = _mm256_shuffle_epi8(pow_lo, s), phi = _mm256_shuffle_epi8(pow_hi, s);
    const __m256i sy = _mm256_sign_epi8(y, b); /* the weight's sign moved onto q */
    /* Widen within 128-bit lanes (unpack lo/hi pick the same elements for every operand). */
    const __m256i m_lo = _mm256_unpacklo_epi8(mant, zero), m_hi = _mm256_unpackhi_epi8(mant, zero);
    const __m256i y_lo = _mm256_srai_epi16(_mm256_unpacklo_epi8(sy, sy), 8);
    const __m256i y_hi = _mm256_srai_epi16(_mm256_unpackhi_epi8(sy, sy), 8);
    const __m256i p_lo = _mm256_unpacklo_epi8(plo, phi), p_hi = _mm256_unpackhi_epi8(plo, phi);
    const __m256i a = _mm256_madd_epi16(_mm256_mullo_epi16(m_lo, y_lo), p_lo);
    const __m256i c = _mm256_madd_epi16(_mm256_mullo_epi16(m_hi, y_hi), p_hi);
    return _mm256_add_epi32(a, c);
}

/* Lane k of the result: the sum of the eight lanes of v[k]. */
KQ_AVX2_FN static inline __m256i fp8_hsum8(const __m256i v[8])
{
    const __m256i a =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i c =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20),
                            _mm256_permute2x128_si256(a, c, 0x31));
}

/* Blocks b0 .. b0+g-1 (g <= 8) in lanes 0 .. g-1: (d_w * d_x) * (isum * 2^-9), the other
 * lanes 0. */
KQ_AVX2_FN static inline __m256 fp8_block_terms(const block_fp8_e4m3 *x, const block_q8_0 *y,
                                                int64_t b0, int g)
{
    __m256i part[8];
    _Alignas(16) uint16_t hw[8] = {0}, hx[8] = {0}; /* fp16 0: unused lanes get scale 0 */
    for (int k = 0; k < 8; k++) {
        if (k >= g) {
            part[k] = _mm256_setzero_si256();
            continue;
        }
        part[k] = fp8_block_sum(x[b0 + k].qs, y[b0 + k].qs);
        hw[k] = x[b0 + k].d;
        hx[k] = y[b0 + k].d;
    }
    const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)hw)),
                                       _mm256_cvtph_ps(_mm_load_si128((const __m128i *)hx)));
    const __m256 units =
        _mm256_mul_ps(_mm256_cvtepi32_ps(fp8_hsum8(part)), _mm256_set1_ps(0x1p-9f));
    return _mm256_mul_ps(scale, units);
}

KQ_AVX2_FN float tensor_dot_fp8_avx2(const void *w, const void *act, int64_t n)
{
    const block_fp8_e4m3 *x = w;
    const block_q8_0 *y = act;
    assert(n % QK_FP8 == 0);
    const int64_t nb = n / QK_FP8;
    __m256 acc = _mm256_setzero_ps();
    int64_t b0 = 0;
    for (; b0 + 8 <= nb; b0 += 8) acc = _mm256_add_ps(acc, fp8_block_terms(x, y, b0, 8));
    if (b0 < nb) acc = _mm256_add_ps(acc, fp8_block_terms(x, y, b0, (int)(nb - b0)));
    return kq_finish(0.0f, acc);
}

/* ---- Q8_K activations ------------------------------------------------------------------- */

KQ_AVX2_FN static inline float kq_hmax(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* The first element of xb[0..QK_K) whose magnitude is amax (it exists: amax is one of them). */
KQ_AVX2_FN static inline float kq_first_with_abs(const float *xb, float amax)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), target = _mm256_set1_ps(amax);
    for (int k = 0; k < QK_K; k += 8) {
        const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + k));
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(a, target, _CMP_EQ_OQ));
        if (mask) return xb[k + __builtin_ctz((unsigned)mask)];
    }
    return amax;
}

KQ_AVX2_FN void tensor_quantize_row_q8_K_avx2(const float *x, block_q8_K *y, int64_t n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    assert(n % QK_K == 0);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *xb = x + b * QK_K;
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < QK_K; k += 8)
            /* max(|x|, amax) keeps amax when |x| is NaN, as the reference's `>` does */
            amax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + k)), amax);
        const float am = kq_hmax(amax);
        if (!am) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.f / kq_first_with_abs(xb, am);
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int k = 0; k < QK_K; k += 32) {
            __m256i q[4];
            for (int i = 0; i < 4; i++) {
                const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xb + k + 8 * i), vs);
                /* Ties to even, as the reference's 1.5 * 2^23 trick; |v| <= 127 + rounding. */
                q[i] = _mm256_cvtps_epi32(
                    _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            }
            /* packs saturate to 127 like the reference's min(127, v); they work within
             * 128-bit lanes, which the permutation undoes. */
            const __m256i q16a = _mm256_packs_epi32(q[0], q[1]);
            const __m256i q16b = _mm256_packs_epi32(q[2], q[3]);
            const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16a, q16b), order);
            _mm256_storeu_si256((__m256i *)(y[b].qs + k), q8);
            /* bsums of the two 16s: bias the bytes to unsigned, sum absolute differences
             * against 0 per 8 bytes, remove the bias. */
            const __m256i biased = _mm256_xor_si256(q8, _mm256_set1_epi8(-128));
            const __m256i sad = _mm256_sad_epu8(biased, _mm256_setzero_si256());
            y[b].bsums[k / 16] =
                (int16_t)(_mm256_extract_epi64(sad, 0) + _mm256_extract_epi64(sad, 1) - 16 * 128);
            y[b].bsums[k / 16 + 1] =
                (int16_t)(_mm256_extract_epi64(sad, 2) + _mm256_extract_epi64(sad, 3) - 16 * 128);
        }
        y[b].d = 1 / iscale;
    }
}

void tensor_act_q8_K_avx2(const float *x, void *y, int64_t n)
{
    tensor_quantize_row_q8_K_avx2(x, y, n);
}

#else
typedef int tensor_dot_k_avx2_unused; /* ISO C: a translation unit must not be empty */
#endif
