/*
 * forward.c - the one forward pass shared by every architecture: embeddings, per layer
 * attention (RMSNorm, q/k/v projections with optional biases and q/k norms, RoPE, grouped-
 * query attention over the F32 KV cache) and a feed-forward block (dense SwiGLU, or a
 * Mixture-of-Experts block that replaces it), then the output norm and projection.
 * Architecture differences come from model_arch and model_hparams, not from copies.
 *
 * Element-wise numerics follow ggml-cpu (float math, double sums where ggml uses them), so
 * logits match llama.cpp's to about 1e-6. Matmuls are tensor_matmul (tensor_matmul_multi for
 * q/k/v and gate/up, which share their input: one conversion, one job on the pool); the
 * attention products are tensor_attn_scores / tensor_attn_values, which compute each element
 * with the plain sequential float sums this file used to spell out. Work that scales with the
 * batch (attention, SwiGLU) runs on the pool. LoRA adapters (lora.h) add their products after
 * the matmuls they adapt, only when a token of the batch uses one. Called by engine/.
 */
#include "model.h"
#include "model/lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Query rows that share one key/value head go through the attention products together
 * (tensor_attn_scores / tensor_attn_values, whose SIMD versions put rows in vector lanes):
 * the heads of one KV head's group for a few consecutive tokens of the batch. */
#define ATTN_ROWS 16

struct model_work {
    int32_t n_batch, n_ctx;
    int n_threads;
    float *x;       /* (n_batch, n_embd) residual stream */
    float *xn;      /* (n_batch, n_embd) normalised input of a block */
    float *q;       /* (n_batch, n_head*head_dim) */
    float *k, *v;   /* (n_batch, n_head_kv*head_dim) */
    float *att;     /* (n_batch, n_head*head_dim) attention output before wo */
    float *out;     /* (n_batch, n_embd) a block's output before the residual add */
    float *gate;    /* (n_batch, max ffn size) */
    float *up;      /* (n_batch, max ffn size) */
    float *scores;  /* (n_threads, ATTN_ROWS, n_ctx) attention probabilities */
    float *rope_cs; /* (n_batch, n_rot) cos, sin pairs of each token's rotation angles */
    /* Mixture of experts */
    float *router;     /* (n_batch, n_expert) probabilities */
    int32_t *sel;      /* (n_batch, n_expert_used) chosen experts */
    float *sel_w;      /* (n_batch, n_expert_used) their weights */
    int32_t *rows;     /* (n_batch * n_expert_used) (token, slot) pairs routed to one expert */
    float *xg;         /* (n_batch, n_embd) gathered inputs of one expert */
    float *exp_out;    /* (n_batch, n_expert_used, n_embd) expert outputs per slot */
    float *shexp_gate; /* (n_batch) */
    model_moe_stats stats;
    lora_work *lora; /* not owned; NULL: no adapters */
    bool lora_on;    /* the current batch has tokens that use an adapter */
};

/* ---- scratch ------------------------------------------------------------------------- */

static int32_t max3(int32_t a, int32_t b, int32_t c)
{
    int32_t m = a > b ? a : b;
    return m > c ? m : c;
}

