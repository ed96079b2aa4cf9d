/*
 * lora_apply.c - applying LoRA adapters during the forward pass, per sequence: which adapters
 * each sequence of a context uses (lora_work_set), and for each adapted matmul the rows whose
 * sequence uses an adapter get s * B (A x) added, computed apart from W x as llama.cpp's
 * build_lora_mm does (ggml_mul_mat(b, ggml_mul_mat(a, x)), ggml_scale, ggml_add), so adapters
 * of different requests can share one batch. Rows are gathered a chunk at a time, so scratch
 * stays small even for an adapted output projection. Called by forward.c; sequences are set
 * by engine/.
 */
#include "model/lora.h"

#include <stdlib.h>
#include <string.h>

#define LORA_CHUNK 32 /* rows gathered per pair of matmuls */

typedef struct lora_use {
    const lora_adapter *a;
    float scale;
} lora_use;

struct lora_work {
    const model *m;
    int32_t n_seq, n_batch;
    lora_use (*seq)[LORA_MAX_PER_SEQ];           /* (n_seq) adapters of each sequence */
    int32_t *seq_n;                              /* (n_seq) how many */
    const lora_adapter *active[LORA_MAX_ACTIVE]; /* distinct adapters of all sequences */
    int32_t n_active;
    float *tok_scale; /* (LORA_MAX_ACTIVE, n_batch) each active adapter's scale per token */
    /* scratch for LORA_CHUNK rows */
    int64_t cap_in, cap_rank, cap_out;
    float *xg; /* (LORA_CHUNK, cap_in) gathered inputs */
    float *t;  /* (LORA_CHUNK, cap_rank) A x */
    float *u;  /* (LORA_CHUNK, cap_out) B (A x) */
    int32_t idx[LORA_CHUNK];
    float s[LORA_CHUNK];
};

mica_status lora_work_new(lora_work **out, const model *m, int32_t n_seq, int32_t n_batch,
                          mica_err *err)
{
    *out = NULL;
    lora_work *lw = core_calloc(1, sizeof *lw);
    if (lw) {
        lw->seq = core_calloc((size_t)n_seq, sizeof *lw->seq);
        lw->seq_n = core_calloc((size_t)n_seq, sizeof *lw->seq_n);
        lw->tok_scale = core_calloc((size_t)LORA_MAX_ACTIVE * (size_t)n_batch, sizeof(float));
    }
    if (!lw || !lw->seq || !lw->seq_n || !lw->tok_scale) {
        lora_work_free(lw);
        return core_fail(err, MICA_ENOMEM, "out of memory for LoRA state");
    }
    lw->m = m;
    lw->n_seq = n_seq;
    lw->n_batch = n_batch;
    *out = lw;
    return MICA_OK;
}

void lora_work_free(lora_work *lw)
{
    if (!lw) return;
    free(lw->seq);
    free(lw->seq_n);
    free(lw->tok_scale);
    free(lw->xg);
    free(lw->t);
    free(lw->u);
    free(lw);
}

/* ---- which adapters ------------------------------------------------------------------ */

static mica_status check_set(const lora_work *lw, const lora_adapter *const *ad,
                             const float *scales, int32_t n, mica_err *err)
{
    if (n < 0 || n > LORA_MAX_PER_SEQ || (n && (!ad || !scales)))
        return core_fail(err, MICA_EINVAL, "%d adapters (0 to %d per sequence)", n,
                         LORA_MAX_PER_SEQ);
    for (int32_t i = 0; i < n; i++) {
        if (!ad[i]) return core_fail(err, MICA_EINVAL, "adapter %d is NULL", i);
        if (lora_base(ad[i]) != lw->m)
            return core_fail(err, MICA_EINVAL, "%s: the adapter was loaded for another model",
                             lora_path(ad[i]));
        if (!(scales[i] > -1e30f && scales[i] < 1e30f))
            return core_fail(err, MICA_EINVAL, "%s: scale %g is not a finite number",
                             lora_path(ad[i]), (double)scales[i]);
        for (int32_t j = 0; j < i; j++)
            if (ad[j] == ad[i])
                return core_fail(err, MICA_EINVAL, "%s: the same adapter is given twice",
                                 lora_path(ad[i]));
    }
    return MICA_OK;
}

