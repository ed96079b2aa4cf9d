/*
 * train_forward.c - the training forward pass: model/forward.c's computation for a batch of
 * whole sequences (positions 0..n_tok-1, causal), keeping every activation the backward pass
 * needs in train_work, then the masked mean cross-entropy (and the MoE load-balancing loss).
 * Owns train_work's memory. Does not own: the backward (train_backward.c), the attention core
 * (train_attn.c).
 */
#include "train/train_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the work area --------------------------------------------------------------------- */

/* Every buffer of a work area is recorded here so that one loop frees them all. */
typedef struct allocator {
    void **ptrs;
    int n, cap;
    bool ok;
} allocator;

static void *walloc(allocator *al, size_t n, size_t size)
{
    if (!al->ok) return NULL;
    if (al->n == al->cap) {
        const int cap = al->cap ? 2 * al->cap : 64;
        void **grown = realloc(al->ptrs, (size_t)cap * sizeof *grown);
        if (!grown) return al->ok = false, NULL;
        al->ptrs = grown;
        al->cap = cap;
    }
    void *p = core_calloc(n ? n : 1, size);
    if (!p) return al->ok = false, NULL;
    return al->ptrs[al->n++] = p;
}

/* The widths a work area is sized by. */
typedef struct dims {
    size_t n, e, nq, nkv, ff, nx, k, rows, wide, mat, r_max;
} dims;

static dims work_dims(const train_model *tm, int32_t n_seq, int32_t n_tok)
{
    const model_hparams *hp = &tm->hp;
    dims d = {0};
    d.n = (size_t)n_seq * (size_t)n_tok;
    d.e = (size_t)hp->n_embd;
    d.nq = (size_t)hp->n_head * hp->head_dim;
    d.nkv = (size_t)hp->n_head_kv * hp->head_dim;
    d.ff = (size_t)(hp->n_expert ? hp->n_ff_exp : hp->n_ff);
    d.nx = (size_t)hp->n_expert;
    d.k = (size_t)(hp->n_expert ? hp->n_expert_used : 1);
    d.rows = d.n * d.k;
    d.wide = d.e;
    const size_t widths[] = {d.nq, d.ff, (size_t)hp->n_vocab, d.nx};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        d.wide = widths[i] > d.wide ? widths[i] : d.wide;
    for (int i = 0; i < tm->n_tensors; i++) {
        const train_tensor *t = tm->tensors[i];
        const size_t m = (size_t)(t->ne[0] * t->ne[1]);
        d.mat = m > d.mat ? m : d.mat;
    }
    for (int il = 0; il < hp->n_layer; il++)
        for (int s = 0; s < TRAIN_LORA_N_SITES; s++) {
            const train_lora *lo = &tm->layers[il].lora[s];
            if (lo->a && (size_t)lo->a->ne[1] > d.r_max) d.r_max = (size_t)lo->a->ne[1];
        }
    const train_lora *ho = &tm->output_lora;
    if (ho->a && (size_t)ho->a->ne[1] > d.r_max) d.r_max = (size_t)ho->a->ne[1];
    return d;
}

static size_t lora_site_n_in(const dims *d, train_lora_site s)
{
    switch (s) {
    case TRAIN_LORA_O:
        return d->nq;
    case TRAIN_LORA_DOWN:
        return d->ff;
    default:
        return d->e;
    }
}

