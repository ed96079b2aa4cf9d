/*
 * train_backward.c - the backward pass of train_forward.c: from the masked mean cross-entropy
 * (and the load-balancing loss) back through the output matrix, the layers (SwiGLU or the
 * Mixture-of-Experts block with its router, attention with RoPE) to the embedding, adding
 * every trainable tensor's gradient. Frozen tensors (g NULL) are passed over.
 */
#include "train/train_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* dlogits = (softmax - onehot(target)) * scale / n_targets on rows with a target. */
static void loss_bwd(const train_model *tm, train_work *w, float scale)
{
    const int32_t nv = tm->hp.n_vocab;
    const float k = w->n_targets ? scale / (float)w->n_targets : 0.0f;
    for (int32_t r = 0; r < w->n; r++) {
        float *d = w->dlogits + (int64_t)r * nv;
        if (w->targets[r] < 0) {
            memset(d, 0, (size_t)nv * sizeof(float));
            continue;
        }
        memcpy(d, w->logits + (int64_t)r * nv, (size_t)nv * sizeof(float));
        model_softmax(d, nv);
        d[w->targets[r]] -= 1.0f;
        for (int32_t i = 0; i < nv; i++) d[i] *= k;
    }
}

static void bias_bwd(const train_tensor *b, const float *dy, int64_t n_rows)
{
    if (!b || !b->g) return;
    for (int64_t r = 0; r < n_rows; r++) train_add(b->g, dy + r * b->n, b->n);
}

/* Gradient of y = x W^T + LoRA(x) for dy: weight, adapter, and dx += the input gradient. */
static void proj_bwd(train_work *w, tensor_pool *pool, const train_tensor *W, const train_lora *lo,
                     const train_acts *a, train_lora_site s, const float *x, const float *dy,
                     float *dx)
{
    const int64_t n_in = W->ne[0], n_out = W->ne[1];
    train_linear_bwd(w, pool, W->w, W->g, n_in, n_out, x, dy, w->n, dx);
    train_lora_bwd(w, pool, lo, a, s, x, n_in, n_out, dy, dx);
}

/* ---- feed-forward ------------------------------------------------------------------------ */

static void dense_ffn_bwd(const train_model *tm, train_work *w, tensor_pool *pool, int il)
{
    const train_layer *l = &tm->layers[il];
    const train_acts *a = &w->acts[il];
    const int64_t n = (int64_t)w->n * tm->hp.n_ff;
    memset(w->dh, 0, (size_t)n * sizeof(float));
    proj_bwd(w, pool, l->ffn_down, &l->lora[TRAIN_LORA_DOWN], a, TRAIN_LORA_DOWN, a->h, w->dx,
             w->dh);
    train_swiglu_bwd(a->g, a->u, w->dh, w->dg, w->du, n);
    proj_bwd(w, pool, l->ffn_gate, &l->lora[TRAIN_LORA_GATE], a, TRAIN_LORA_GATE, a->xn2, w->dg,
             w->dxn);
    proj_bwd(w, pool, l->ffn_up, &l->lora[TRAIN_LORA_UP], a, TRAIN_LORA_UP, a->xn2, w->du, w->dxn);
}

/* Expert x's rows: down, SwiGLU, gate and up backward; the input gradient scattered to dxn. */
static void expert_bwd(const train_model *tm, train_work *w, tensor_pool *pool, int il, int x)
{
    const train_layer *l = &tm->layers[il];
    const train_acts *a = &w->acts[il];
    const int64_t e = tm->hp.n_embd, ff = tm->hp.n_ff_exp;
    const int k = tm->hp.n_expert_used;
    const int32_t r0 = a->off[x], cnt = a->off[x + 1] - r0;
    if (!cnt) return;
    for (int32_t r = 0; r < cnt; r++) {
        const int32_t ts = a->perm[r0 + r];
        const float ws = a->sel_w[ts];
        memcpy(w->xg + r * e, a->xn2 + (ts / k) * e, (size_t)e * sizeof(float));
        for (int64_t i = 0; i < e; i++) w->yg[r * e + i] = w->dx[(ts / k) * e + i] * ws;
    }
    const size_t mo = (size_t)x * (size_t)(e * ff);
    const train_lora *lo = l->lora;
    float *dh = w->dh + r0 * ff, *dg = w->dg + r0 * ff, *du = w->du + r0 * ff;
    float *grad = NULL;
    memset(dh, 0, (size_t)(cnt * ff) * sizeof(float));
    grad = l->down_exps->g ? l->down_exps->g + mo : NULL;
    train_linear_bwd(w, pool, l->down_exps->w + mo, grad, ff, e, a->h + r0 * ff, w->yg, cnt, dh);
    train_lora_bwd_rows(w, pool, &lo[TRAIN_LORA_DOWN], x, a, TRAIN_LORA_DOWN, r0, cnt,
                        a->h + r0 * ff, ff, e, w->yg, dh);
    train_swiglu_bwd(a->g + r0 * ff, a->u + r0 * ff, dh, dg, du, cnt * ff);
    memset(w->tmp, 0, (size_t)(cnt * e) * sizeof(float));
    grad = l->gate_exps->g ? l->gate_exps->g + mo : NULL;
    train_linear_bwd(w, pool, l->gate_exps->w + mo, grad, e, ff, w->xg, dg, cnt, w->tmp);
    train_lora_bwd_rows(w, pool, &lo[TRAIN_LORA_GATE], x, a, TRAIN_LORA_GATE, r0, cnt, w->xg, e, ff,
                        dg, w->tmp);
    grad = l->up_exps->g ? l->up_exps->g + mo : NULL;
    train_linear_bwd(w, pool, l->up_exps->w + mo, grad, e, ff, w->xg, du, cnt, w->tmp);
    train_lora_bwd_rows(w, pool, &lo[TRAIN_LORA_UP], x, a, TRAIN_LORA_UP, r0, cnt, w->xg, e, ff, du,
                        w->tmp);
    for (int32_t r = 0; r < cnt; r++)
        train_add(w->dxn + (a->perm[r0 + r] / k) * e, w->tmp + r * e, e);
}

