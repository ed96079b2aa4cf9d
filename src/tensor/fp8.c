/*
 * fp8.c - FP8_E4M3, a mica extension tensor type (docs/fp8.md): the E4M3 number format
 * (sign, 4 exponent bits with bias 7, 3 mantissa bits, subnormals, max finite 448, no
 * infinities, NaN = 0x7F/0xFF), blocks of 32 such bytes with an fp16 scale, their
 * quantization and dequantization, and the scalar reference of the FP8 x Q8_0 dot product.
 *
 * Does not own: the type id and layout (gguf_types.c), dispatch (dot.c), the AVX2 kernel
 * (dot_k_avx2.c). Called by tensor_from_f32 / tensor_to_f32, the kernel tables, tests.
 *
 * Every finite E4M3 value is an integer multiple of 2^-9 (the smallest subnormal) below
 * 2^18 of them, so a block's dot product with Q8_0 activations is an exact int32 sum of
 * units * q (|sum| <= 32 * 480 * 512 * 127 < 2^31), scaled once per block.
 */
#include "tensor/tensor_int.h"

#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* the AVX2 kernel must see the same roundings */
#endif

#define FP8_MAX_BITS   0x43e00000u /* 448.0f */
#define FP8_MIN_NORMAL 0x3c800000u /* 2^-6 */

/* ---- numbers ------------------------------------------------------------------------- */

int32_t tensor_fp8_units(uint8_t b)
{
    const int32_t e = (b >> 3) & 0x0f, m = b & 7;
    /* Subnormal: m units; normal: (8 + m) * 2^(e-1) units, i.e. (1 + m/8) * 2^(e-7). */
    const int32_t mag = e == 0 ? m : (8 + m) << (e - 1);
    return (b & 0x80) ? -mag : mag;
}

float tensor_fp8_to_f32(uint8_t b)
{
    if ((b & 0x7f) == 0x7f) {
        const uint32_t nan = 0x7fc00000u | ((uint32_t)(b & 0x80) << 24);
        float f;
        memcpy(&f, &nan, sizeof f);
        return f;
    }
    /* Exact: at most 18 significant bits. The sign goes on last so that 0x80 is -0. */
    const float mag = (float)tensor_fp8_units(b & 0x7f) * 0x1p-9f;
    return (b & 0x80) ? -mag : mag;
}

/* m * 2^-shift rounded to the nearest integer, ties to even (shift >= 1). */
static uint32_t fp8_shift_rne(uint32_t m, uint32_t shift)
{
    if (shift >= 32) return 0;
    const uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1)));
}

uint8_t tensor_f32_to_fp8(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint8_t sign = (uint8_t)((x >> 24) & 0x80);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7f;   /* NaN */
    if (ax >= FP8_MAX_BITS) return sign | 0x7e; /* saturate (infinities too) */
    if (ax < FP8_MIN_NORMAL) {
        /* Subnormal range: count units of 2^-9. With the implicit bit |f| = m * 2^(e-150),
         * i.e. m * 2^(e-141) units, so shift right by 141 - e (>= 21 here). A carry to 8
         * units is the smallest normal, code 0x08, which is right. */
        const uint32_t e = ax >> 23;
        if (e == 0) return sign; /* float subnormals are far below 2^-10 */
        return (uint8_t)(sign | fp8_shift_rne((ax & 0x7fffffu) | 0x800000u, 141 - e));
    }
    /* Normal: rebias the exponent (127 -> 7) and round off 20 mantissa bits; a carry out of
     * the mantissa bumps the exponent, and below 448 the result stays <= 0x7E. */
    return (uint8_t)(sign | fp8_shift_rne(ax - (120u << 23), 20));
}

/* ---- rows ---------------------------------------------------------------------------- */

void tensor_quantize_row_fp8_ref(const float *x, block_fp8_e4m3 *y, int64_t n)
{
    assert(n % QK_FP8 == 0);
    for (int64_t b = 0; b < n / QK_FP8; b++) {
        const float *xb = x + b * QK_FP8;
        float amax = 0.0f;
        for (int j = 0; j < QK_FP8; j++) {
            const float a = xb[j] < 0 ? -xb[j] : xb[j];
            if (a > amax) amax = a;
        }
        y[b].d = tensor_f32_to_f16(amax / 448.0f);
        /* Encode against the scale as stored, so that d * e4m3(q) is the nearest value the
         * block can hold (up to the rounding of d, which can push x/d a little past 448:
         * those saturate). */
        const float d = tensor_f16_to_f32(y[b].d);
        for (int j = 0; j < QK_FP8; j++) y[b].qs[j] = d != 0.0f ? tensor_f32_to_fp8(xb[j] / d) : 0;
    }
}

bool tensor_fp8_row_to_f32(uint32_t type, const void *src, float *dst, int64_t n)
{
    if (type != GGUF_T_FP8_E4M3) return false;
    assert(n % QK_FP8 == 0);
    const block_fp8_e4m3 *x = src;
    for (int64_t b = 0; b < n / QK_FP8; b++) {
        const float d = tensor_f16_to_f32(x[b].d);
        for (int j = 0; j < QK_FP8; j++) dst[b * QK_FP8 + j] = d * tensor_fp8_to_f32(x[b].qs[j]);
    }
    return true;
}

/* ---- dot product --------------------------------------------------------------------- */

/* Block b's term (d_w * d_x) * (isum * 2^-9) goes to lane b % 8 and the eight lanes are
 * summed in order at the end: the order the AVX2 kernel computes in, so the two agree to
 * the bit (FP8 is mica's own type; there is no ggml order to follow). */
float tensor_dot_fp8_ref(const void *w, const void *act, int64_t n)
{
    const block_fp8_e4m3 *x = w;
    const block_q8_0 *y = act;
    assert(n % QK_FP8 == 0);
    float lane[8] = {0};
    for (int64_t b = 0; b < n / QK_FP8; b++) {
        int32_t isum = 0;
        for (int j = 0; j < QK_FP8; j++) isum += tensor_fp8_units(x[b].qs[j]) * y[b].qs[j];
        const float scale = tensor_f16_to_f32(x[b].d) * tensor_f16_to_f32(y[b].d);
        const float term = scale * ((float)isum * 0x1p-9f);
        lane[b % 8] += term;
    }
    float sum = 0.0f;
    for (int k = 0; k < 8; k++) sum += lane[k];
    return sum;
}
