/*
 * dot_neon_int.h - what the two NEON kernel files share (not for other files): the
 * block-by-block bodies of the Q8_0 / Q4_0 (and FP8) dot products, which take the per-block
 * integer product as a parameter, so that dot_neon.c (ARMv8.0) and dot_neon_dotprod.c
 * (ARMv8.2 sdot, compiled with -march=armv8.2-a+dotprod) differ only in that step.
 * Include only on aarch64.
 */
#ifndef MICA_TENSOR_DOT_NEON_INT_H
#define MICA_TENSOR_DOT_NEON_INT_H

#include "tensor/tensor_int.h"

#include <arm_neon.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* every float step must round as the reference's */
#endif

#define NEON_INLINE static inline __attribute__((always_inline))

/* Partial sums of block b of a weight row times block b of y: four int32 lanes whose total
 * is the block's exact integer dot product. */
typedef int32x4_t (*neon_block_fn)(const void *w, const block_q8_0 *y, int64_t b);

/* Q4_0 nibbles as signed bytes in element order: low nibbles are elements 0..15 (lo), high
 * nibbles 16..31 (hi), each minus 8. */
NEON_INLINE void neon_unpack_q4_0(const uint8_t *qs, int8x16_t *lo, int8x16_t *hi)
{
    const uint8x16_t raw = vld1q_u8(qs);
    const int8x16_t eight = vdupq_n_s8(8);
    *lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0f))), eight);
    *hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight);
}

/* Lane k < g: the integer dot product of block b0 + k; the other lanes 0. */
NEON_INLINE int32x4_t neon_isums4(const void *w, const block_q8_0 *y, int64_t b0, int g,
                                  neon_block_fn block)
{
    int32x4_t p[4];
    for (int k = 0; k < 4; k++) p[k] = k < g ? block(w, y, b0 + k) : vdupq_n_s32(0);
    return vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
}

/* (d_w * d_x) * v for blocks b0 .. b0+g-1 (g <= 4) in lanes 0..g-1, +0 in the others. Every
 * weight block type here starts with its fp16 scale; `stride` is its size. */
NEON_INLINE float32x4_t neon_scaled4(const void *w, size_t stride, const block_q8_0 *y, int64_t b0,
                                     int g, float32x4_t v)
{
    uint16_t dw[4] = {0}, dx[4] = {0}; /* half 0 = 0.0: unused lanes get scale 0 */
    for (int k = 0; k < g; k++) {
        memcpy(&dw[k], (const char *)w + (size_t)(b0 + k) * stride, sizeof dw[k]);
        dx[k] = y[b0 + k].d;
    }
    const float32x4_t scale = vmulq_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dw))),
                                        vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dx))));
    return vmulq_f32(scale, v);
}

/* sum + the terms (d_w*d_x) * (float)isum of blocks b0 .. b0+g-1 (g <= 4), added in order. */
NEON_INLINE float neon_add_terms(float sum, const void *w, size_t stride, const block_q8_0 *y,
                                 int64_t b0, int g, neon_block_fn block)
{
    const float32x4_t isum = vcvtq_f32_s32(neon_isums4(w, y, b0, g, block));
    float t[4];
    vst1q_f32(t, neon_scaled4(w, stride, y, b0, g, isum));
    for (int k = 0; k < g; k++) sum += t[k];
    return sum;
}

/* The reference's Q8_0 / Q4_0 order: each block's term added to one float sum, block after
 * block. Terms come four at a time; only the additions are serial. */
NEON_INLINE float neon_dot_blocks(const void *w, size_t stride, const block_q8_0 *y, int64_t nb,
                                  neon_block_fn block)
{
    float sum = 0.0f;
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) sum = neon_add_terms(sum, w, stride, y, b, 4, block);
    if (b < nb) sum = neon_add_terms(sum, w, stride, y, b, (int)(nb - b), block);
    return sum;
}

#endif