/* d(loss)/d(probability) of the chosen experts from d(loss)/d(weight): through the
 * renormalisation w_s = p_s / sum (a constant sum when clamped). */
static void sel_bwd(const train_model *tm, const train_acts *a, const train_work *w, int32_t t,
                    float *dp)
{
    const int k = tm->hp.n_expert_used;
    const float *dws = w->dsel_w + (int64_t)t * k, *ws = a->sel_w + (int64_t)t * k;
    const int32_t *sel = a->sel + (int64_t)t * k;
    const float sum = a->sel_sum[t];
    if (!tm->arch->moe_renorm) {
        for (int s = 0; s < k; s++) dp[sel[s]] += dws[s];
        return;
    }
    if (sum < TRAIN_MOE_MIN_SUM) {
        for (int s = 0; s < k; s++) dp[sel[s]] += dws[s] / TRAIN_MOE_MIN_SUM;
        return;
    }
    double dot = 0.0;
    for (int s = 0; s < k; s++) dot += (double)dws[s] * ws[s];
    for (int s = 0; s < k; s++) dp[sel[s]] += (dws[s] - (float)dot) / sum;
}

/* The router: weights' gradients to probabilities (plus the load-balancing loss's), through
 * the softmax to the logits, and through gate_inp. */
static void router_bwd(const train_model *tm, train_work *w, tensor_pool *pool, int il, float scale)
{
    const train_layer *l = &tm->layers[il];
    const train_acts *a = &w->acts[il];
    const int nx = tm->hp.n_expert;
    const float *f = w->expert_f + (size_t)il * (size_t)nx;
    const float aux = tm->moe_aux_coef * scale * (float)nx / (float)tm->hp.n_layer / (float)w->n;
    float dp[1024]; /* n_expert <= 1024 (model_load's bound) */
    for (int32_t t = 0; t < w->n; t++) {
        for (int x = 0; x < nx; x++) dp[x] = tm->moe_aux_coef > 0.0f ? aux * f[x] : 0.0f;
        sel_bwd(tm, a, w, t, dp);
        const float *p = a->probs + (int64_t)t * nx;
        double dot = 0.0;
        for (int x = 0; x < nx; x++) dot += (double)p[x] * dp[x];
        for (int x = 0; x < nx; x++) w->dprobs[(int64_t)t * nx + x] = p[x] * (dp[x] - (float)dot);
    }
    train_linear_bwd(w, pool, l->gate_inp->w, l->gate_inp->g, tm->hp.n_embd, nx, a->xn2, w->dprobs,
                     w->n, w->dxn);
}

static void moe_ffn_bwd(const train_model *tm, train_work *w, tensor_pool *pool, int il,
                        float scale)
{
    const train_acts *a = &w->acts[il];
    const int64_t e = tm->hp.n_embd;
    const int k = tm->hp.n_expert_used;
    for (int32_t ts = 0; ts < w->n * k; ts++) {
        const float *dy = w->dx + (ts / k) * e, *eo = a->eo + (int64_t)ts * e;
        double s = 0.0;
        for (int64_t i = 0; i < e; i++) s += (double)dy[i] * eo[i];
        w->dsel_w[ts] = (float)s;
    }
    for (int x = 0; x < tm->hp.n_expert; x++) expert_bwd(tm, w, pool, il, x);
    router_bwd(tm, w, pool, il, scale);
}

/* ---- attention -------------------------------------------------------------------------- */

