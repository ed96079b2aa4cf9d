/*
 * quant_k.c - the K-quant super-block formats: Q4_K and Q6_K weight quantization as
 * llama-quantize writes it without an importance matrix (ggml's quantize_row_q4_K_ref with
 * make_qkx2_quants, quantize_row_q6_K_ref with make_qx_quants), their dequantization, and the
 * Q8_K activation quantizer (quantize_row_q8_K_ref) that runs before every K-quant dot.
 *
 * Does not own: the dot products (dot_k.c, dot_k_avx2.c) or dispatch (dot.c). Called by
 * tensor_from_f32 / tensor_to_f32 (convert.c), tensor_convert_act, the quantize tool, tests.
 *
 * Byte identity with llama-quantize needs ggml's exact float operations in ggml's order:
 * every expression below keeps ggml's association, rounding goes through quant_k_nearest
 * (ggml's nearest_int), and nothing may be fused into an FMA. GCC does not contract in ISO C
 * mode (-std=c11); clang would where the target has FMA, hence the pragma.
 */
#include "tensor/tensor_int.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Groups whose largest |x| is below this quantize to zero (ggml's GROUP_MAX_EPS). */
#define QUANT_K_EPS 1e-15f

/* Round to nearest, ties to even, by adding 1.5 * 2^23: the sum's last mantissa bit is the
 * integer. Exact for |f| < 2^22; beyond that (never for finite weights) the result is
 * meaningless but defined, as ggml's nearest_int is in release builds. */