static void alloc_acts(allocator *al, const train_model *tm, const dims *d, int il, train_acts *a,
                       int32_t n_seq, int32_t n_tok)
{
    const size_t n = d->n;
    a->x = walloc(al, n * d->e, 4);
    a->rstd1 = walloc(al, n, 4);
    a->xn1 = walloc(al, n * d->e, 4);
    a->q = walloc(al, n * d->nq, 4);
    a->k = walloc(al, n * d->nkv, 4);
    a->v = walloc(al, n * d->nkv, 4);
    a->p = walloc(al, (size_t)n_seq * (size_t)tm->hp.n_head * (size_t)n_tok * (size_t)n_tok, 4);
    a->att = walloc(al, n * d->nq, 4);
    a->x2 = walloc(al, n * d->e, 4);
    a->rstd2 = walloc(al, n, 4);
    a->xn2 = walloc(al, n * d->e, 4);
    a->g = walloc(al, d->rows * d->ff, 4);
    a->u = walloc(al, d->rows * d->ff, 4);
    a->h = walloc(al, d->rows * d->ff, 4);
    if (d->nx) {
        a->probs = walloc(al, n * d->nx, 4);
        a->sel = walloc(al, d->rows, 4);
        a->sel_w = walloc(al, d->rows, 4);
        a->sel_sum = walloc(al, n, 4);
        a->eo = walloc(al, d->rows * d->e, 4);
        a->perm = walloc(al, d->rows, 4);
        a->off = walloc(al, d->nx + 1, 4);
    }
    for (int s = 0; s < TRAIN_LORA_N_SITES; s++) {
        const train_lora *lo = &tm->layers[il].lora[s];
        if (!lo->a) continue;
        const size_t n_in = lora_site_n_in(d, (train_lora_site)s);
        const size_t rows = lo->a->ne[2] > 1 ? d->rows : n; /* experts: n * k sorted rows */
        a->lora_u[s] = walloc(al, rows * (size_t)lo->a->ne[1], 4);
        if (tm->lora_dropout <= 0.0f) continue;
        a->lora_xd[s] = walloc(al, rows * n_in, 4);
        a->lora_keep[s] = walloc(al, rows * n_in, 1);
    }
}

/* The output adapter's buffers (its input is the final norm's output, n_embd wide). */
static void alloc_head(allocator *al, const train_model *tm, const dims *d, train_acts *a)
{
    const train_lora *lo = &tm->output_lora;
    if (!lo->a) return;
    a->lora_u[TRAIN_LORA_HEAD] = walloc(al, d->n * (size_t)lo->a->ne[1], 4);
    if (tm->lora_dropout <= 0.0f) return;
    a->lora_xd[TRAIN_LORA_HEAD] = walloc(al, d->n * d->e, 4);
    a->lora_keep[TRAIN_LORA_HEAD] = walloc(al, d->n * d->e, 1);
}

static void alloc_grads(allocator *al, train_work *w, const dims *d)
{
    const size_t n = d->n, xw = d->e > d->ff ? d->e : d->ff;
    w->dx = walloc(al, n * d->e, 4);
    w->dx2 = walloc(al, n * d->e, 4);
    w->dxn = walloc(al, n * d->e, 4);
    w->dq = walloc(al, n * d->nq, 4);
    w->dk = walloc(al, n * d->nkv, 4);
    w->dv = walloc(al, n * d->nkv, 4);
    w->datt = walloc(al, n * d->nq, 4);
    w->dg = walloc(al, d->rows * d->ff, 4);
    w->du = walloc(al, d->rows * d->ff, 4);
    w->dh = walloc(al, d->rows * d->ff, 4);
    w->dsel_w = walloc(al, d->rows, 4);
    w->dprobs = walloc(al, n * (d->nx ? d->nx : 1), 4);
    w->dlogits = walloc(al, n * d->wide, 4);
    w->xg = walloc(al, n * xw, 4);
    w->yg = walloc(al, n * xw, 4);
    w->ffn_out = walloc(al, n * d->e, 4);
    w->tmp = walloc(al, n * d->wide, 4);
    w->t_w = walloc(al, d->mat, 4);
    w->t_x = walloc(al, n * d->wide, 4);
    w->t_dy = walloc(al, n * d->wide, 4);
    w->t_out = walloc(al, n * d->wide > d->mat ? n * d->wide : d->mat, 4);
    w->lora_dy = walloc(al, n * d->wide, 4);
    w->lora_du = walloc(al, n * (d->r_max ? d->r_max : 1), 4);
    w->lora_dxd = walloc(al, n * d->wide, 4);
}

