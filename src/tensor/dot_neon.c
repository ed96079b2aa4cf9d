/*
 * dot_neon.c - the NEON (Advanced SIMD) kernels of 64-bit Arm for ARMv8.0 (the Raspberry Pi
 * 4B's Cortex-A72): dot products for F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K and FP8-E4M3
 * weights, Q8_0 activation quantization and float-to-half row conversion; and the CPU
 * feature checks (getauxval's HWCAP bits). Each kernel has a scalar twin with the same
 * signature (dot.c, dot_k.c, fp8.c, quant.c, convert.c); tests compare them.
 *
 * Does not own: the sdot kernels (dot_neon_dotprod.c), dispatch (dot.c). Called through the
 * kernel tables. On other architectures this file is empty.
 *
 * The quantized kernels and the converters give the reference's bits for every length:
 * integer sums per block are exact in any order, and the float steps (scale products, block
 * terms, the lane sums of the K-quants and FP8) are the reference's operations in the
 * reference's order. Only the float dot products (F32, F16, BF16) sum in lanes and agree
 * with their references to rounding, as the x86 ones do.
 */
#include "tensor/tensor_int.h"

#if defined(__aarch64__)

#include "tensor/dot_neon_int.h"

#include <sys/auxv.h>

#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

bool tensor_neon_usable(void)
{
    return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
}

bool tensor_neon_dotprod_usable(void)
{
    return tensor_neon_usable() && (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}

/* ---- float dot products ---------------------------------------------------------------- */

typedef enum neon_float { NEON_F32, NEON_F16, NEON_BF16 } neon_float;

/* Elements i..i+3 of a row of type t as floats (a constant t folds the switch away). */
NEON_INLINE float32x4_t neon_load4(const void *row, int64_t i, neon_float t)
{
    switch (t) {
    case NEON_F16:
        return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)row + i)));
    case NEON_BF16: /* bf16 is the top half of an f32 */
        return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)row + i), 16));
    default:
        return vld1q_f32((const float *)row + i);
    }
}

NEON_INLINE float neon_load1(const void *row, int64_t i, neon_float t)
{
    switch (t) {
    case NEON_F16:
        return tensor_f16_to_f32(((const uint16_t *)row)[i]);
    case NEON_BF16:
        return tensor_bf16_to_f32(((const uint16_t *)row)[i]);
    default:
        return ((const float *)row)[i];
    }
}

/* Four accumulators hide the FMA latency; the 4-wide loop and the scalar loop take tails. */
NEON_INLINE float neon_dot_float(const void *w, const void *act, int64_t n, neon_float t)
{
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, neon_load4(w, i, t), neon_load4(act, i, t));
        s1 = vfmaq_f32(s1, neon_load4(w, i + 4, t), neon_load4(act, i + 4, t));
        s2 = vfmaq_f32(s2, neon_load4(w, i + 8, t), neon_load4(act, i + 8, t));
        s3 = vfmaq_f32(s3, neon_load4(w, i + 12, t), neon_load4(act, i + 12, t));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, neon_load4(w, i, t), neon_load4(act, i, t));
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++) {
        const float p = neon_load1(w, i, t) * neon_load1(act, i, t);
        sum += p;
    }
    return sum;
}

float tensor_dot_f32_neon(const void *w, const void *act, int64_t n)
{
    return neon_dot_float(w, act, n, NEON_F32);
}

float tensor_dot_f16_neon(const void *w, const void *act, int64_t n)
{
    return neon_dot_float(w, act, n, NEON_F16);
}

float tensor_dot_bf16_neon(const void *w, const void *act, int64_t n)
{
    return neon_dot_float(w, act, n, NEON_BF16);
}

/* ---- blocks of 32 with an fp16 scale: Q8_0, Q4_0, FP8 weights by Q8_0 activations ------- */

/* Sums of x[j]*y[j] over 32 signed bytes (x0|x1 by y0|y1) in four int32 lanes. Each int16
 * lane adds two products of at most 128 * 127 in magnitude, so it cannot overflow. */
NEON_INLINE int32x4_t neon_mul_sum_i8(int8x16_t x0, int8x16_t x1, int8x16_t y0, int8x16_t y1)
{
    const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(x0), vget_low_s8(y0)), x0, y0);
    const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(x1), vget_low_s8(y1)), x1, y1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

