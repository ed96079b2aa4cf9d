/*
 * quant_sens.c - how much each tensor's quantization costs: the input model is loaded once,
 * its next-token distributions over a calibration text are kept as the reference, and then
 * for each tensor the plan would quantize, that one tensor alone is swapped for its
 * quantized bytes (the bytes the output file will hold) and the mean KL divergence from the
 * reference is measured. The budget (quant_rules.c) then keeps the costliest tensors in F16.
 *
 * The swap rewrites the model's tensor views in place (every view bound to the tensor's
 * name, so a tied output follows its embedding) and restores them afterwards; a tensor no
 * view is bound to is reported as not measured (kl < 0).
 *
 * Does not own: the forward pass (model/, engine/), the KL arithmetic (quant_eval.c).
 * Called by quant_model_file and tests.
 */
#include "quant/quant_int.h"

#include "engine/engine.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define QUANT_MAX_SWAP 4 /* views one tensor can be bound to (embedding + tied output) */

typedef struct quant_swap {
    tensor_view *v[QUANT_MAX_SWAP];
    tensor_view saved[QUANT_MAX_SWAP];
    int n;
} quant_swap;

static void quant_swap_add(quant_swap *s, tensor_view *v, const char *name)
{
    if (v->data && v->name && !strcmp(v->name, name) && s->n < QUANT_MAX_SWAP) s->v[s->n++] = v;
}

/* Points every view bound to `name` at data of `type`; quant_swap_undo restores them. */
static void quant_swap_in(quant_swap *s, model *m, const char *name, uint32_t type,
                          const void *data)
{
    s->n = 0;
    quant_swap_add(s, &m->tok_embd, name);
    quant_swap_add(s, &m->output, name);
    for (int32_t il = 0; il < m->hp.n_layer; il++)
        for (size_t k = 0; k < model_n_layer_matrices; k++)
            quant_swap_add(s, (tensor_view *)((char *)&m->layers[il] + model_layer_matrices[k]),
                           name);
    for (int i = 0; i < s->n; i++) {
        s->saved[i] = *s->v[i];
        s->v[i]->data = data;
        s->v[i]->type = type;
        s->v[i]->row_bytes = tensor_row_size(type, s->v[i]->ne[0]);
        s->v[i]->layout = TENSOR_LAYOUT_GGUF;
    }
}

static void quant_swap_undo(quant_swap *s)
{
    for (int i = 0; i < s->n; i++) *s->v[i] = s->saved[i];
    s->n = 0;
}

/* The reference: the unmodified model's logits on every scored row of every chunk. */
typedef struct quant_ref {
    quant_chunks c;
    mica_context *ctx;
    float *logits; /* (n_ctx, n_vocab) of the chunk being evaluated */
    float *base;   /* (n_chunks * scored, n_vocab) */
    int32_t n_vocab;
} quant_ref;

#define QUANT_MAX_REF_FLOATS ((size_t)1 << 28) /* 1 GiB of reference logits */

static mica_status quant_ref_make(quant_ref *r, mica_model *mm, const char *text, size_t len,
                                  const quant_eval_params *p, mica_err *err)
{
    mica_status st = quant_chunks_make(mm, text, len, p, &r->c, err);
    if (st) return st;
    r->n_vocab = mica_model_n_vocab(mm);
    const size_t rows = (size_t)r->c.n_chunks * (size_t)quant_chunks_scored(&r->c);
    if (rows * (size_t)r->n_vocab > QUANT_MAX_REF_FLOATS)
        return core_fail(err, MICA_ENOMEM,
                         "%s: %zu scored tokens x %d logits are more than 1 GiB; use a shorter "
                         "calibration text",
                         p->text_name ? p->text_name : "calibration text", rows, r->n_vocab);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = r->c.n_ctx;
    cp.n_threads = p->n_threads;
    if ((st = mica_context_new(&r->ctx, mm, cp, err))) return st;
    r->logits = malloc((size_t)r->c.n_ctx * (size_t)r->n_vocab * sizeof(float));
    r->base = malloc((rows ? rows : 1) * (size_t)r->n_vocab * sizeof(float));
    if (!r->logits || !r->base) return core_fail(err, MICA_ENOMEM, "out of memory for logits");
    return MICA_OK;
}