mica_status train_work_new(train_work **out, const train_model *tm, int32_t n_seq, int32_t n_tok,
                           mica_err *err)
{
    const model_hparams *hp = &tm->hp;
    *out = NULL;
    if (n_seq < 1 || n_tok < 1 || n_tok > hp->n_ctx_train)
        return core_fail(err, MICA_EINVAL, "batch of %d sequences of %d tokens (1 to %d tokens)",
                         n_seq, n_tok, hp->n_ctx_train);
    const dims d = work_dims(tm, n_seq, n_tok);
    allocator al = {NULL, 0, 0, true};
    train_work *w = walloc(&al, 1, sizeof *w);
    if (w) {
        w->n_seq = n_seq;
        w->n_tok = n_tok;
        w->n = n_seq * n_tok;
        w->acts = walloc(&al, (size_t)hp->n_layer, sizeof *w->acts);
    }
    for (int il = 0; w && w->acts && il < hp->n_layer; il++)
        alloc_acts(&al, tm, &d, il, &w->acts[il], n_seq, n_tok);
    if (w) {
        w->rope_cs = walloc(&al, (size_t)n_tok * (size_t)(hp->n_rot > 0 ? hp->n_rot : 1), 4);
        w->xf = walloc(&al, d.n * d.e, 4);
        w->rstdf = walloc(&al, d.n, 4);
        w->xnf = walloc(&al, d.n * d.e, 4);
        w->logits = walloc(&al, d.n * (size_t)hp->n_vocab, 4);
        w->expert_f = walloc(&al, (size_t)hp->n_layer * (d.nx ? d.nx : 1), 4);
        w->attn_len_causal = walloc(&al, (size_t)n_tok, 4);
        w->attn_len_full = walloc(&al, (size_t)n_tok, 4);
        alloc_grads(&al, w, &d);
        alloc_head(&al, tm, &d, &w->head);
    }
    if (!al.ok) {
        for (int i = al.n - 1; i >= 0; i--) free(al.ptrs[i]);
        free(al.ptrs);
        return core_fail(err, MICA_ENOMEM, "out of memory for a training batch of %d x %d", n_seq,
                         n_tok);
    }
    w->allocs = al.ptrs;
    w->n_allocs = al.n;
    w->n_tensors = tm->n_tensors;
    w->dropout_bufs = tm->lora_dropout > 0.0f;
    for (int32_t t = 0; t < n_tok; t++) {
        w->attn_len_causal[t] = t + 1;
        w->attn_len_full[t] = n_tok;
    }
    for (int32_t t = 0; t < n_tok && hp->n_rot > 0; t++)
        model_rope_angles(hp->n_rot, t, hp->rope_base, w->rope_cs + (size_t)t * hp->n_rot);
    *out = w;
    return MICA_OK;
}

void train_work_free(train_work *w)
{
    if (!w) return;
    free(w->attn_scratch);
    void **ptrs = w->allocs;
    /* w itself is the first allocation: free it last. */
    for (int i = w->n_allocs - 1; i >= 0; i--) free(ptrs[i]);
    free(ptrs);
}

const float *train_work_logits(const train_work *w)
{
    return w->logits;
}

int64_t train_work_n_targets(const train_work *w)
{
    return w->n_targets;
}

/* ---- the pass --------------------------------------------------------------------------- */

/* The dropout stream of one LoRA site of one layer in one pass. */
static uint64_t site_seed(uint64_t seed, int il, int s)
{
    return seed ^ ((uint64_t)(il * TRAIN_LORA_N_SITES + s + 1) * 0x9E3779B97F4A7C15ull);
}

/* y = x W^T (+ LoRA of site s, + bias). */
static void proj(const train_model *tm, train_work *w, tensor_pool *pool, int il,
                 const train_tensor *W, const train_tensor *b, train_lora_site s, const float *x,
                 float *y, uint64_t seed)
{
    const int64_t n_in = W->ne[0], n_out = W->ne[1];
    train_linear_fwd(pool, W->w, n_in, n_out, x, w->n, y);
    train_lora_fwd(w, pool, &tm->layers[il].lora[s], &w->acts[il], s, x, n_in, n_out, y,
                   site_seed(seed, il, (int)s));
    if (b)
        for (int64_t r = 0; r < w->n; r++) train_add(y + r * n_out, b->w, n_out);
}