NEON_INLINE int32x4_t neon_block_q8_0(const void *w, const block_q8_0 *y, int64_t b)
{
    const block_q8_0 *x = (const block_q8_0 *)w + b;
    return neon_mul_sum_i8(vld1q_s8(x->qs), vld1q_s8(x->qs + 16), vld1q_s8(y[b].qs),
                           vld1q_s8(y[b].qs + 16));
}

NEON_INLINE int32x4_t neon_block_q4_0(const void *w, const block_q8_0 *y, int64_t b)
{
    int8x16_t lo, hi;
    neon_unpack_q4_0(((const block_q4_0 *)w)[b].qs, &lo, &hi);
    return neon_mul_sum_i8(lo, hi, vld1q_s8(y[b].qs), vld1q_s8(y[b].qs + 16));
}

/* sign * (8 + m) * 2^(e-1) (or sign * m when e = 0) times q, summed exactly: the E4M3 units
 * of tensor_fp8_units. The signed mantissa times q fits int16 (15 * 128); the power of two
 * (at most 2^14) multiplies it while widening to int32. */
NEON_INLINE int32x4_t neon_fp8_mul_sum(uint8x16_t b, int8x16_t q, int32x4_t acc)
{
    const uint8x16_t e = vandq_u8(vshrq_n_u8(b, 3), vdupq_n_u8(0x0f));
    const uint8x16_t normal = vandq_u8(vcgtq_u8(e, vdupq_n_u8(0)), vdupq_n_u8(8));
    const uint8x16_t mant = vorrq_u8(vandq_u8(b, vdupq_n_u8(7)), normal);
    const int8x16_t neg = vreinterpretq_s8_u8(vtstq_u8(b, vdupq_n_u8(0x80))); /* -1 or 0 */
    const int8x16_t smant = vsubq_s8(veorq_s8(vreinterpretq_s8_u8(mant), neg), neg);
    const int8x16_t shift = vreinterpretq_s8_u8(vqsubq_u8(e, vdupq_n_u8(1)));
    const int16x8_t pow_lo = vshlq_s16(vdupq_n_s16(1), vmovl_s8(vget_low_s8(shift)));
    const int16x8_t pow_hi = vshlq_s16(vdupq_n_s16(1), vmovl_high_s8(shift));
    const int16x8_t p_lo = vmull_s8(vget_low_s8(smant), vget_low_s8(q));
    const int16x8_t p_hi = vmull_high_s8(smant, q);
    acc = vmlal_s16(acc, vget_low_s16(p_lo), vget_low_s16(pow_lo));
    acc = vmlal_high_s16(acc, p_lo, pow_lo);
    acc = vmlal_s16(acc, vget_low_s16(p_hi), vget_low_s16(pow_hi));
    return vmlal_high_s16(acc, p_hi, pow_hi);
}

NEON_INLINE int32x4_t neon_block_fp8(const void *w, const block_q8_0 *y, int64_t b)
{
    const block_fp8_e4m3 *x = (const block_fp8_e4m3 *)w + b;
    const int32x4_t acc = neon_fp8_mul_sum(vld1q_u8(x->qs), vld1q_s8(y[b].qs), vdupq_n_s32(0));
    return neon_fp8_mul_sum(vld1q_u8(x->qs + 16), vld1q_s8(y[b].qs + 16), acc);
}

float tensor_dot_q8_0_neon(const void *w, const void *act, int64_t n)
{
    assert(n % QK8_0 == 0);
    return neon_dot_blocks(w, sizeof(block_q8_0), act, n / QK8_0, neon_block_q8_0);
}

float tensor_dot_q4_0_neon(const void *w, const void *act, int64_t n)
{
    assert(n % QK4_0 == 0);
    return neon_dot_blocks(w, sizeof(block_q4_0), act, n / QK4_0, neon_block_q4_0);
}

/* Lanes (block b0 + k's term in lane k, +0 past g) of blocks b0 .. b0+g-1 of an FP8 row. */
NEON_INLINE float32x4_t neon_fp8_terms(const void *w, const block_q8_0 *y, int64_t b0, int g)
{
    const float32x4_t units = vcvtq_f32_s32(neon_isums4(w, y, b0, g, neon_block_fp8));
    return neon_scaled4(w, sizeof(block_fp8_e4m3), y, b0, g, vmulq_n_f32(units, 0x1p-9f));
}