mica_status model_work_new(model_work **out, const model *m, int32_t n_batch, int32_t n_ctx,
                           int n_threads, mica_err *err)
{
    const model_hparams *hp = &m->hp;
    const size_t nb = (size_t)n_batch, e = (size_t)hp->n_embd;
    const size_t nq = (size_t)hp->n_head * hp->head_dim;
    const size_t nkv = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t ff = (size_t)max3(hp->n_ff, hp->n_ff_exp, hp->n_ff_shexp);
    const size_t nx = (size_t)(hp->n_expert ? hp->n_expert : 1);
    const size_t nu = (size_t)(hp->n_expert_used ? hp->n_expert_used : 1);
    *out = NULL;
    if (n_batch < 1 || n_ctx < 1 || n_threads < 1)
        return core_fail(err, MICA_EINVAL, "batch %d, context %d and threads %d must be >= 1",
                         n_batch, n_ctx, n_threads);
    model_work *w = core_calloc(1, sizeof *w);
    if (!w) goto oom;
    w->n_batch = n_batch;
    w->n_ctx = n_ctx;
    w->n_threads = n_threads;
    w->x = core_calloc(nb * e, sizeof(float));
    w->xn = core_calloc(nb * e, sizeof(float));
    w->q = core_calloc(nb * nq, sizeof(float));
    w->k = core_calloc(nb * nkv, sizeof(float));
    w->v = core_calloc(nb * nkv, sizeof(float));
    w->att = core_calloc(nb * nq, sizeof(float));
    w->out = core_calloc(nb * e, sizeof(float));
    w->gate = core_calloc(nb * ff, sizeof(float));
    w->up = core_calloc(nb * ff, sizeof(float));
    w->scores = core_calloc((size_t)n_threads * ATTN_ROWS * (size_t)n_ctx, sizeof(float));
    w->rope_cs = core_calloc(nb * (size_t)(hp->n_rot > 0 ? hp->n_rot : 1), sizeof(float));
    w->router = core_calloc(nb * nx, sizeof(float));
    w->sel = core_calloc(nb * nu, sizeof(int32_t));
    w->sel_w = core_calloc(nb * nu, sizeof(float));
    w->rows = core_calloc(nb * nu, sizeof(int32_t));
    w->xg = core_calloc(nb * e, sizeof(float));
    w->exp_out = core_calloc(nb * nu * e, sizeof(float));
    w->shexp_gate = core_calloc(nb, sizeof(float));
    if (hp->n_expert) {
        const size_t n_stats = (size_t)hp->n_layer * (size_t)hp->n_expert;
        w->stats.n_layer = hp->n_layer;
        w->stats.n_expert = hp->n_expert;
        w->stats.n_tokens = core_calloc(n_stats, sizeof(uint64_t));
        w->stats.weight_sum = core_calloc(n_stats, sizeof(double));
        if (!w->stats.n_tokens || !w->stats.weight_sum) goto oom;
    }
    if (!w->x || !w->xn || !w->q || !w->k || !w->v || !w->att || !w->out || !w->gate || !w->up ||
        !w->scores || !w->rope_cs || !w->router || !w->sel || !w->sel_w || !w->rows || !w->xg ||
        !w->exp_out || !w->shexp_gate)
        goto oom;
    *out = w;
    return MICA_OK;
oom:
    model_work_free(w);
    return core_fail(err, MICA_ENOMEM, "out of memory for a batch of %d tokens", n_batch);
}

void model_work_free(model_work *w)
{
    if (!w) return;
    float *bufs[] = {w->x,     w->xn,   w->q,       w->k,         w->v,       w->att,
                     w->out,   w->gate, w->up,      w->scores,    w->rope_cs, w->router,
                     w->sel_w, w->xg,   w->exp_out, w->shexp_gate};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(w->sel);
    free(w->rows);
    free(w->stats.n_tokens);
    free(w->stats.weight_sum);
    free(w);
}

const model_moe_stats *model_work_moe_stats(const model_work *w)
{
    return &w->stats;
}

void model_work_set_lora(model_work *w, lora_work *lw)
{
    w->lora = lw;
}

void model_work_reset_moe_stats(model_work *w)
{
    const size_t n = (size_t)w->stats.n_layer * (size_t)w->stats.n_expert;
    if (!n) return;
    memset(w->stats.n_tokens, 0, n * sizeof *w->stats.n_tokens);
    memset(w->stats.weight_sum, 0, n * sizeof *w->stats.weight_sum);
}

/* ---- element-wise operations (ggml-cpu's numerics) ----------------------------------- */

/* y = x / sqrt(mean(x^2) + eps) * w: squares in float, sum in double, mean in float. */
static void rms_norm(const float *x, const float *w, float *y, int64_t n, float eps)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

