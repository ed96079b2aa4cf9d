/*
 * dot_k.c - scalar references of the K-quant dot products: a Q4_K or Q6_K weight row with
 * an activation row quantized to Q8_K. They compute what ggml-cpu's
 * ggml_vec_dot_q4_K_q8_K_generic / ggml_vec_dot_q6_K_q8_K_generic compute, in the same
 * order, so results are bit-identical to ggml's generic build.
 *
 * Does not own: the formats and quantizers (quant_k.c), the AVX2 kernels (dot_k_avx2.c),
 * dispatch (dot.c). Called through the kernel tables; tests call them directly.
 *
 * ggml's order: per super-block, exact int32 sums in eight lanes (lane l takes the elements
 * whose index is l mod 8, each times its sub-block scale); then float lane sums
 * sums[l] += (d_w * d_x) * lane[l]; Q4_K's min correction dmin_w * d_x * sum(bsums * m) is
 * subtracted from a separate float; the eight lanes are added to it in order at the end.
 */
#include "tensor/tensor_int.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* the float steps must round exactly as ggml's (and AVX2's) */
#endif

/* Adds scale * w[i] * q[i] of 32 elements to lane i % 8 (the 32 elements of one scale). */
static void dot_k_lanes(int32_t lane[8], const int8_t *w, const int8_t *q, int n, int32_t scale)
{
    for (int i = 0; i < n; i++) lane[i % 8] += scale * (w[i] * q[i]);
}

/* The eight lanes of one super-block into the float lane sums: sums[l] += d * lane[l]. */
static void dot_k_accumulate(float sums[8], const int32_t lane[8], float d)
{
    for (int l = 0; l < 8; l++) {
        const float t = d * (float)lane[l];
        sums[l] += t;
    }
}

static float dot_k_finish(float sumf, const float sums[8])
{
    for (int l = 0; l < 8; l++) sumf += sums[l];
    return sumf;
}

float tensor_dot_q4_K_ref(const void *w, const void *act, int64_t n)
{
    const block_q4_K *x = w;
    const block_q8_K *y = act;
    assert(n % QK_K == 0);
    float sums[8] = {0}, sumf = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        int8_t q4[QK_K]; /* nibbles in element order */
        for (int g = 0; g < QK_K / 64; g++) {
            for (int l = 0; l < 32; l++) {
                q4[64 * g + l] = (int8_t)(x[b].qs[32 * g + l] & 0x0f);
                q4[64 * g + 32 + l] = (int8_t)(x[b].qs[32 * g + l] >> 4);
            }
        }
        int32_t lane[8] = {0}, summs = 0;
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            tensor_q4_K_scale_min(x[b].scales, j, &sc, &m);
            dot_k_lanes(lane, q4 + 32 * j, y[b].qs + 32 * j, 32, sc);
            summs += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        dot_k_accumulate(sums, lane, tensor_f16_to_f32(x[b].d) * y[b].d);
        const float dmin = tensor_f16_to_f32(x[b].dmin) * y[b].d;
        const float t = dmin * (float)summs;
        sumf -= t;
    }
    return dot_k_finish(sumf, sums);
}

float tensor_dot_q6_K_ref(const void *w, const void *act, int64_t n)
{
    const block_q6_K *x = w;
    const block_q8_K *y = act;
    assert(n % QK_K == 0);
    float sums[8] = {0};
    for (int64_t b = 0; b < n / QK_K; b++) {
        int8_t q6[QK_K]; /* q - 32 in element order */
        for (int h = 0; h < QK_K / 128; h++) {
            const uint8_t *ql = x[b].ql + 64 * h, *qh = x[b].qh + 32 * h;
            int8_t *a = q6 + 128 * h;
            for (int l = 0; l < 32; l++) {
                a[l] = (int8_t)(((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32);
                a[l + 32] = (int8_t)(((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
                a[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                a[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        int32_t lane[8] = {0};
        for (int j = 0; j < QK_K / 16; j++)
            dot_k_lanes(lane, q6 + 16 * j, y[b].qs + 16 * j, 16, x[b].scales[j]);
        dot_k_accumulate(sums, lane, tensor_f16_to_f32(x[b].d) * y[b].d);
    }
    return dot_k_finish(0.0f, sums);
}