/* The distinct adapters over all sequences, in the order they first appear. */
static mica_status collect_active(lora_work *lw, mica_err *err)
{
    lw->n_active = 0;
    for (int32_t s = 0; s < lw->n_seq; s++)
        for (int32_t i = 0; i < lw->seq_n[s]; i++) {
            const lora_adapter *a = lw->seq[s][i].a;
            int32_t k = 0;
            while (k < lw->n_active && lw->active[k] != a) k++;
            if (k < lw->n_active) continue;
            if (lw->n_active == LORA_MAX_ACTIVE)
                return core_fail(err, MICA_ERANGE, "more than %d distinct adapters in one context",
                                 LORA_MAX_ACTIVE);
            lw->active[lw->n_active++] = a;
        }
    return MICA_OK;
}

/* The largest n_in, rank and n_out among the active adapters' weights. */
static void active_dims(const lora_work *lw, int64_t *n_in, int64_t *rank, int64_t *n_out)
{
    *n_in = *rank = *n_out = 1;
    for (int32_t k = 0; k < lw->n_active; k++)
        for (int il = 0; il < lw->m->hp.n_layer; il++)
            for (int t = 0; t < LORA_N_TARGETS; t++) {
                const lora_weight *w = lora_find(lw->active[k], il, (lora_target)t);
                if (!w) continue;
                const bool embd = t == LORA_TOKEN_EMBD;
                const int64_t in = embd ? 1 : w->a.ne[0], out = w->b.ne[1];
                *n_in = in > *n_in ? in : *n_in;
                *rank = w->rank > *rank ? w->rank : *rank;
                *n_out = out > *n_out ? out : *n_out;
            }
}

static mica_status grow(float **p, int64_t *cap, int64_t want)
{
    if (want <= *cap) return MICA_OK;
    float *q = realloc(*p, (size_t)LORA_CHUNK * (size_t)want * sizeof(float));
    if (!q) return MICA_ENOMEM;
    *p = q;
    *cap = want;
    return MICA_OK;
}

static mica_status reserve_scratch(lora_work *lw, mica_err *err)
{
    int64_t n_in, rank, n_out;
    active_dims(lw, &n_in, &rank, &n_out);
    if (grow(&lw->xg, &lw->cap_in, n_in) || grow(&lw->t, &lw->cap_rank, rank) ||
        grow(&lw->u, &lw->cap_out, n_out))
        return core_fail(err, MICA_ENOMEM, "out of memory for LoRA scratch");
    return MICA_OK;
}

mica_status lora_work_set(lora_work *lw, int32_t seq, const lora_adapter *const *ad,
                          const float *scales, int32_t n, mica_err *err)
{
    if (seq < -1 || seq >= lw->n_seq)
        return core_fail(err, MICA_ERANGE, "sequence %d out of range [0, %d)", seq, lw->n_seq);
    mica_status st = check_set(lw, ad, scales, n, err);
    if (st) return st;
    const int32_t s0 = seq < 0 ? 0 : seq, s1 = seq < 0 ? lw->n_seq : seq + 1;
    lora_use(*saved)[LORA_MAX_PER_SEQ] = malloc((size_t)lw->n_seq * sizeof *saved);
    int32_t *saved_n = malloc((size_t)lw->n_seq * sizeof *saved_n);
    if (!saved || !saved_n) {
        st = core_fail(err, MICA_ENOMEM, "out of memory for LoRA state");
        goto done;
    }
    memcpy(saved, lw->seq, (size_t)lw->n_seq * sizeof *saved);
    memcpy(saved_n, lw->seq_n, (size_t)lw->n_seq * sizeof *saved_n);
    for (int32_t s = s0; s < s1; s++) {
        for (int32_t i = 0; i < n; i++) lw->seq[s][i] = (lora_use){ad[i], scales[i]};
        lw->seq_n[s] = n;
    }
    st = collect_active(lw, err);
    if (!st) st = reserve_scratch(lw, err);
    if (st) { /* an error changes nothing */
        memcpy(lw->seq, saved, (size_t)lw->n_seq * sizeof *saved);
        memcpy(lw->seq_n, saved_n, (size_t)lw->n_seq * sizeof *saved_n);
        collect_active(lw, NULL);
    }
done:
    free(saved);
    free(saved_n);
    return st;
}

