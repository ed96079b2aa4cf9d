/*
 * train_ops.c - the building blocks of the training passes: linear layers (forward through
 * tensor/'s matmul on F32 views, so it computes what inference computes; backward as two more
 * matmuls over transposed copies, each output element summed by one thread in a fixed order),
 * LoRA products with dropout, and the element-wise operations with their derivatives
 * (forward numerics copied from model/forward.c's rules: float math, double sums).
 * Called by train_forward.c and train_backward.c.
 */
#include "train/train_int.h"

#include <math.h>
#include <string.h>

/* ---- linear layers -------------------------------------------------------------------- */

static tensor_view f32_view(const float *data, int64_t n_in, int64_t n_out)
{
    tensor_view v = {0};
    v.data = data;
    v.type = GGUF_T_F32;
    v.ne[0] = n_in;
    v.ne[1] = n_out;
    v.ne[2] = v.ne[3] = 1;
    v.row_bytes = (size_t)n_in * sizeof(float);
    v.name = "train";
    return v;
}

void train_linear_fwd(tensor_pool *pool, const float *W, int64_t n_in, int64_t n_out,
                      const float *x, int64_t n, float *y)
{
    const tensor_view v = f32_view(W, n_in, n_out);
    tensor_matmul(pool, &v, x, n, y);
}

typedef struct transpose_job {
    const float *src;
    int64_t rows, cols;
    float *dst;
} transpose_job;

#define TRANSPOSE_TILE 32

/* Tiles of rows [t0, t1) * TILE: each reads and writes a cache-sized square. */
static void transpose_tiles(void *ctx, int64_t t0, int64_t t1, int thread)
{
    (void)thread;
    const transpose_job *j = ctx;
    for (int64_t r0 = t0 * TRANSPOSE_TILE; r0 < t1 * TRANSPOSE_TILE && r0 < j->rows;
         r0 += TRANSPOSE_TILE) {
        const int64_t r1 = r0 + TRANSPOSE_TILE < j->rows ? r0 + TRANSPOSE_TILE : j->rows;
        for (int64_t c0 = 0; c0 < j->cols; c0 += TRANSPOSE_TILE) {
            const int64_t c1 = c0 + TRANSPOSE_TILE < j->cols ? c0 + TRANSPOSE_TILE : j->cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) j->dst[c * j->rows + r] = j->src[r * j->cols + c];
        }
    }
}

/* dst (cols rows of rows) = src^T, src rows rows of cols; on the pool, so that the other
 * threads do not wait for one. */