static void attention_bwd(const train_model *tm, train_work *w, tensor_pool *pool, int il)
{
    const model_hparams *hp = &tm->hp;
    const train_layer *l = &tm->layers[il];
    const train_acts *a = &w->acts[il];
    const int64_t nq = (int64_t)hp->n_head * hp->head_dim, e = hp->n_embd;
    const int64_t nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    memset(w->datt, 0, (size_t)(w->n * nq) * sizeof(float));
    proj_bwd(w, pool, l->wo, &l->lora[TRAIN_LORA_O], a, TRAIN_LORA_O, a->att, w->dx2, w->datt);
    train_attn_bwd(tm, w, pool, a);
    for (int32_t r = 0; r < w->n && hp->n_rot > 0; r++) {
        const float *cs = w->rope_cs + (size_t)(r % w->n_tok) * hp->n_rot;
        model_rope_row(w->dq + r * nq, hp->n_head, hp->head_dim, hp->n_rot, cs, tm->arch->rope,
                       true);
        model_rope_row(w->dk + r * nkv, hp->n_head_kv, hp->head_dim, hp->n_rot, cs, tm->arch->rope,
                       true);
    }
    bias_bwd(l->bq, w->dq, w->n);
    bias_bwd(l->bk, w->dk, w->n);
    bias_bwd(l->bv, w->dv, w->n);
    memset(w->dxn, 0, (size_t)(w->n * e) * sizeof(float));
    proj_bwd(w, pool, l->wq, &l->lora[TRAIN_LORA_Q], a, TRAIN_LORA_Q, a->xn1, w->dq, w->dxn);
    proj_bwd(w, pool, l->wk, &l->lora[TRAIN_LORA_K], a, TRAIN_LORA_K, a->xn1, w->dk, w->dxn);
    proj_bwd(w, pool, l->wv, &l->lora[TRAIN_LORA_V], a, TRAIN_LORA_V, a->xn1, w->dv, w->dxn);
}

/* w->dx holds d(loss)/d(layer output) on entry and d(loss)/d(layer input) on return. */
static void layer_bwd(const train_model *tm, train_work *w, tensor_pool *pool, int il, float scale)
{
    const train_layer *l = &tm->layers[il];
    const train_acts *a = &w->acts[il];
    const int64_t e = tm->hp.n_embd, n = (int64_t)w->n * e;
    memset(w->dxn, 0, (size_t)n * sizeof(float));
    if (tm->hp.n_expert)
        moe_ffn_bwd(tm, w, pool, il, scale);
    else
        dense_ffn_bwd(tm, w, pool, il);
    memcpy(w->dx2, w->dx, (size_t)n * sizeof(float));
    train_rms_norm_bwd(a->x2, l->ffn_norm->w, a->rstd2, w->dxn, w->dx2, l->ffn_norm->g, w->n, e);
    attention_bwd(tm, w, pool, il);
    memcpy(w->dx, w->dx2, (size_t)n * sizeof(float));
    train_rms_norm_bwd(a->x, l->attn_norm->w, a->rstd1, w->dxn, w->dx, l->attn_norm->g, w->n, e);
}

/* Scratch of the attention backward for every thread of pool (grown when the pool is). */
static mica_status attn_scratch(const train_model *tm, train_work *w, tensor_pool *pool,
                                mica_err *err)
{
    const int threads = pool ? tensor_pool_size(pool) : 1;
    if (threads <= w->attn_threads) return MICA_OK;
    free(w->attn_scratch);
    w->attn_threads = 0;
    w->attn_scratch = core_calloc((size_t)threads * train_attn_scratch_floats(w, tm), 4);
    if (!w->attn_scratch)
        return core_fail(err, MICA_ENOMEM, "out of memory for the attention backward");
    w->attn_threads = threads;
    return MICA_OK;
}

mica_status train_backward(train_model *tm, train_work *w, tensor_pool *pool, float scale,
                           mica_err *err)
{
    const model_hparams *hp = &tm->hp;
    const int64_t e = hp->n_embd;
    mica_status st = attn_scratch(tm, w, pool, err);
    if (st) return st;
    loss_bwd(tm, w, scale);
    memset(w->dxn, 0, (size_t)(w->n * e) * sizeof(float));
    train_linear_bwd(w, pool, tm->output->w, tm->output->g, e, hp->n_vocab, w->xnf, w->dlogits,
                     w->n, w->dxn);
    train_lora_bwd(w, pool, &tm->output_lora, &w->head, TRAIN_LORA_HEAD, w->xnf, e, hp->n_vocab,
                   w->dlogits, w->dxn);
    memset(w->dx, 0, (size_t)(w->n * e) * sizeof(float));
    train_rms_norm_bwd(w->xf, tm->output_norm->w, w->rstdf, w->dxn, w->dx, tm->output_norm->g, w->n,
                       e);
    for (int il = hp->n_layer - 1; il >= 0; il--) layer_bwd(tm, w, pool, il, scale);
    for (int32_t r = 0; tm->tok_embd->g && r < w->n; r++)
        train_add(tm->tok_embd->g + (int64_t)w->tokens[r] * e, w->dx + r * e, e);
    return MICA_OK;
}
