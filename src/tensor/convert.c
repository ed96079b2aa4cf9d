/*
 * convert.c - scalar number formats and whole-row conversion between them: IEEE half (F16)
 * and bfloat16 to and from float, which types the module computes with and how many bytes
 * their rows take, and tensor_to_f32 / tensor_from_f32 over every supported type.
 *
 * Does not own: the block quantizers (quant.c) or the SIMD row conversion (dot_avx2.c).
 * Called by: the rest of tensor/, model/ (norm weights, KV cache), tests.
 */
#include "tensor/tensor_int.h"

#include <string.h>

/* ---- scalar conversions -------------------------------------------------------------- */

static uint32_t convert_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float convert_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float tensor_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        /* Zero or subnormal: mant * 2^-24 is exact in float. */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return convert_bits_f32(sign | 0x7f800000u | (mant << 13)); /* inf, NaN */
    return convert_bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

/* Rounds m * 2^-shift to the nearest integer, ties to even (shift >= 1). */
static uint32_t convert_shift_rne(uint32_t m, uint32_t shift)
{
    if (shift >= 32) return 0;
    const uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1)));
}

uint16_t tensor_f32_to_f16(float f)
{
    const uint32_t x = convert_f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        /* NaN: quiet it and keep the top payload bits, as F16C's vcvtps2ph does. */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    }
    if (ax >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u) {
        /* Below 2^-14: a half subnormal counts units of 2^-24. With the implicit bit,
         * |f| = m * 2^(e-150), i.e. m * 2^(e-126) units, so shift right by 126 - e. A
         * rounding carry into 0x400 yields the smallest normal, which is right. */
        const uint32_t e = ax >> 23;
        if (e == 0) return sign; /* float subnormals are far below half's range */
        const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        return (uint16_t)(sign | convert_shift_rne(m, 126 - e));
    }
    /* Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits; a
     * carry out of the mantissa correctly bumps the exponent. */
    const uint32_t rebased = ax - (112u << 23);
    return (uint16_t)(sign | convert_shift_rne(rebased, 13));
}

float tensor_bf16_to_f32(uint16_t h)
{
    return convert_bits_f32((uint32_t)h << 16);
}

uint16_t tensor_f32_to_bf16(float f)
{
    const uint32_t x = convert_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    /* Round to nearest even on the 16 dropped bits; overflow carries into infinity. */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

void tensor_f32_to_f16_row_ref(const float *x, uint16_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = tensor_f32_to_f16(x[i]);
}

/* ---- types and rows ------------------------------------------------------------------ */

bool tensor_type_supported(uint32_t type)
{
    switch (type) {
    case GGUF_T_F32:
    case GGUF_T_F16:
    case GGUF_T_BF16:
    case GGUF_T_Q8_0:
    case GGUF_T_Q4_0:
    case GGUF_T_Q4_K:
    case GGUF_T_Q6_K:
    case GGUF_T_FP8_E4M3:
        return true;
    default:
        return false;
    }
}

size_t tensor_row_size(uint32_t type, int64_t n)
{
    uint32_t bs, ts;
    if (!gguf_ttype_layout(type, &bs, &ts)) return 0;
    assert(n >= 0 && n % bs == 0);
    return (size_t)(n / bs) * ts;
}

static void convert_q8_0_to_f32(const block_q8_0 *x, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float d = tensor_f16_to_f32(x[b].d);
        for (int j = 0; j < QK8_0; j++) y[b * QK8_0 + j] = (float)x[b].qs[j] * d;
    }
}

static void convert_q4_0_to_f32(const block_q4_0 *x, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK4_0; b++) {
        const float d = tensor_f16_to_f32(x[b].d);
        float *yb = y + b * QK4_0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            yb[j] = (float)((x[b].qs[j] & 0x0f) - 8) * d;
            yb[j + QK4_0 / 2] = (float)((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

void tensor_to_f32(uint32_t type, const void *src, float *dst, int64_t n)
{
    switch (type) {
    case GGUF_T_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case GGUF_T_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = tensor_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case GGUF_T_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = tensor_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case GGUF_T_Q8_0:
        assert(n % QK8_0 == 0);
        convert_q8_0_to_f32(src, dst, n);
        break;
    case GGUF_T_Q4_0:
        assert(n % QK4_0 == 0);
        convert_q4_0_to_f32(src, dst, n);
        break;
    default:
        if (tensor_k_to_f32(type, src, dst, n) || tensor_fp8_row_to_f32(type, src, dst, n)) break;
        assert(!"tensor_to_f32: unsupported type");
    }
}

void tensor_from_f32(uint32_t type, const float *src, void *dst, int64_t n)
{
    switch (type) {
    case GGUF_T_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case GGUF_T_F16:
        tensor_f32_to_f16_row_ref(src, dst, n);
        break;
    case GGUF_T_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = tensor_f32_to_bf16(src[i]);
        break;
    case GGUF_T_Q8_0:
        tensor_quantize_row_q8_0_ref(src, dst, n);
        break;
    case GGUF_T_Q4_0:
        tensor_quantize_row_q4_0_ref(src, dst, n);
        break;
    case GGUF_T_Q4_K:
        tensor_quantize_row_q4_K_ref(src, dst, n);
        break;
    case GGUF_T_Q6_K:
        tensor_quantize_row_q6_K_ref(src, dst, n);
        break;
    case GGUF_T_Q8_K:
        tensor_quantize_row_q8_K_ref(src, dst, n);
        break;
    case GGUF_T_FP8_E4M3:
        tensor_quantize_row_fp8_ref(src, dst, n);
        break;
    default:
        assert(!"tensor_from_f32: unsupported type");
    }
}

void tensor_act_f16_ref(const float *x, void *y, int64_t n)
{
    tensor_f32_to_f16_row_ref(x, y, n);
}