static int quant_k_nearest(float f)
{
    const float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static int quant_k_clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- Q4_K ---------------------------------------------------------------------------- */

void tensor_q4_K_scale_min(const uint8_t *q, int j, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Weighted squared error of x ~ scale * L + min over one group (the inner loop of the
 * search below). */
static float quant_k_error(int n, const float *x, const float *w, const uint8_t *L, float scale,
                           float min)
{
    float err = 0;
    for (int i = 0; i < n; i++) {
        float diff = scale * L[i];
        diff += min;
        diff -= x[i];
        diff = diff * diff;
        err += w[i] * diff;
    }
    return err;
}

/* ggml's make_qkx2_quants with use_mad = false: levels L[i] in [0, nmax] and an affine map
 * x ~ scale * L + min (min <= 0) minimising the weighted squared error, searching the
 * inverse scale over (nmax + rmin + rdelta * is) / (max - min) for is = 0 .. nstep and
 * solving the least-squares scale and min for each candidate. Returns scale; *the_min = -min.
 * Laux is scratch of n levels. */
static float quant_k_qkx2(int n, int nmax, const float *x, const float *w, uint8_t *L,
                          float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep)
{
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        const float wx = w[i] * x[i];
        sum_x += wx;
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    for (int i = 0; i < n; i++) {
        const int l = quant_k_nearest(iscale * (x[i] - min));
        L[i] = (uint8_t)quant_k_clamp(l, 0, nmax);
    }
    float best_error = quant_k_error(n, x, w, L, scale, min);
    for (int is = 0; is <= nstep; is++) {
        float num = rdelta * is;
        num = rmin + num;
        num = num + nmax;
        iscale = num / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = quant_k_clamp(quant_k_nearest(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            const float wl = w[i] * l;
            sum_l += wl;
            const float wll = wl * l;
            sum_l2 += wll;
            const float wlx = wl * x[i];
            sum_xl += wlx;
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            const float cur_error = quant_k_error(n, x, w, Laux, this_scale, this_min);
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Packs the 6-bit scale ls and min lm of sub-block j into the 12 scale bytes (zeroed first
 * for j < 4 by the caller's order: j 0..3 write whole bytes, j 4..7 or into them). */
static void quant_k_put_scale_min(uint8_t *q, int j, uint8_t ls, uint8_t lm)
{
    if (j < 4) {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (uint8_t)((ls & 0x0f) | ((lm & 0x0f) << 4));
        q[j - 4] |= (uint8_t)((ls >> 4) << 6);
        q[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

static void quant_k_q4_K_block(const float *x, block_q4_K *y)
{
    uint8_t L[QK_K], Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0; /* the min is subtracted, so scales are >= 0 */
    for (int j = 0; j < QK_K / 32; j++) {
        const float *xj = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) {
            const float sq = xj[l] * xj[l];
            sum_x2 += sq;
        }
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(xj[l]);
        scales[j] = quant_k_qkx2(32, 15, xj, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)quant_k_nearest(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)quant_k_nearest(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        quant_k_put_scale_min(y->scales, j, ls, lm);
    }
    y->d = tensor_f32_to_f16(max_scale / 63.f);
    y->dmin = tensor_f32_to_f16(max_min / 63.f);
    /* Requantize against the scales as stored (6-bit, fp16 super-scales). */
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        tensor_q4_K_scale_min(y->scales, j, &sc, &m);
        const float d = tensor_f16_to_f32(y->d) * sc;
        if (!d) continue;
        const float dm = tensor_f16_to_f32(y->dmin) * m;
        for (int ii = 0; ii < 32; ii++) {
            const int l = quant_k_nearest((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)quant_k_clamp(l, 0, 15);
        }
    }
    for (int g = 0; g < QK_K / 64; g++) {
        const uint8_t *Lg = L + 64 * g;
        for (int l = 0; l < 32; l++) y->qs[32 * g + l] = (uint8_t)(Lg[l] | (Lg[l + 32] << 4));
    }
}

void tensor_quantize_row_q4_K_ref(const float *x, block_q4_K *y, int64_t n)
{
    assert(n % QK_K == 0);
    for (int64_t b = 0; b < n / QK_K; b++) quant_k_q4_K_block(x + b * QK_K, &y[b]);
}

static void quant_k_q4_K_to_f32(const block_q4_K *x, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = tensor_f16_to_f32(x[b].d), dmin = tensor_f16_to_f32(x[b].dmin);
        float *yb = y + b * QK_K;
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            tensor_q4_K_scale_min(x[b].scales, j, &sc, &m);
            const float dl = d * sc, ml = dmin * m;
            const uint8_t *q = x[b].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2); /* even sub-blocks: low nibbles */
            for (int l = 0; l < 32; l++) {
                const float v = dl * ((q[l] >> shift) & 0x0f);
                yb[32 * j + l] = v - ml;
            }
        }
    }
}

/* ---- Q6_K ---------------------------------------------------------------------------- */

/* ggml's make_qx_quants with rmse_type 1 and no importance weights (w = x^2): signed levels
 * l in [-nmax, nmax) stored as L = l + nmax, the scale from a least-squares fit, trying 19
 * inverse scales -(nmax + 0.1 * is) / max around the plain one. Returns the scale. */
static float quant_k_qx(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < QUANT_K_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = quant_k_clamp(quant_k_nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        const float wx = w * x[i];
        const float wxl = wx * l;
        sumlx += wxl;
        const float wl = w * l;
        const float wll = wl * l;
        suml2 += wll;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        float num = 0.1f * is;
        num = nmax + num;
        iscale = -num / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = quant_k_clamp(quant_k_nearest(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            const float wx = w * x[i];
            const float wxl = wx * l;
            sumlx += wxl;
            const float wl = w * l;
            const float wll = wl * l;
            suml2 += wll;
        }
        const float lhs = sumlx * sumlx, rhs = best * suml2;
        if (suml2 > 0 && lhs > rhs) {
            for (int i = 0; i < n; i++) {
                const int l = quant_k_clamp(quant_k_nearest(iscale * x[i]), -nmax, nmax - 1);
                L[i] = (int8_t)(l + nmax);
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void quant_k_q6_K_block(const float *x, block_q6_K *y)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ib++) {
        const float scale = quant_k_qx(16, 32, x + 16 * ib, L + 16 * ib);
        scales[ib] = scale;
        const float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < QUANT_K_EPS) {
        memset(y, 0, sizeof *y);
        return;
    }
    const float iscale = -128.f / max_scale;
    y->d = tensor_f32_to_f16(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ib++) {
        const int s = quant_k_nearest(iscale * scales[ib]);
        y->scales[ib] = (int8_t)(s < 127 ? s : 127);
    }
    /* Requantize against the scales as stored (int8, fp16 super-scale). */
    for (int j = 0; j < QK_K / 16; j++) {
        const float d = tensor_f16_to_f32(y->d) * y->scales[j];
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) {
            const int l = quant_k_nearest(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(quant_k_clamp(l, -32, 31) + 32);
        }
    }
    for (int h = 0; h < QK_K / 128; h++) {
        const int8_t *Lh = L + 128 * h;
        uint8_t *ql = y->ql + 64 * h, *qh = y->qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = Lh[l] & 0x0f, q2 = Lh[l + 32] & 0x0f;
            const uint8_t q3 = Lh[l + 64] & 0x0f, q4 = Lh[l + 96] & 0x0f;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                              ((Lh[l + 96] >> 4) << 6));
        }
    }
}

void tensor_quantize_row_q6_K_ref(const float *x, block_q6_K *y, int64_t n)
{
    assert(n % QK_K == 0);
    for (int64_t b = 0; b < n / QK_K; b++) quant_k_q6_K_block(x + b * QK_K, &y[b]);
}

static void quant_k_q6_K_to_f32(const block_q6_K *x, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = tensor_f16_to_f32(x[b].d);
        float *yb = y + b * QK_K;
        for (int i = 0; i < QK_K; i++) {
            const int h = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
            const uint8_t lo = x[b].ql[64 * h + l + 32 * (quarter & 1)] >> (4 * (quarter >> 1));
            const uint8_t hi = (x[b].qh[32 * h + l] >> (2 * quarter)) & 3;
            const int q = ((lo & 0x0f) | (hi << 4)) - 32;
            const float ds = d * x[b].scales[i / 16];
            yb[i] = ds * q;
        }
    }
}

/* ---- Q8_K ---------------------------------------------------------------------------- */

void tensor_quantize_row_q8_K_ref(const float *x, block_q8_K *y, int64_t n)
{
    assert(n % QK_K == 0);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float *xb = x + b * QK_K;
        float max = 0, amax = 0; /* the signed value of largest magnitude, the first on ties */
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        if (!amax) {
            memset(&y[b], 0, sizeof y[b]); /* ggml leaves bsums stale; zero is tidier */
            continue;
        }
        /* -127, not -128, as ggml (IQ2_XXS's AVX code needs it): levels stay in +-127. */
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = quant_k_nearest(iscale * xb[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += y[b].qs[16 * j + i];
            y[b].bsums[j] = (int16_t)sum;
        }
        y[b].d = 1 / iscale;
    }
}

void tensor_act_q8_K_ref(const float *x, void *y, int64_t n)
{
    tensor_quantize_row_q8_K_ref(x, y, n);
}

static void quant_k_q8_K_to_f32(const block_q8_K *x, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++)
        for (int j = 0; j < QK_K; j++) y[b * QK_K + j] = x[b].d * x[b].qs[j];
}

/* ---- rows (for convert.c) ------------------------------------------------------------ */

bool tensor_k_to_f32(uint32_t type, const void *src, float *dst, int64_t n)
{
    switch (type) {
    case GGUF_T_Q4_K:
        assert(n % QK_K == 0);
        quant_k_q4_K_to_f32(src, dst, n);
        return true;
    case GGUF_T_Q6_K:
        assert(n % QK_K == 0);
        quant_k_q6_K_to_f32(src, dst, n);
        return true;
    case GGUF_T_Q8_K:
        assert(n % QK_K == 0);
        quant_k_q8_K_to_f32(src, dst, n);
        return true;
    default:
        return false;
    }
}