static void quant_ref_free(quant_ref *r)
{
    quant_chunks_free(&r->c);
    mica_context_free(r->ctx);
    free(r->logits);
    free(r->base);
}

/* Evaluates every chunk; with store, keeps the scored rows as the reference and returns the
 * mean NLL in *mean, else returns the mean KL from the reference. */
static mica_status quant_ref_pass(quant_ref *r, bool store, double *mean, mica_err *err)
{
    const int32_t scored = quant_chunks_scored(&r->c), nv = r->n_vocab;
    double sum = 0;
    for (int32_t k = 0; k < r->c.n_chunks; k++) {
        mica_status st = quant_chunk_logits(r->ctx, &r->c, k, r->logits, err);
        if (st) return st;
        for (int32_t j = 0; j < scored; j++) {
            const float *row = r->logits + (size_t)(r->c.first + j) * (size_t)nv;
            float *ref = r->base + ((size_t)k * (size_t)scored + (size_t)j) * (size_t)nv;
            const mica_token target = quant_chunk_target(&r->c, k, r->c.first + j);
            double nll, kl;
            if (store) memcpy(ref, row, (size_t)nv * sizeof(float));
            quant_row_stats(row, store ? NULL : ref, nv, target, &nll, &kl);
            sum += store ? nll : kl;
        }
    }
    const int64_t n = (int64_t)r->c.n_chunks * scored;
    *mean = n ? sum / (double)n : 0;
    return MICA_OK;
}

/* Quantizes tensor i of the plan alone and measures its mean KL. */
static mica_status quant_measure(quant_ref *r, model *m, tensor_pool *pool, const gguf_file *f,
                                 quant_tensor *t, mica_err *err)
{
    void *buf = malloc(t->bytes ? (size_t)t->bytes : 1);
    if (!buf)
        return core_fail(err, MICA_ENOMEM, "tensor '%s': out of memory for %llu bytes", t->name,
                         (unsigned long long)t->bytes);
    mica_status st = quant_convert(pool, &f->tensors[t->src_index], t->type, buf, err);
    quant_swap s;
    if (!st) quant_swap_in(&s, m, t->name, t->type, buf);
    if (!st && s.n > 0) st = quant_ref_pass(r, false, &t->kl, err);
    if (!st) quant_swap_undo(&s);
    free(buf);
    return st;
}

mica_status quant_sensitivity(const char *path, const gguf_file *f, quant_plan *plan,
                              const char *calib, size_t calib_len, const quant_eval_params *ep,
                              mica_err *err)
{
    mica_model *mm = NULL;
    tensor_pool *pool = NULL;
    quant_ref r = {0};
    mica_status st = mica_model_load(&mm, path, err);
    if (st) return st;
    if ((st = quant_ref_make(&r, mm, calib, calib_len, ep, err))) goto done;
    if ((st = tensor_pool_new(&pool, ep->n_threads > 0 ? ep->n_threads : core_n_cpus(), err)))
        goto done;
    double nll;
    if ((st = quant_ref_pass(&r, true, &nll, err))) goto done;
    plan->base_ppl = exp(nll);
    plan->calib_tokens = (int64_t)r.c.n_chunks * quant_chunks_scored(&r.c);
    size_t n_cand = 0, done_n = 0;
    for (size_t i = 0; i < plan->n; i++) n_cand += quant_plan_is_candidate(plan, i);
    for (size_t i = 0; i < plan->n; i++) {
        if (!quant_plan_is_candidate(plan, i)) continue;
        if (ep->progress)
            ep->progress(ep->progress_ctx, "sensitivity", plan->t[i].name, (int64_t)done_n,
                         (int64_t)n_cand);
        if ((st = quant_measure(&r, mm->m, pool, f, &plan->t[i], err))) goto done;
        done_n++;
    }
    if (ep->progress)
        ep->progress(ep->progress_ctx, "sensitivity", NULL, (int64_t)n_cand, (int64_t)n_cand);
done:
    tensor_pool_free(pool);
    quant_ref_free(&r);
    mica_model_free(mm);
    return st;
}
