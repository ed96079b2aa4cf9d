/*
 * dot_neon_dotprod.c - Q8_0 and Q4_0 dot products with ARMv8.2's `sdot` instruction (Cortex-A76
 * and later: Pi 5, Graviton 2+). CMake compiles this file alone with
 * -march=armv8.2-a+dotprod, so the rest of the library stays ARMv8.0 and runs on a Pi 4B;
 * dot.c calls these only when tensor_neon_dotprod_usable(). They give the references' bits
 * (dot_neon_int.h's block order). On other architectures this file is empty.
 */
#include "tensor/tensor_int.h"

#if defined(__aarch64__)

#include "tensor/dot_neon_int.h"

/* Sums of x[j]*y[j] over 32 signed bytes (x0|x1 by y0|y1) in four int32 lanes. */
NEON_INLINE int32x4_t neon_mul_sum_i8_dot(int8x16_t x0, int8x16_t x1, int8x16_t y0, int8x16_t y1)
{
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), x0, y0), x1, y1);
}

NEON_INLINE int32x4_t neon_block_q8_0_dot(const void *w, const block_q8_0 *y, int64_t b)
{
    const block_q8_0 *x = (const block_q8_0 *)w + b;
    return neon_mul_sum_i8_dot(vld1q_s8(x->qs), vld1q_s8(x->qs + 16), vld1q_s8(y[b].qs),
                               vld1q_s8(y[b].qs + 16));
}

NEON_INLINE int32x4_t neon_block_q4_0_dot(const void *w, const block_q8_0 *y, int64_t b)
{
    int8x16_t lo, hi;
    neon_unpack_q4_0(((const block_q4_0 *)w)[b].qs, &lo, &hi);
    return neon_mul_sum_i8_dot(lo, hi, vld1q_s8(y[b].qs), vld1q_s8(y[b].qs + 16));
}

float tensor_dot_q8_0_neon_dot(const void *w, const void *act, int64_t n)
{
    assert(n % QK8_0 == 0);
    return neon_dot_blocks(w, sizeof(block_q8_0), act, n / QK8_0, neon_block_q8_0_dot);
}

float tensor_dot_q4_0_neon_dot(const void *w, const void *act, int64_t n)
{
    assert(n % QK4_0 == 0);
    return neon_dot_blocks(w, sizeof(block_q4_0), act, n / QK4_0, neon_block_q4_0_dot);
}

#else
typedef int tensor_dot_neon_dotprod_unused; /* ISO C: a translation unit must not be empty */
#endif