bool lora_work_begin(lora_work *lw, const model_batch_tok *batch, int32_t n)
{
    bool any = false;
    for (int32_t k = 0; k < lw->n_active; k++) {
        float *ts = lw->tok_scale + (size_t)k * (size_t)lw->n_batch;
        for (int32_t t = 0; t < n; t++) {
            const int32_t s = batch[t].seq;
            ts[t] = 0.0f;
            for (int32_t i = 0; i < lw->seq_n[s]; i++)
                if (lw->seq[s][i].a == lw->active[k]) ts[t] = lw->seq[s][i].scale;
            any |= ts[t] != 0.0f;
        }
    }
    return any;
}

/* ---- arithmetic ---------------------------------------------------------------------- */

/* The gathered rows: t = A xg, u = B t, then y[idx[i]] += s[i] * u[i]. */
static void flush_rows(lora_work *lw, tensor_pool *pool, const tensor_view *a, const tensor_view *b,
                       int32_t cnt, float *y)
{
    const int64_t n_out = b->ne[1];
    tensor_matmul(pool, a, lw->xg, cnt, lw->t);
    tensor_matmul(pool, b, lw->t, cnt, lw->u);
    for (int32_t i = 0; i < cnt; i++) {
        float *yr = y + (int64_t)lw->idx[i] * n_out;
        const float *ur = lw->u + (int64_t)i * n_out;
        for (int64_t o = 0; o < n_out; o++) yr[o] += lw->s[i] * ur[o];
    }
}

static void apply_one(lora_work *lw, tensor_pool *pool, int32_t k, const lora_weight *w,
                      const lora_rows *lr, const float *x, int32_t n, float *y)
{
    const tensor_view a = w->a.ne[2] > 1 ? tensor_view_matrix(&w->a, lr->expert) : w->a;
    const tensor_view b = w->b.ne[2] > 1 ? tensor_view_matrix(&w->b, lr->expert) : w->b;
    const int64_t n_in = a.ne[0];
    const float *ts = lw->tok_scale + (size_t)k * (size_t)lw->n_batch;
    int32_t cnt = 0;
    for (int32_t r = 0; r < n; r++) {
        const float scale = ts[lr->rows ? lr->rows[r] / lr->div : r];
        if (scale == 0.0f) continue;
        lw->idx[cnt] = r;
        lw->s[cnt] = lora_weight_scale(lw->active[k], w, scale);
        memcpy(lw->xg + (int64_t)cnt * n_in, x + (int64_t)r * n_in, (size_t)n_in * sizeof *x);
        if (++cnt == LORA_CHUNK) {
            flush_rows(lw, pool, &a, &b, cnt, y);
            cnt = 0;
        }
    }
    if (cnt) flush_rows(lw, pool, &a, &b, cnt, y);
}

void lora_work_apply(lora_work *lw, tensor_pool *pool, lora_target t, const lora_rows *lr,
                     const float *x, int32_t n, float *y)
{
    for (int32_t k = 0; k < lw->n_active; k++) {
        const lora_weight *w = lora_find(lw->active[k], lr->il, t);
        if (w) apply_one(lw, pool, k, w, lr, x, n, y);
    }
}

void lora_work_embed(lora_work *lw, const model_batch_tok *batch, int32_t n, float *x)
{
    const int64_t ne = lw->m->hp.n_embd;
    for (int32_t k = 0; k < lw->n_active; k++) {
        const lora_weight *w = lora_find(lw->active[k], 0, LORA_TOKEN_EMBD);
        if (!w) continue;
        const float *ts = lw->tok_scale + (size_t)k * (size_t)lw->n_batch;
        for (int32_t t = 0; t < n; t++) {
            if (ts[t] == 0.0f) continue;
            /* get_rows of the transposed A, then B times it (llama.cpp's build_inp_embd). */
            tensor_get_row(&w->a, batch[t].token, lw->t);
            tensor_matmul(NULL, &w->b, lw->t, 1, lw->u);
            const float s = lora_weight_scale(lw->active[k], w, ts[t]);
            for (int64_t i = 0; i < ne; i++) x[t * ne + i] += s * lw->u[i];
        }
    }
}