static void attention_fwd(const train_model *tm, train_work *w, tensor_pool *pool, int il,
                          uint64_t seed)
{
    const model_hparams *hp = &tm->hp;
    const train_layer *l = &tm->layers[il];
    train_acts *a = &w->acts[il];
    const int64_t nq = (int64_t)hp->n_head * hp->head_dim, e = hp->n_embd;
    const int64_t nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    train_rms_norm(a->x, l->attn_norm->w, a->xn1, a->rstd1, w->n, e, hp->norm_eps);
    proj(tm, w, pool, il, l->wq, l->bq, TRAIN_LORA_Q, a->xn1, a->q, seed);
    proj(tm, w, pool, il, l->wk, l->bk, TRAIN_LORA_K, a->xn1, a->k, seed);
    proj(tm, w, pool, il, l->wv, l->bv, TRAIN_LORA_V, a->xn1, a->v, seed);
    for (int32_t r = 0; r < w->n && hp->n_rot > 0; r++) {
        const float *cs = w->rope_cs + (size_t)(r % w->n_tok) * hp->n_rot;
        model_rope_row(a->q + r * nq, hp->n_head, hp->head_dim, hp->n_rot, cs, tm->arch->rope,
                       false);
        model_rope_row(a->k + r * nkv, hp->n_head_kv, hp->head_dim, hp->n_rot, cs, tm->arch->rope,
                       false);
    }
    train_attn_fwd(tm, w, pool, a);
    proj(tm, w, pool, il, l->wo, NULL, TRAIN_LORA_O, a->att, w->ffn_out, seed);
    for (int64_t i = 0; i < w->n * e; i++) a->x2[i] = a->x[i] + w->ffn_out[i];
}

/* The dense FFN: SwiGLU with the LoRA products added after each matmul. */
static void dense_ffn_fwd(const train_model *tm, train_work *w, tensor_pool *pool, int il,
                          uint64_t seed)
{
    const train_layer *l = &tm->layers[il];
    train_acts *a = &w->acts[il];
    const int64_t e = tm->hp.n_embd, ff = tm->hp.n_ff, n = w->n;
    const train_lora *lo = l->lora;
    train_linear_fwd(pool, l->ffn_gate->w, e, ff, a->xn2, n, a->g);
    train_lora_fwd(w, pool, &lo[TRAIN_LORA_GATE], a, TRAIN_LORA_GATE, a->xn2, e, ff, a->g,
                   site_seed(seed, il, TRAIN_LORA_GATE));
    train_linear_fwd(pool, l->ffn_up->w, e, ff, a->xn2, n, a->u);
    train_lora_fwd(w, pool, &lo[TRAIN_LORA_UP], a, TRAIN_LORA_UP, a->xn2, e, ff, a->u,
                   site_seed(seed, il, TRAIN_LORA_UP));
    tensor_swiglu(a->g, a->u, a->h, n * ff);
    train_linear_fwd(pool, l->ffn_down->w, ff, e, a->h, n, w->ffn_out);
    train_lora_fwd(w, pool, &lo[TRAIN_LORA_DOWN], a, TRAIN_LORA_DOWN, a->h, ff, e, w->ffn_out,
                   site_seed(seed, il, TRAIN_LORA_DOWN));
}

/* Router softmax, top-k, renormalisation (as model/forward.c's moe_route), expert order. */
static void moe_route(const train_model *tm, train_work *w, tensor_pool *pool, int il)
{
    const train_layer *l = &tm->layers[il];
    train_acts *a = &w->acts[il];
    const int nx = tm->hp.n_expert, k = tm->hp.n_expert_used;
    train_linear_fwd(pool, l->gate_inp->w, tm->hp.n_embd, nx, a->xn2, w->n, a->probs);
    for (int32_t t = 0; t < w->n; t++) {
        float *probs = a->probs + (int64_t)t * nx, *sel_w = a->sel_w + (int64_t)t * k;
        model_softmax(probs, nx);
        model_top_k(probs, nx, k, a->sel + (int64_t)t * k, sel_w);
        float sum = 0.0f;
        for (int s = 0; s < k; s++) sum += sel_w[s];
        a->sel_sum[t] = sum;
        if (!tm->arch->moe_renorm) continue;
        if (sum < TRAIN_MOE_MIN_SUM) sum = TRAIN_MOE_MIN_SUM;
        for (int s = 0; s < k; s++) sel_w[s] /= sum;
    }
    /* Rows sorted by expert, each expert's in (token, slot) order as the inference gathers. */
    int32_t *off = a->off, n_rows = 0;
    float *f = w->expert_f + (size_t)il * (size_t)nx;
    for (int e = 0; e < nx; e++) {
        off[e] = n_rows;
        for (int32_t i = 0; i < w->n * k; i++)
            if (a->sel[i] == e) a->perm[n_rows++] = i;
        f[e] = (float)(n_rows - off[e]) / (float)w->n;
    }
    off[nx] = n_rows;
}