/* fp8.c's order: block b's term (d_w*d_x) * (isum * 2^-9) goes to lane b % 8, and the eight
 * lanes are added in order at the end. Blocks come four at a time, so a group of four fills
 * lanes 0-3 or 4-7; the +0 terms past the row's end leave the lanes as they are. */
float tensor_dot_fp8_neon(const void *w, const void *act, int64_t n)
{
    assert(n % QK_FP8 == 0);
    const int64_t nb = n / QK_FP8;
    float32x4_t lanes[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        const int h = (int)((b / 4) % 2);
        lanes[h] = vaddq_f32(lanes[h], neon_fp8_terms(w, act, b, 4));
    }
    if (b < nb) {
        const int h = (int)((b / 4) % 2);
        lanes[h] = vaddq_f32(lanes[h], neon_fp8_terms(w, act, b, (int)(nb - b)));
    }
    float l[8], sum = 0.0f;
    vst1q_f32(l, lanes[0]);
    vst1q_f32(l + 4, lanes[1]);
    for (int k = 0; k < 8; k++) sum += l[k];
    return sum;
}

/* ---- K-quants: super-blocks of 256 by Q8_K activations ----------------------------------- */

/* dot_k.c's order: lane l (0..7) sums scale * w[i] * q[i] over the elements i = l mod 8 of a
 * super-block, exactly, in int32; sums[l] += (d_w * d_x) * lane[l] in float; the eight lanes
 * are added to the rest (Q4_K's minus the mins) in order at the end. A 16-byte vector starts
 * at a multiple of 8, so its byte k belongs to lane k % 8: the low and high halves' products
 * add up in int16 lane k, and then widen into lanes[0] (0..3) and lanes[1] (4..7). */
NEON_INLINE void neon_k_lanes(int32x4_t lanes[2], const int8x16_t *w, const int8_t *q, int nvec,
                              int16_t scale)
{
    /* |w| <= 32 and |q| <= 128: four products per int16 lane stay below 2^15. */
    int16x8_t p = vdupq_n_s16(0);
    for (int v = 0; v < nvec; v++) {
        const int8x16_t qv = vld1q_s8(q + 16 * v);
        p = vmlal_s8(p, vget_low_s8(w[v]), vget_low_s8(qv));
        p = vmlal_high_s8(p, w[v], qv);
    }
    lanes[0] = vmlal_n_s16(lanes[0], vget_low_s16(p), scale);
    lanes[1] = vmlal_high_n_s16(lanes[1], p, scale);
}

/* sums[l] += d * (float)lane[l], as dot_k_accumulate does. */
NEON_INLINE void neon_k_accumulate(float32x4_t sums[2], const int32x4_t lanes[2], float d)
{
    for (int h = 0; h < 2; h++)
        sums[h] = vaddq_f32(sums[h], vmulq_n_f32(vcvtq_f32_s32(lanes[h]), d));
}

NEON_INLINE float neon_k_finish(float sumf, const float32x4_t sums[2])
{
    float l[8];
    vst1q_f32(l, sums[0]);
    vst1q_f32(l + 4, sums[1]);
    for (int k = 0; k < 8; k++) sumf += l[k];
    return sumf;
}

float tensor_dot_q4_K_neon(const void *w, const void *act, int64_t n)
{
    const block_q4_K *x = w;
    const block_q8_K *y = act;
    assert(n % QK_K == 0);
    float32x4_t sums[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    float sumf = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32x4_t lanes[2] = {vdupq_n_s32(0), vdupq_n_s32(0)};
        int32_t summs = 0;
        /* qs[32g + l] holds element 64g + l (low nibble) and 64g + 32 + l (high nibble):
         * sub-block 2g is the low nibbles, 2g + 1 the high ones. */
        for (int g = 0; g < QK_K / 64; g++) {
            const uint8x16_t r0 = vld1q_u8(x[b].qs + 32 * g), r1 = vld1q_u8(x[b].qs + 32 * g + 16);
            const uint8x16_t m4 = vdupq_n_u8(0x0f);
            const int8x16_t lo[2] = {vreinterpretq_s8_u8(vandq_u8(r0, m4)),
                                     vreinterpretq_s8_u8(vandq_u8(r1, m4))};
            const int8x16_t hi[2] = {vreinterpretq_s8_u8(vshrq_n_u8(r0, 4)),
                                     vreinterpretq_s8_u8(vshrq_n_u8(r1, 4))};
            for (int s = 0; s < 2; s++) {
                const int j = 2 * g + s;
                uint8_t sc, m;
                tensor_q4_K_scale_min(x[b].scales, j, &sc, &m);
                neon_k_lanes(lanes, s ? hi : lo, y[b].qs + 32 * j, 2, sc);
                summs += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
            }
        }
        neon_k_accumulate(sums, lanes, tensor_f16_to_f32(x[b].d) * y[b].d);
        const float dmin = tensor_f16_to_f32(x[b].dmin) * y[b].d;
        const float t = dmin * (float)summs;
        sumf -= t;
    }
    return neon_k_finish(sumf, sums);
}

