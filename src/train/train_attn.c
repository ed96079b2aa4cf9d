/*
 * train_attn.c - causal grouped-query attention of the training passes, per sequence and key/
 * value head (one pool item each, so no two threads write the same gradient): the forward
 * with tensor/'s attention products and model/forward.c's softmax (so scores equal the
 * inference pass's), keeping the probabilities; the backward from them, as matrix products
 * over one head's rows through the same SIMD attention products.
 * Called by train_forward.c / train_backward.c.
 */
#include "train/train_int.h"

#include <string.h>

#define ATTN_CHUNK 16 /* query rows handed to the attention products at once */

typedef struct attn_job {
    const train_model *tm;
    train_work *w;
    const train_acts *a;
    float *att; /* forward output */
} attn_job;

/* Probabilities of query t of head h of sequence b: n_tok floats, zero past t. */
static float *probs_row(const train_work *w, const train_acts *a, int n_head, int32_t b, int h,
                        int32_t t)
{
    return a->p + (((size_t)b * (size_t)n_head + (size_t)h) * (size_t)w->n_tok + (size_t)t) *
                      (size_t)w->n_tok;
}

static void attn_fwd_head(const attn_job *j, int32_t b, int h, int kvh)
{
    const model_hparams *hp = &j->tm->hp;
    const train_work *w = j->w;
    const int hd = hp->head_dim;
    const size_t nq = (size_t)hp->n_head * hd, nkv = (size_t)hp->n_head_kv * hd;
    const size_t row0 = (size_t)b * (size_t)w->n_tok;
    const float *k = j->a->k + row0 * nkv + (size_t)kvh * hd;
    const float *v = j->a->v + row0 * nkv + (size_t)kvh * hd;
    for (int32_t t0 = 0; t0 < w->n_tok; t0 += ATTN_CHUNK) {
        const int rows = w->n_tok - t0 < ATTN_CHUNK ? (int)(w->n_tok - t0) : ATTN_CHUNK;
        const float *q[ATTN_CHUNK];
        float *o[ATTN_CHUNK];
        int32_t n[ATTN_CHUNK];
        for (int r = 0; r < rows; r++) {
            q[r] = j->a->q + (row0 + (size_t)(t0 + r)) * nq + (size_t)h * hd;
            o[r] = j->att + (row0 + (size_t)(t0 + r)) * nq + (size_t)h * hd;
            n[r] = t0 + r + 1;
        }
        float *p = probs_row(w, j->a, hp->n_head, b, h, t0);
        tensor_attn_scores(q, rows, k, nkv, t0 + rows, hd, hp->attn_scale, p, (size_t)w->n_tok);
        for (int r = 0; r < rows; r++) {
            float *pr = p + (size_t)r * (size_t)w->n_tok;
            model_softmax(pr, n[r]);
            for (int32_t i = n[r]; i < w->n_tok; i++) pr[i] = 0.0f;
        }
        tensor_attn_values(p, (size_t)w->n_tok, rows, n, v, nkv, hd, o);
    }
}

/* Pointers to rows r0 .. r0+rows-1 of a strided activation (row r at base + r * stride). */
static void row_ptrs(const float *base, size_t stride, int32_t r0, int rows, const float **out)
{
    for (int r = 0; r < rows; r++) out[r] = base + (size_t)(r0 + r) * stride;
}

/* G = P * (dP - rowsum(P * dP)) * scale in place of dP (zero past the causal limit). */
static void scores_grad(const float *P, float *G, int32_t n_tok, float scale)
{
    for (int32_t t = 0; t < n_tok; t++) {
        const float *p = P + (size_t)t * n_tok;
        float *g = G + (size_t)t * n_tok;
        double sum = 0.0;
        for (int32_t i = 0; i <= t; i++) sum += (double)p[i] * g[i];
        for (int32_t i = 0; i <= t; i++) g[i] = p[i] * (g[i] - (float)sum) * scale;
        for (int32_t i = t + 1; i < n_tok; i++) g[i] = 0.0f;
    }
}

static void transpose_sq(const float *src, float *dst, int32_t n)
{
    for (int32_t r = 0; r < n; r++)
        for (int32_t c = 0; c < n; c++) dst[(size_t)c * n + r] = src[(size_t)r * n + c];
}

/* out[i] += sum over t of M[t][i] * x_t for every key row i: through M^T (MT, scratch) and the
 * attention values product (terms past the causal limit are zeros). */
static void add_transposed_product(const train_work *w, const float *M, float *MT, const float *x,
                                   size_t x_stride, int hd, float *tmp, float *out,
                                   size_t out_stride)
{
    const int32_t T = w->n_tok;
    transpose_sq(M, MT, T);
    for (int32_t i0 = 0; i0 < T; i0 += ATTN_CHUNK) {
        const int rows = T - i0 < ATTN_CHUNK ? (int)(T - i0) : ATTN_CHUNK;
        float *o[ATTN_CHUNK];
        for (int r = 0; r < rows; r++) o[r] = tmp + (size_t)r * hd;
        tensor_attn_values(MT + (size_t)i0 * T, (size_t)T, rows, w->attn_len_full, x, x_stride, hd,
                           o);
        for (int r = 0; r < rows; r++)
            for (int d = 0; d < hd; d++) out[(size_t)(i0 + r) * out_stride + d] += o[r][d];
    }
}