/* Expert x's rows [r0, r0 + cnt) (inputs in w->xg): SwiGLU with the expert's adapters, the
 * output in w->yg. */
static void expert_fwd(const train_model *tm, train_work *w, tensor_pool *pool, int il, int x,
                       int32_t r0, int32_t cnt, uint64_t seed)
{
    const train_layer *l = &tm->layers[il];
    train_acts *a = &w->acts[il];
    const int64_t e = tm->hp.n_embd, ff = tm->hp.n_ff_exp;
    const size_t mo = (size_t)x * (size_t)(e * ff);
    const train_lora *lo = l->lora;
    float *g = a->g + r0 * ff, *u = a->u + r0 * ff, *h = a->h + r0 * ff;
    const uint64_t xs = (uint64_t)(x + 1) * 0xD1B54A32D192ED03ull;
    train_linear_fwd(pool, l->gate_exps->w + mo, e, ff, w->xg, cnt, g);
    train_lora_fwd_rows(w, pool, &lo[TRAIN_LORA_GATE], x, a, TRAIN_LORA_GATE, r0, cnt, w->xg, e, ff,
                        g, site_seed(seed, il, TRAIN_LORA_GATE) ^ xs);
    train_linear_fwd(pool, l->up_exps->w + mo, e, ff, w->xg, cnt, u);
    train_lora_fwd_rows(w, pool, &lo[TRAIN_LORA_UP], x, a, TRAIN_LORA_UP, r0, cnt, w->xg, e, ff, u,
                        site_seed(seed, il, TRAIN_LORA_UP) ^ xs);
    tensor_swiglu(g, u, h, cnt * ff);
    train_linear_fwd(pool, l->down_exps->w + mo, ff, e, h, cnt, w->yg);
    train_lora_fwd_rows(w, pool, &lo[TRAIN_LORA_DOWN], x, a, TRAIN_LORA_DOWN, r0, cnt, h, ff, e,
                        w->yg, site_seed(seed, il, TRAIN_LORA_DOWN) ^ xs);
}

static void moe_ffn_fwd(const train_model *tm, train_work *w, tensor_pool *pool, int il,
                        uint64_t seed)
{
    train_acts *a = &w->acts[il];
    const int64_t e = tm->hp.n_embd;
    const int k = tm->hp.n_expert_used;
    moe_route(tm, w, pool, il);
    for (int x = 0; x < tm->hp.n_expert; x++) {
        const int32_t r0 = a->off[x], cnt = a->off[x + 1] - r0;
        if (!cnt) continue;
        for (int32_t r = 0; r < cnt; r++)
            memcpy(w->xg + r * e, a->xn2 + (a->perm[r0 + r] / k) * e, (size_t)e * sizeof(float));
        expert_fwd(tm, w, pool, il, x, r0, cnt, seed);
        for (int32_t r = 0; r < cnt; r++)
            memcpy(a->eo + (int64_t)a->perm[r0 + r] * e, w->yg + r * e, (size_t)e * sizeof(float));
    }
    /* Weighted sum in selection order, as llama.cpp adds the expert outputs. */
    for (int32_t t = 0; t < w->n; t++) {
        float *o = w->ffn_out + (int64_t)t * e;
        for (int64_t i = 0; i < e; i++) o[i] = 0.0f;
        for (int s = 0; s < k; s++) {
            const float *eo = a->eo + ((int64_t)t * k + s) * e;
            const float ws = a->sel_w[t * k + s];
            for (int64_t i = 0; i < e; i++) o[i] += eo[i] * ws;
        }
    }
}

static void layer_fwd(const train_model *tm, train_work *w, tensor_pool *pool, int il,
                      uint64_t seed)
{
    const model_hparams *hp = &tm->hp;
    train_acts *a = &w->acts[il];
    float *out = il + 1 < hp->n_layer ? w->acts[il + 1].x : w->xf;
    attention_fwd(tm, w, pool, il, seed);
    train_rms_norm(a->x2, tm->layers[il].ffn_norm->w, a->xn2, a->rstd2, w->n, hp->n_embd,
                   hp->norm_eps);
    if (hp->n_expert)
        moe_ffn_fwd(tm, w, pool, il, seed);
    else
        dense_ffn_fwd(tm, w, pool, il, seed);
    for (int64_t i = 0; i < w->n * hp->n_embd; i++) out[i] = a->x2[i] + w->ffn_out[i];
}