static void rms_norm_rows(const float *x, const float *w, float *y, int64_t n_rows, int64_t n,
                          float eps)
{
    for (int64_t r = 0; r < n_rows; r++) rms_norm(x + r * n, w, y + r * n, n, eps);
}

typedef struct norm_job {
    const float *x, *w;
    float *y;
    int64_t n;
    float eps;
} norm_job;

static void norm_range(void *ctx, int64_t r0, int64_t r1, int thread)
{
    const norm_job *j = ctx;
    rms_norm_rows(j->x + r0 * j->n, j->w, j->y + r0 * j->n, r1 - r0, j->n, j->eps);
}

/* rms_norm_rows on the pool when the batch is big enough to pay for the dispatch. */
static void rms_norm_rows_pool(tensor_pool *pool, const float *x, const float *w, float *y,
                               int64_t n_rows, int64_t n, float eps)
{
    norm_job j = {x, w, y, n, eps};
    tensor_pool_for(n_rows * n >= 16 * 1024 ? pool : NULL, n_rows, norm_range, &j);
}

typedef struct swiglu_job {
    float *gate;
    const float *up;
} swiglu_job;

/* Elements [i0, i1) of a batch's gate and up (exp is most of a prompt's element-wise work). */
static void swiglu_range(void *ctx, int64_t i0, int64_t i1, int thread)
{
    const swiglu_job *j = ctx;
    tensor_swiglu(j->gate + i0, j->up + i0, j->gate + i0, i1 - i0);
}

static void add_bias_rows(float *y, const float *b, int64_t n_rows, int64_t n)
{
    if (!b) return;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) y[r * n + i] += b[i];
}

static void scale_rows(float *y, int64_t n, float s)
{
    if (s == 1.0f) return;
    for (int64_t i = 0; i < n; i++) y[i] *= s;
}

/* y += the products of the adapters of target t for the n rows of x, when the batch has any. */
static void lora_add(model_work *w, tensor_pool *pool, lora_target t, const lora_rows *lr,
                     const float *x, int32_t n, float *y)
{
    if (w->lora_on) lora_work_apply(w->lora, pool, t, lr, x, n, y);
}