/* Elements 128h + 32k + c .. +15 (k = 0..3, c = 0 or 16) of a Q6_K super-block as q - 32: the
 * low 4 bits from ql's nibbles, the high 2 from qh's bit pairs (tensor.h's layout). */
NEON_INLINE void neon_unpack_q6_K(const block_q6_K *x, int h, int c, int8x16_t out[4])
{
    const uint8_t *ql = x->ql + 64 * h + c, *qh = x->qh + 32 * h + c;
    const uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 32), hb = vld1q_u8(qh);
    const uint8x16_t m4 = vdupq_n_u8(0x0f), m3 = vdupq_n_u8(3);
    const uint8x16_t q[4] = {
        vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hb, m3), 4)),
        vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m3), 4)),
        vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m3), 4)),
        vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4)),
    };
    for (int k = 0; k < 4; k++) out[k] = vsubq_s8(vreinterpretq_s8_u8(q[k]), vdupq_n_s8(32));
}

float tensor_dot_q6_K_neon(const void *w, const void *act, int64_t n)
{
    const block_q6_K *x = w;
    const block_q8_K *y = act;
    assert(n % QK_K == 0);
    float32x4_t sums[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (int64_t b = 0; b < n / QK_K; b++) {
        int32x4_t lanes[2] = {vdupq_n_s32(0), vdupq_n_s32(0)};
        for (int h = 0; h < QK_K / 128; h++)
            for (int c = 0; c < 32; c += 16) {
                int8x16_t q6[4];
                neon_unpack_q6_K(&x[b], h, c, q6);
                for (int k = 0; k < 4; k++) {
                    const int e = 128 * h + 32 * k + c; /* first element: sub-block e / 16 */
                    neon_k_lanes(lanes, &q6[k], y[b].qs + e, 1, x[b].scales[e / 16]);
                }
            }
        neon_k_accumulate(sums, lanes, tensor_f16_to_f32(x[b].d) * y[b].d);
    }
    return neon_k_finish(0.0f, sums);
}

/* ---- activation conversion --------------------------------------------------------------- */

/* quant.c's tensor_quantize_act_q8_0_ref: amax (maxnm ignores NaN as fmaxf does), the same
 * scale and id, q = x * id rounded to nearest even (vcvtnq), which stays within +-127. */
void tensor_act_q8_0_neon(const float *x, void *dst, int64_t n)
{
    block_q8_0 *y = dst;
    assert(n % QK8_0 == 0);
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float *xb = x + b * QK8_0;
        float32x4_t v[8], amax = vdupq_n_f32(0.0f);
        for (int k = 0; k < 8; k++) {
            v[k] = vld1q_f32(xb + 4 * k);
            amax = vmaxnmq_f32(amax, vabsq_f32(v[k]));
        }
        const float m = vmaxnmvq_f32(amax);
        const float id = m != 0.0f ? 127.0f / m : 0.0f;
        y[b].d = tensor_f32_to_f16(m / 127.0f);
        for (int k = 0; k < 8; k += 4) {
            int16x8_t h[2];
            for (int i = 0; i < 2; i++) {
                const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[k + 2 * i], id));
                const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(v[k + 2 * i + 1], id));
                h[i] = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
            }
            vst1q_s8(y[b].qs + 4 * k, vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])));
        }
    }
}

/* FCVTN rounds to nearest even, makes subnormals, overflows to infinity and quiets NaNs
 * keeping the top payload bits: tensor_f32_to_f16's results. */
void tensor_act_f16_neon(const float *x, void *dst, int64_t n)
{
    uint16_t *y = dst;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++) y[i] = tensor_f32_to_f16(x[i]);
}

#else
typedef int tensor_dot_neon_unused; /* ISO C: a translation unit must not be empty */
#endif