static void transpose(tensor_pool *pool, const float *src, int64_t rows, int64_t cols, float *dst)
{
    transpose_job j = {src, rows, cols, dst};
    tensor_pool_for(pool, (rows + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE, transpose_tiles, &j);
}

void train_linear_bwd(train_work *w, tensor_pool *pool, const float *W, float *dW, int64_t n_in,
                      int64_t n_out, const float *x, const float *dy, int64_t n, float *dx)
{
    if (dx) { /* dx[r][i] = sum_o dy[r][o] W[o][i]: a matmul with W^T as the weight */
        transpose(pool, W, n_out, n_in, w->t_w);
        train_linear_fwd(pool, w->t_w, n_out, n_in, dy, n, w->t_out);
        train_add(dx, w->t_out, n * n_in);
    }
    if (dW) { /* dW[o][i] = sum_r dy[r][o] x[r][i]: rows of dy^T times rows of x^T */
        transpose(pool, x, n, n_in, w->t_x);
        transpose(pool, dy, n, n_out, w->t_dy);
        train_linear_fwd(pool, w->t_x, n, n_in, w->t_dy, n_out, w->t_out);
        train_add(dW, w->t_out, n_out * n_in);
    }
}

/* ---- LoRA ----------------------------------------------------------------------------- */

/* Rows [r0, r0 + n) of the input of A: x itself, or x with elements dropped (kept ones scaled
 * by 1 / (1 - p)), the mask drawn from seed. */
static const float *lora_input(train_work *w, train_acts *a, train_lora_site s, int64_t r0,
                               int64_t n, const float *x, int64_t n_in, uint64_t seed)
{
    if (w->dropout_p <= 0.0f) return x;
    const float p = w->dropout_p, keep_scale = 1.0f / (1.0f - p);
    float *xd = a->lora_xd[s] + r0 * n_in;
    uint8_t *keep = a->lora_keep[s] + r0 * n_in;
    core_rng r;
    core_rng_seed(&r, seed);
    for (int64_t i = 0; i < n * n_in; i++) {
        keep[i] = core_rng_uniform(&r) >= p;
        xd[i] = keep[i] ? x[i] * keep_scale : 0.0f;
    }
    return xd;
}

/* Expert `expert`'s A and B (0 for a 2-D weight's adapter): slices of the 3-D tensors. */
static const float *lora_a_of(const train_lora *lo, int expert)
{
    return lo->a->w + (int64_t)expert * lo->a->ne[0] * lo->a->ne[1];
}

static const float *lora_b_of(const train_lora *lo, int expert)
{
    return lo->b->w + (int64_t)expert * lo->b->ne[0] * lo->b->ne[1];
}

void train_lora_fwd_rows(train_work *w, tensor_pool *pool, const train_lora *lo, int expert,
                         train_acts *a, train_lora_site s, int64_t r0, int64_t n, const float *x,
                         int64_t n_in, int64_t n_out, float *y, uint64_t seed)
{
    if (!lo->a) return;
    const int64_t r = lo->a->ne[1];
    float *u = a->lora_u[s] + r0 * r;
    const float *xd = lora_input(w, a, s, r0, n, x, n_in, seed);
    train_linear_fwd(pool, lora_a_of(lo, expert), n_in, r, xd, n, u);
    train_linear_fwd(pool, lora_b_of(lo, expert), r, n_out, u, n, w->tmp);
    for (int64_t i = 0; i < n * n_out; i++) y[i] += lo->scale * w->tmp[i];
}

void train_lora_fwd(train_work *w, tensor_pool *pool, const train_lora *lo, train_acts *a,
                    train_lora_site s, const float *x, int64_t n_in, int64_t n_out, float *y,
                    uint64_t seed)
{
    train_lora_fwd_rows(w, pool, lo, 0, a, s, 0, w->n, x, n_in, n_out, y, seed);
}

void train_lora_bwd_rows(train_work *w, tensor_pool *pool, const train_lora *lo, int expert,
                         const train_acts *a, train_lora_site s, int64_t r0, int64_t n,
                         const float *x, int64_t n_in, int64_t n_out, const float *dy, float *dx)
{
    if (!lo->a) return;
    const int64_t r = lo->a->ne[1];
    const bool dropped = w->dropout_p > 0.0f;
    const float *xd = dropped ? a->lora_xd[s] + r0 * n_in : x;
    float *ga = lo->a->g + (int64_t)expert * n_in * r, *gb = lo->b->g + (int64_t)expert * r * n_out;
    float *sdy = w->lora_dy, *du = w->lora_du, *dxd = w->lora_dxd;
    for (int64_t i = 0; i < n * n_out; i++) sdy[i] = lo->scale * dy[i];
    memset(du, 0, (size_t)(n * r) * sizeof(float));
    train_linear_bwd(w, pool, lora_b_of(lo, expert), gb, r, n_out, a->lora_u[s] + r0 * r, sdy, n,
                     du);
    if (!dropped) {
        train_linear_bwd(w, pool, lora_a_of(lo, expert), ga, n_in, r, xd, du, n, dx);
        return;
    }
    memset(dxd, 0, (size_t)(n * n_in) * sizeof(float));
    train_linear_bwd(w, pool, lora_a_of(lo, expert), ga, n_in, r, xd, du, n, dxd);
    const float keep_scale = 1.0f / (1.0f - w->dropout_p);
    const uint8_t *keep = a->lora_keep[s] + r0 * n_in;
    for (int64_t i = 0; i < n * n_in; i++)
        if (keep[i]) dx[i] += dxd[i] * keep_scale;
}

void train_lora_bwd(train_work *w, tensor_pool *pool, const train_lora *lo, const train_acts *a,
                    train_lora_site s, const float *x, int64_t n_in, int64_t n_out, const float *dy,
                    float *dx)
{
    train_lora_bwd_rows(w, pool, lo, 0, a, s, 0, w->n, x, n_in, n_out, dy, dx);
}

/* ---- element-wise ----------------------------------------------------------------------- */

void train_add(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

/* Squares in float, sum in double, mean in float (model/forward.c's rms_norm). */
void train_rms_norm(const float *x, const float *w, float *y, float *rstd, int64_t n_rows,
                    int64_t n, float eps)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) sum += (double)(xr[i] * xr[i]);
        const float mean = (float)(sum / (double)n);
        const float scale = 1.0f / sqrtf(mean + eps);
        for (int64_t i = 0; i < n; i++) y[r * n + i] = (xr[i] * scale) * w[i];
        rstd[r] = scale;
    }
}

/* y = x s w with s = (mean(x^2) + eps)^-1/2: dx = s (dy w) - x s^3 / n * sum(dy w x). */
void train_rms_norm_bwd(const float *x, const float *w, const float *rstd, const float *dy,
                        float *dx, float *dw, int64_t n_rows, int64_t n)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        const float s = rstd[r];
        double dot = 0.0;
        for (int64_t i = 0; i < n; i++) dot += (double)dyr[i] * w[i] * xr[i];
        const float c = (float)(dot * s * s * s / (double)n);
        for (int64_t i = 0; i < n; i++) dx[r * n + i] += s * dyr[i] * w[i] - c * xr[i];
        if (dw)
            for (int64_t i = 0; i < n; i++) dw[i] += dyr[i] * xr[i] * s;
    }
}

/* silu'(g) = sig(g) (1 + g (1 - sig(g))). */
void train_swiglu_bwd(const float *g, const float *u, const float *dh, float *dg, float *du,
                      int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float sig = 1.0f / (1.0f + expf(-g[i]));
        du[i] = dh[i] * g[i] * sig;
        dg[i] = dh[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
    }
}