/* Head h of sequence b (key/value head kvh): dq (overwritten), dk and dv (added to). With
 * dP = dO V^T and G = P (dP - rowsum(P dP)) scale: dQ = G K, dK += G^T Q, dV += P^T dO, all
 * through tensor/'s attention products. scratch: train_attn_scratch_floats of this thread. */
static void attn_bwd_head(const attn_job *j, int32_t b, int h, int kvh, float *scratch)
{
    const model_hparams *hp = &j->tm->hp;
    train_work *w = j->w;
    const int hd = hp->head_dim;
    const int32_t T = w->n_tok;
    const size_t nq = (size_t)hp->n_head * hd, nkv = (size_t)hp->n_head_kv * hd;
    const size_t row0 = (size_t)b * (size_t)T, qo = row0 * nq + (size_t)h * hd;
    const size_t kv0 = row0 * nkv + (size_t)kvh * hd;
    const float *P = probs_row(w, j->a, hp->n_head, b, h, 0);
    float *G = scratch, *MT = scratch + (size_t)T * T, *tmp = MT + (size_t)T * T;
    for (int32_t t0 = 0; t0 < T; t0 += ATTN_CHUNK) { /* dP, the causal part */
        const int rows = T - t0 < ATTN_CHUNK ? (int)(T - t0) : ATTN_CHUNK;
        const float *dout[ATTN_CHUNK];
        row_ptrs(w->datt + qo, nq, t0, rows, dout);
        tensor_attn_scores(dout, rows, j->a->v + kv0, nkv, t0 + rows, hd, 1.0f, G + (size_t)t0 * T,
                           (size_t)T);
    }
    scores_grad(P, G, T, hp->attn_scale);
    for (int32_t t0 = 0; t0 < T; t0 += ATTN_CHUNK) { /* dQ = G K */
        const int rows = T - t0 < ATTN_CHUNK ? (int)(T - t0) : ATTN_CHUNK;
        float *dq[ATTN_CHUNK];
        for (int r = 0; r < rows; r++) dq[r] = w->dq + qo + (size_t)(t0 + r) * nq;
        tensor_attn_values(G + (size_t)t0 * T, (size_t)T, rows, w->attn_len_causal + t0,
                           j->a->k + kv0, nkv, hd, dq);
    }
    add_transposed_product(w, G, MT, j->a->q + qo, nq, hd, tmp, w->dk + kv0, nkv);
    add_transposed_product(w, P, MT, w->datt + qo, nq, hd, tmp, w->dv + kv0, nkv);
}

/* Item i: sequence i / n_head_kv, key/value head i % n_head_kv and its group of query heads. */
static void attn_fwd_range(void *ctx, int64_t i0, int64_t i1, int thread)
{
    const attn_job *j = ctx;
    const int nkv = j->tm->hp.n_head_kv, group = j->tm->hp.n_head / nkv;
    for (int64_t i = i0; i < i1; i++)
        for (int h = 0; h < group; h++)
            attn_fwd_head(j, (int32_t)(i / nkv), (int)(i % nkv) * group + h, (int)(i % nkv));
}

static void attn_bwd_range(void *ctx, int64_t i0, int64_t i1, int thread)
{
    const attn_job *j = ctx;
    const int nkv = j->tm->hp.n_head_kv, group = j->tm->hp.n_head / nkv;
    float *scratch = j->w->attn_scratch + (size_t)thread * train_attn_scratch_floats(j->w, j->tm);
    for (int64_t i = i0; i < i1; i++)
        for (int h = 0; h < group; h++)
            attn_bwd_head(j, (int32_t)(i / nkv), (int)(i % nkv) * group + h, (int)(i % nkv),
                          scratch);
}

void train_attn_fwd(const train_model *tm, train_work *w, tensor_pool *pool, train_acts *a)
{
    attn_job j = {tm, w, a, a->att};
    tensor_pool_for(pool, (int64_t)w->n_seq * tm->hp.n_head_kv, attn_fwd_range, &j);
}

size_t train_attn_scratch_floats(const train_work *w, const train_model *tm)
{
    const size_t T = (size_t)w->n_tok;
    return 2 * T * T + (size_t)ATTN_CHUNK * (size_t)tm->hp.head_dim;
}

void train_attn_bwd(const train_model *tm, train_work *w, tensor_pool *pool, const train_acts *a)
{
    const size_t nkv = (size_t)tm->hp.n_head_kv * (size_t)tm->hp.head_dim;
    memset(w->dk, 0, (size_t)w->n * nkv * sizeof(float));
    memset(w->dv, 0, (size_t)w->n * nkv * sizeof(float));
    attn_job j = {tm, w, a, NULL};
    tensor_pool_for(pool, (int64_t)w->n_seq * tm->hp.n_head_kv, attn_bwd_range, &j);
}