static void add_into(float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

/* ---- attention ----------------------------------------------------------------------- */

typedef struct attn_job {
    const model *m;
    model_work *w;
    const model_kv *kv;
    const model_batch_tok *batch;
    int il;
    int32_t n; /* tokens in the batch */
} attn_job;

static size_t kv_offset(const model *m, const model_kv *kv, int il, int32_t seq, int32_t pos)
{
    const size_t nkv = (size_t)m->hp.n_head_kv * (size_t)m->hp.head_dim;
    return (((size_t)il * (size_t)kv->n_seq + (size_t)seq) * (size_t)kv->n_ctx + (size_t)pos) * nkv;
}

/* Rows of one batch: tokens [t0, t1) of one sequence, query heads [h0, h1) of KV head kvh;
 * (t1 - t0) * (h1 - h0) <= ATTN_ROWS. p: ATTN_ROWS rows of n_ctx floats. */
static void attn_rows(const attn_job *j, int32_t t0, int32_t t1, int h0, int h1, int kvh, float *p)
{
    const model_hparams *hp = &j->m->hp;
    const int hd = hp->head_dim;
    const size_t stride = (size_t)hp->n_head_kv * hd, n_ctx = (size_t)j->w->n_ctx;
    const float *q[ATTN_ROWS];
    float *o[ATTN_ROWS];
    int32_t n[ATTN_ROWS], n_max = 0;
    int rows = 0;
    for (int32_t t = t0; t < t1; t++)
        for (int h = h0; h < h1; h++) {
            q[rows] = j->w->q + ((int64_t)t * hp->n_head + h) * hd;
            o[rows] = j->w->att + ((int64_t)t * hp->n_head + h) * hd;
            n[rows] = j->batch[t].pos + 1;
            n_max = n[rows] > n_max ? n[rows] : n_max;
            rows++;
        }
    /* Positions below n_max are all in the cache: the batch's keys were stored first. */
    const size_t base = kv_offset(j->m, j->kv, j->il, j->batch[t0].seq, 0) + (size_t)kvh * hd;
    tensor_attn_scores(q, rows, j->kv->k + base, stride, n_max, hd, hp->attn_scale, p, n_ctx);
    for (int r = 0; r < rows; r++) model_softmax(p + (size_t)r * n_ctx, n[r]);
    tensor_attn_values(p, n_ctx, rows, n, j->kv->v + base, stride, hd, o);
}

/* Tokens per work item: as many as fill ATTN_ROWS rows with one KV head's query heads. */
static int32_t attn_tokens_per_item(const model_hparams *hp)
{
    const int group = hp->n_head / hp->n_head_kv;
    return group >= ATTN_ROWS ? 1 : ATTN_ROWS / group;
}

/* Work item i: a block of tokens times one KV head, split into runs of one sequence and
 * chunks of at most ATTN_ROWS rows. */
static void attn_item(const attn_job *j, int64_t i, float *p)
{
    const model_hparams *hp = &j->m->hp;
    const int group = hp->n_head / hp->n_head_kv; /* consecutive heads share a KV head */
    const int kvh = (int)(i % hp->n_head_kv);
    const int32_t per = attn_tokens_per_item(hp);
    const int32_t b0 = (int32_t)(i / hp->n_head_kv) * per;
    const int32_t b1 = b0 + per < j->n ? b0 + per : j->n;
    for (int32_t t0 = b0; t0 < b1;) {
        int32_t t1 = t0 + 1;
        while (t1 < b1 && j->batch[t1].seq == j->batch[t0].seq) t1++;
        if (group > ATTN_ROWS) {
            for (int32_t t = t0; t < t1; t++)
                for (int h = 0; h < group; h += ATTN_ROWS)
                    attn_rows(j, t, t + 1, kvh * group + h,
                              kvh * group + (h + ATTN_ROWS < group ? h + ATTN_ROWS : group), kvh,
                              p);
        } else {
            attn_rows(j, t0, t1, kvh * group, (kvh + 1) * group, kvh, p);
        }
        t0 = t1;
    }
}

static void attn_range(void *ctx, int64_t i0, int64_t i1, int thread)
{
    const attn_job *j = ctx;
    float *p = j->w->scores + (size_t)thread * ATTN_ROWS * (size_t)j->w->n_ctx;
    for (int64_t i = i0; i < i1; i++) attn_item(j, i, p);
}

/* Per-head (qwen3) or whole-row (olmoe) RMSNorm of q and k, before RoPE. */
static void qk_norm(const model *m, const model_layer *l, model_work *w, int32_t n)
{
    const model_hparams *hp = &m->hp;
    const int64_t nq = (int64_t)hp->n_head * hp->head_dim;
    const int64_t nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    switch (m->arch->qk_norm) {
    case MODEL_QK_NORM_NONE:
        return;
    case MODEL_QK_NORM_HEAD:
        rms_norm_rows(w->q, l->q_norm, w->q, n * hp->n_head, hp->head_dim, hp->norm_eps);
        rms_norm_rows(w->k, l->k_norm, w->k, n * hp->n_head_kv, hp->head_dim, hp->norm_eps);
        return;
    case MODEL_QK_NORM_FULL:
        rms_norm_rows(w->q, l->q_norm, w->q, n, nq, hp->norm_eps);
        rms_norm_rows(w->k, l->k_norm, w->k, n, nkv, hp->norm_eps);
        return;
    }
}

static void attention_block(const model *m, int il, model_work *w, model_kv *kv, tensor_pool *pool,
                            const model_batch_tok *batch, int32_t n)
{
    const model_hparams *hp = &m->hp;
    const model_layer *l = &m->layers[il];
    const int64_t nq = (int64_t)hp->n_head * hp->head_dim;
    const int64_t nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    rms_norm_rows_pool(pool, w->x, l->attn_norm, w->xn, n, hp->n_embd, hp->norm_eps);
    /* One job for the three projections of the same input (one conversion of it). */
    const tensor_view *wqkv[3] = {&l->wq, &l->wk, &l->wv};
    float *const yqkv[3] = {w->q, w->k, w->v};
    tensor_matmul_multi(pool, wqkv, 3, w->xn, n, yqkv);
    const lora_rows lr = {il, 0, NULL, 1};
    lora_add(w, pool, LORA_ATTN_Q, &lr, w->xn, n, w->q);
    lora_add(w, pool, LORA_ATTN_K, &lr, w->xn, n, w->k);
    lora_add(w, pool, LORA_ATTN_V, &lr, w->xn, n, w->v);
    add_bias_rows(w->q, l->bq, n, nq);
    add_bias_rows(w->k, l->bk, n, nkv);
    add_bias_rows(w->v, l->bv, n, nkv);
    qk_norm(m, l, w, n);
    for (int32_t t = 0; t < n; t++) {
        if (hp->rope_on && hp->n_rot > 0) {
            const float *cs = w->rope_cs + (int64_t)t * hp->n_rot;
            model_rope_row(w->q + t * nq, hp->n_head, hp->head_dim, hp->n_rot, cs, m->arch->rope,
                           false);
            model_rope_row(w->k + t * nkv, hp->n_head_kv, hp->head_dim, hp->n_rot, cs,
                           m->arch->rope, false);
        }
        const size_t o = kv_offset(m, kv, il, batch[t].seq, batch[t].pos);
        memcpy(kv->k + o, w->k + t * nkv, (size_t)nkv * sizeof(float));
        memcpy(kv->v + o, w->v + t * nkv, (size_t)nkv * sizeof(float));
    }
    attn_job job = {m, w, kv, batch, il, n};
    const int32_t per = attn_tokens_per_item(hp);
    tensor_pool_for(pool, (int64_t)((n + per - 1) / per) * hp->n_head_kv, attn_range, &job);
    tensor_matmul(pool, &l->wo, w->att, n, w->out);
    lora_add(w, pool, LORA_ATTN_OUT, &lr, w->att, n, w->out);
    add_bias_rows(w->out, l->bo, n, hp->n_embd);
    scale_rows(w->out, (int64_t)n * hp->n_embd, hp->residual_scale);
    add_into(w->x, w->out, (int64_t)n * hp->n_embd);
}

/* ---- feed-forward -------------------------------------------------------------------- */

/* The LoRA targets of one SwiGLU FFN and the batch tokens its rows belong to. */
typedef struct ffn_lora {
    lora_target gate, up, down;
    lora_rows rows;
} ffn_lora;

/* down(silu(gate(x)) * up(x)) for n rows of x into y. */
static void swiglu_ffn(tensor_pool *pool, model_work *w, const tensor_view *gate,
                       const tensor_view *up, const tensor_view *down, const ffn_lora *fl,
                       const float *x, int32_t n, float *y)
{
    const int64_t ff = gate->ne[1];
    const tensor_view *wgu[2] = {gate, up};
    float *const ygu[2] = {w->gate, w->up};
    tensor_matmul_multi(pool, wgu, 2, x, n, ygu);
    lora_add(w, pool, fl->gate, &fl->rows, x, n, w->gate);
    lora_add(w, pool, fl->up, &fl->rows, x, n, w->up);
    swiglu_job sj = {w->gate, w->up};
    if (n * ff >= 16 * 1024)
        tensor_pool_for(pool, n * ff, swiglu_range, &sj);
    else
        tensor_swiglu(w->gate, w->up, w->gate, n * ff);
    tensor_matmul(pool, down, w->gate, n, y);
    lora_add(w, pool, fl->down, &fl->rows, w->gate, n, y);
}

/* Top-k of one row of router probabilities, largest first. */
static void moe_count(model_work *w, int il, int32_t n, int k)
{
    uint64_t *tokens = w->stats.n_tokens + (size_t)il * (size_t)w->stats.n_expert;
    double *weights = w->stats.weight_sum + (size_t)il * (size_t)w->stats.n_expert;
    for (int32_t i = 0; i < n * k; i++) {
        tokens[w->sel[i]]++;
        weights[w->sel[i]] += w->sel_w[i];
    }
}

/* Softmax over all experts, top-k, optional renormalisation (clamped as llama.cpp does). */
static void moe_route(const model *m, int il, model_work *w, tensor_pool *pool, int32_t n)
{
    const int nx = m->hp.n_expert, k = m->hp.n_expert_used;
    tensor_matmul(pool, &m->layers[il].gate_inp, w->xn, n, w->router);
    lora_add(w, pool, LORA_FFN_GATE_INP, &(lora_rows){il, 0, NULL, 1}, w->xn, n, w->router);
    for (int32_t t = 0; t < n; t++) {
        float *probs = w->router + (int64_t)t * nx;
        model_softmax(probs, nx);
        int32_t *sel = w->sel + (int64_t)t * k;
        float *sel_w = w->sel_w + (int64_t)t * k;
        model_top_k(probs, nx, k, sel, sel_w);
        if (!m->arch->moe_renorm) continue;
        float sum = 0.0f;
        for (int s = 0; s < k; s++) sum += sel_w[s];
        if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
        for (int s = 0; s < k; s++) sel_w[s] /= sum;
    }
}

/* Runs expert e on the tokens routed to it, all at once, so its weights are read once per
 * batch; writes each result into that token's slot of exp_out. */
static void moe_run_expert(const model *m, int il, model_work *w, tensor_pool *pool, int32_t n,
                           int e)
{
    const model_layer *l = &m->layers[il];
    const int k = m->hp.n_expert_used;
    const int64_t ne = m->hp.n_embd;
    int32_t n_rows = 0;
    for (int32_t i = 0; i < n * k; i++)
        if (w->sel[i] == e) w->rows[n_rows++] = i;
    if (!n_rows) return;
    for (int32_t r = 0; r < n_rows; r++)
        memcpy(w->xg + r * ne, w->xn + (w->rows[r] / k) * ne, (size_t)ne * sizeof(float));
    tensor_view gate, up;
    if (l->gate_up_exps.data) {
        const int64_t ff = m->hp.n_ff_exp;
        const tensor_view both = tensor_view_matrix(&l->gate_up_exps, e);
        gate = tensor_view_rows(&both, 0, ff);
        up = tensor_view_rows(&both, ff, ff);
    } else {
        gate = tensor_view_matrix(&l->gate_exps, e);
        up = tensor_view_matrix(&l->up_exps, e);
    }
    const tensor_view down = tensor_view_matrix(&l->down_exps, e);
    /* Row r is slot rows[r] of token rows[r] / k. */
    const ffn_lora fl = {
        LORA_FFN_GATE_EXPS, LORA_FFN_UP_EXPS, LORA_FFN_DOWN_EXPS, {il, e, w->rows, k}};
    /* w->out is free until the block's sum is formed below. */
    swiglu_ffn(pool, w, &gate, &up, &down, &fl, w->xg, n_rows, w->out);
    for (int32_t r = 0; r < n_rows; r++)
        memcpy(w->exp_out + (int64_t)w->rows[r] * ne, w->out + r * ne, (size_t)ne * sizeof(float));
}

/* Each token's weight of the shared expert: sigmoid(gate_inp_shexp . x), or 1 without it. */
static void moe_shared_gates(const model *m, const model_layer *l, model_work *w, tensor_pool *pool,
                             const lora_rows *lr, int32_t n)
{
    const int64_t ne = m->hp.n_embd;
    for (int32_t t = 0; t < n; t++) {
        float s = 0.0f;
        for (int64_t i = 0; l->gate_inp_shexp && i < ne; i++)
            s += l->gate_inp_shexp[i] * w->xn[t * ne + i];
        w->shexp_gate[t] = s;
    }
    if (!l->gate_inp_shexp) {
        for (int32_t t = 0; t < n; t++) w->shexp_gate[t] = 1.0f;
        return;
    }
    lora_add(w, pool, LORA_FFN_GATE_INP_SHEXP, lr, w->xn, n, w->shexp_gate);
    for (int32_t t = 0; t < n; t++)
        w->shexp_gate[t] = 1.0f / (1.0f + expf(-w->shexp_gate[t])); /* a real sigmoid */
}

static void moe_shared_expert(const model *m, int il, model_work *w, tensor_pool *pool, int32_t n)
{
    const model_layer *l = &m->layers[il];
    const int64_t ne = m->hp.n_embd;
    const ffn_lora fl = {
        LORA_FFN_GATE_SHEXP, LORA_FFN_UP_SHEXP, LORA_FFN_DOWN_SHEXP, {il, 0, NULL, 1}};
    moe_shared_gates(m, l, w, pool, &fl.rows, n);
    swiglu_ffn(pool, w, &l->gate_shexp, &l->up_shexp, &l->down_shexp, &fl, w->xn, n, w->xg);
    for (int32_t t = 0; t < n; t++)
        for (int64_t i = 0; i < ne; i++) w->out[t * ne + i] += w->xg[t * ne + i] * w->shexp_gate[t];
}

static void moe_block(const model *m, int il, model_work *w, tensor_pool *pool, int32_t n)
{
    const model_layer *l = &m->layers[il];
    const int k = m->hp.n_expert_used;
    const int64_t ne = m->hp.n_embd;
    moe_route(m, il, w, pool, n);
    moe_count(w, il, n, k);
    for (int e = 0; e < m->hp.n_expert; e++) moe_run_expert(m, il, w, pool, n, e);
    /* Weighted sum in selection order, as llama.cpp adds the expert outputs. */
    for (int32_t t = 0; t < n; t++) {
        float *o = w->out + t * ne;
        for (int64_t i = 0; i < ne; i++) o[i] = 0.0f;
        for (int s = 0; s < k; s++) {
            const float *eo = w->exp_out + ((int64_t)t * k + s) * ne;
            const float ws = w->sel_w[t * k + s];
            for (int64_t i = 0; i < ne; i++) o[i] += eo[i] * ws;
        }
    }
    if (l->gate_shexp.data) moe_shared_expert(m, il, w, pool, n);
}

static void ffn_block(const model *m, int il, model_work *w, tensor_pool *pool, int32_t n)
{
    const model_hparams *hp = &m->hp;
    const model_layer *l = &m->layers[il];
    rms_norm_rows_pool(pool, w->x, l->ffn_norm, w->xn, n, hp->n_embd, hp->norm_eps);
    if (l->gate_inp.data)
        moe_block(m, il, w, pool, n);
    else
        swiglu_ffn(pool, w, &l->ffn_gate, &l->ffn_up, &l->ffn_down,
                   &(ffn_lora){LORA_FFN_GATE, LORA_FFN_UP, LORA_FFN_DOWN, {il, 0, NULL, 1}}, w->xn,
                   n, w->out);
    scale_rows(w->out, (int64_t)n * hp->n_embd, hp->residual_scale);
    add_into(w->x, w->out, (int64_t)n * hp->n_embd);
}

/* ---- the pass ------------------------------------------------------------------------ */

static mica_status check_batch(const model *m, const model_work *w, const model_kv *kv,
                               const model_batch_tok *batch, int32_t n, mica_err *err)
{
    if (n < 1 || n > w->n_batch)
        return core_fail(err, MICA_ERANGE, "batch of %d tokens (1 to %d allowed)", n, w->n_batch);
    for (int32_t t = 0; t < n; t++) {
        const model_batch_tok *b = &batch[t];
        if (b->token < 0 || b->token >= m->hp.n_vocab)
            return core_fail(err, MICA_ERANGE, "token id %d out of range [0, %d)", b->token,
                             m->hp.n_vocab);
        if (b->seq < 0 || b->seq >= kv->n_seq)
            return core_fail(err, MICA_ERANGE, "sequence %d out of range [0, %d)", b->seq,
                             kv->n_seq);
        if (b->pos < 0 || b->pos >= kv->n_ctx || b->pos >= w->n_ctx)
            return core_fail(err, MICA_ERANGE, "position %d is past the context size %d", b->pos,
                             kv->n_ctx);
    }
    return MICA_OK;
}

static void embed(const model *m, model_work *w, const model_batch_tok *batch, int32_t n)
{
    const int64_t ne = m->hp.n_embd;
    for (int32_t t = 0; t < n; t++) tensor_get_row(&m->tok_embd, batch[t].token, w->x + t * ne);
    if (w->lora_on) lora_work_embed(w->lora, batch, n, w->x);
    scale_rows(w->x, n * ne, m->hp.embd_scale);
}

/* Final norm and projection for the rows that want logits (llama.cpp skips the others). */
static void output_logits(const model *m, model_work *w, tensor_pool *pool,
                          const model_batch_tok *batch, int32_t n, float *logits)
{
    const model_hparams *hp = &m->hp;
    const int64_t ne = hp->n_embd;
    int32_t n_out = 0;
    for (int32_t t = 0; t < n; t++) {
        if (!batch[t].logits) continue;
        rms_norm(w->x + t * ne, m->output_norm, w->xn + n_out * ne, ne, hp->norm_eps);
        w->rows[n_out++] = t; /* the batch token of each output row, for LoRA */
    }
    if (!n_out) return;
    tensor_matmul(pool, &m->output, w->xn, n_out, logits);
    lora_add(w, pool, LORA_OUTPUT, &(lora_rows){0, 0, w->rows, 1}, w->xn, n_out, logits);
    add_bias_rows(logits, m->output_bias, n_out, hp->n_vocab);
    /* ggml_scale by the reciprocal, not a division, to match llama.cpp bit for bit. */
    scale_rows(logits, (int64_t)n_out * hp->n_vocab, 1.0f / hp->logit_scale);
}

/* Everything up to the final norm: the residual stream of every token is left in w->x. */
static mica_status forward_layers(const model *m, model_work *w, model_kv *kv, tensor_pool *pool,
                                  const model_batch_tok *batch, int32_t n, mica_err *err)
{
    mica_status st = check_batch(m, w, kv, batch, n, err);
    if (st) return st;
    w->lora_on = w->lora && lora_work_begin(w->lora, batch, n);
    embed(m, w, batch, n);
    if (m->hp.rope_on && m->hp.n_rot > 0)
        for (int32_t t = 0; t < n; t++)
            model_rope_angles(m->hp.n_rot, batch[t].pos, m->hp.rope_base,
                              w->rope_cs + (int64_t)t * m->hp.n_rot);
    for (int il = 0; il < m->hp.n_layer; il++) {
        attention_block(m, il, w, kv, pool, batch, n);
        ffn_block(m, il, w, pool, n);
    }
    return MICA_OK;
}

mica_status model_forward(const model *m, model_work *w, model_kv *kv, tensor_pool *pool,
                          const model_batch_tok *batch, int32_t n, float *logits, mica_err *err)
{
    mica_status st = forward_layers(m, w, kv, pool, batch, n, err);
    if (st) return st;
    output_logits(m, w, pool, batch, n, logits);
    return MICA_OK;
}

mica_status model_forward_hidden(const model *m, model_work *w, model_kv *kv, tensor_pool *pool,
                                 const model_batch_tok *batch, int32_t n, float *hidden,
                                 mica_err *err)
{
    mica_status st = forward_layers(m, w, kv, pool, batch, n, err);
    if (st) return st;
    rms_norm_rows(w->x, m->output_norm, hidden, n, m->hp.n_embd, m->hp.norm_eps);
    return MICA_OK;
}
