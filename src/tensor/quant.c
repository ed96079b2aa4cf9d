/*
 * quant.c - Q8_0 and Q4_0 quantization of float rows, in the two flavours that llama.cpp
 * uses: the weight quantizers of llama-quantize (byte-identical output) and ggml-cpu's
 * activation quantizer that runs before every Q8_0/Q4_0 dot product (round to nearest even).
 *
 * Does not own: dequantization (convert.c's tensor_to_f32) or the SIMD activation quantizer
 * (dot_avx2.c). Called by: tensor_from_f32, tensor_convert_act, the quantize tool, tests.
 *
 * Multiplications and additions are kept in separate statements on purpose: a compiler may
 * fuse `a*b + c` of one expression into an FMA (clang does by default where FMA exists),
 * which changes the rounding and would break byte identity with llama-quantize.
 */
#include "tensor/tensor_int.h"

#include <math.h>

static float quant_block_amax(const float *x, int n)
{
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

void tensor_quantize_row_q8_0_ref(const float *x, block_q8_0 *y, int64_t n)
{
    assert(n % QK8_0 == 0);
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float *xb = x + b * QK8_0;
        const float d = quant_block_amax(xb, QK8_0) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = tensor_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) {
            const float v = xb[j] * id;
            y[b].qs[j] = (int8_t)roundf(v); /* half away from zero */
        }
    }
}

/* The signed value of largest magnitude in x[0..n); the first one on ties. */
static float quant_block_signed_max(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

/* One Q4_0 level: x*id + 8.5 truncated toward zero, capped at 15. x*id lies in [-8, 8], so
 * the sum is in [0.5, 16.5] and the conversion is defined. */
static uint8_t quant_q4_level(float x, float id)
{
    float v = x * id;
    v += 8.5f;
    const int8_t t = (int8_t)v;
    return (uint8_t)(t < 15 ? t : 15);
}

void tensor_quantize_row_q4_0_ref(const float *x, block_q4_0 *y, int64_t n)
{
    assert(n % QK4_0 == 0);
    for (int64_t b = 0; b < n / QK4_0; b++) {
        const float *xb = x + b * QK4_0;
        const float d = quant_block_signed_max(xb, QK4_0) / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = tensor_f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const uint8_t lo = quant_q4_level(xb[j], id);
            const uint8_t hi = quant_q4_level(xb[j + QK4_0 / 2], id);
            y[b].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void tensor_quantize_act_q8_0_ref(const float *x, block_q8_0 *y, int64_t n)
{
    assert(n % QK8_0 == 0);
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float *xb = x + b * QK8_0;
        const float amax = quant_block_amax(xb, QK8_0);
        /* Unlike the weight quantizer, the scale is 127/amax, not 1/(amax/127): the two
         * differ in the last bit for some amax, which changes some q. */
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = tensor_f32_to_f16(amax / 127.0f);
        for (int j = 0; j < QK8_0; j++) {
            const float v = xb[j] * id;
            y[b].qs[j] = (int8_t)nearbyintf(v); /* ties to even (default rounding mode) */
        }
    }
}

void tensor_quantize_act_q8_0(const float *x, block_q8_0 *y, int64_t n)
{
    tensor_kernels_get()->act[GGUF_T_Q8_0](x, y, n);
}

void tensor_act_q8_0_ref(const float *x, void *y, int64_t n)
{
    tensor_quantize_act_q8_0_ref(x, y, n);
}