/* Mean cross-entropy over rows with a target; log-sum-exp in double. */
static double cross_entropy(train_work *w, int32_t n_vocab)
{
    double sum = 0.0;
    w->n_targets = 0;
    for (int32_t r = 0; r < w->n; r++) {
        if (w->targets[r] < 0) continue;
        const float *l = w->logits + (int64_t)r * n_vocab;
        float max = -INFINITY;
        for (int32_t i = 0; i < n_vocab; i++) max = l[i] > max ? l[i] : max;
        double s = 0.0;
        for (int32_t i = 0; i < n_vocab; i++) s += exp((double)l[i] - max);
        sum += (double)max + log(s) - l[w->targets[r]];
        w->n_targets++;
    }
    return w->n_targets ? sum / (double)w->n_targets : 0.0;
}

/* Switch-style: coef * mean over layers of n_expert * sum_e f_e * P_e, f_e the fraction of
 * tokens routed to e (over the top-k slots), P_e its mean router probability. */
static double moe_aux_loss(const train_model *tm, const train_work *w)
{
    const model_hparams *hp = &tm->hp;
    if (!hp->n_expert || tm->moe_aux_coef <= 0.0f) return 0.0;
    double total = 0.0;
    for (int il = 0; il < hp->n_layer; il++) {
        const float *f = w->expert_f + (size_t)il * (size_t)hp->n_expert;
        for (int e = 0; e < hp->n_expert; e++) {
            double p = 0.0;
            for (int32_t t = 0; t < w->n; t++)
                p += w->acts[il].probs[(int64_t)t * hp->n_expert + e];
            total += (double)f[e] * p / (double)w->n;
        }
    }
    return tm->moe_aux_coef * (double)hp->n_expert * total / (double)hp->n_layer;
}

static mica_status check_ids(const train_model *tm, const train_work *w, const int32_t *tokens,
                             const int32_t *targets, mica_err *err)
{
    for (int32_t i = 0; i < w->n; i++) {
        if (tokens[i] < 0 || tokens[i] >= tm->hp.n_vocab)
            return core_fail(err, MICA_ERANGE, "token %d at %d is out of range [0, %d)", tokens[i],
                             i, tm->hp.n_vocab);
        if (targets[i] >= tm->hp.n_vocab)
            return core_fail(err, MICA_ERANGE, "target %d at %d is out of range [0, %d)",
                             targets[i], i, tm->hp.n_vocab);
    }
    return MICA_OK;
}

mica_status train_forward(train_model *tm, train_work *w, tensor_pool *pool, const int32_t *tokens,
                          const int32_t *targets, bool train, uint64_t dropout_seed, float *loss,
                          mica_err *err)
{
    const model_hparams *hp = &tm->hp;
    if (tm->n_tensors != w->n_tensors || (train && tm->lora_dropout > 0.0f && !w->dropout_bufs))
        return core_fail(err, MICA_EINVAL,
                         "the training work area was made before the model's adapters");
    mica_status st = check_ids(tm, w, tokens, targets, err);
    if (st) return st;
    w->tokens = tokens;
    w->targets = targets;
    w->dropout_p = train ? tm->lora_dropout : 0.0f;
    const int64_t e = hp->n_embd;
    for (int32_t r = 0; r < w->n; r++)
        memcpy(w->acts[0].x + r * e, tm->tok_embd->w + (int64_t)tokens[r] * e,
               (size_t)e * sizeof(float));
    for (int il = 0; il < hp->n_layer; il++) layer_fwd(tm, w, pool, il, dropout_seed);
    train_rms_norm(w->xf, tm->output_norm->w, w->xnf, w->rstdf, w->n, e, hp->norm_eps);
    train_linear_fwd(pool, tm->output->w, e, hp->n_vocab, w->xnf, w->n, w->logits);
    train_lora_fwd(w, pool, &tm->output_lora, &w->head, TRAIN_LORA_HEAD, w->xnf, e, hp->n_vocab,
                   w->logits, site_seed(dropout_seed, hp->n_layer, 0));
    *loss = (float)(cross_entropy(w, hp->n_vocab) + moe_aux_loss(tm, w));
    return MICA_OK;
}
