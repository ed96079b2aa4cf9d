/*
 * quant_eval.c - perplexity of a model over a text, and the KL divergence of its next-token
 * distributions from a base model's, computed the way llama-perplexity does: the text is
 * cut into chunks of n_ctx tokens, each chunk is evaluated from an empty cache with BOS in
 * front, and only the second half of each chunk is scored, so every scored token has at
 * least n_ctx/2 tokens of context. Sums run in double precision.
 *
 * Does not own: decoding (engine/, through the public API). Called by `mica perplexity`,
 * the sensitivity search (quant_sens.c) and tests.
 */
#include "quant/quant_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define QUANT_DEFAULT_CTX 512

/* ---- one scored position ------------------------------------------------------------- */

/* log(sum(exp(x))) with the maximum taken out; *argmax receives the largest index. */
static double quant_logsumexp(const float *x, int32_t n, int32_t *argmax)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    const double mx = x[best];
    double s = 0;
    for (int32_t i = 0; i < n; i++) s += exp((double)x[i] - mx);
    if (argmax) *argmax = best;
    return mx + log(s);
}

void quant_row_stats(const float *logits, const float *base, int32_t n_vocab, int32_t target,
                     double *nll, double *kl)
{
    const double lz = quant_logsumexp(logits, n_vocab, NULL);
    *nll = lz - (double)logits[target];
    *kl = 0;
    if (!base) return;
    /* KL(P || Q) = sum_i p_i (log p_i - log q_i), P = softmax(base), Q = softmax(logits). */
    const double lzb = quant_logsumexp(base, n_vocab, NULL);
    double s = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        const double lp = (double)base[i] - lzb, lq = (double)logits[i] - lz;
        s += exp(lp) * (lp - lq);
    }
    *kl = s > 0 ? s : 0; /* rounding can leave -1e-17 for identical rows */
}

/* ---- chunks -------------------------------------------------------------------------- */

static mica_status quant_tokenize(mica_model *m, const char *text, size_t len, mica_token **out,
                                  int64_t *n, mica_err *err)
{
    size_t cap = len + 16, need = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        *out = malloc(cap * sizeof **out);
        if (!*out) return core_fail(err, MICA_ENOMEM, "out of memory for %zu tokens", cap);
        mica_status st = mica_tokenize(m, text, len, true, false, *out, cap, &need, err);
        if (!st) {
            *n = (int64_t)need;
            return MICA_OK;
        }
        free(*out);
        *out = NULL;
        if (st != MICA_ERANGE) return st;
        cap = need;
    }
    return core_fail(err, MICA_ERANGE, "the text does not tokenize to a stable length");
}

/* Chunk layout; errors about the text are prefixed with its name by quant_chunks_make. */
static mica_status quant_chunks_layout(mica_model *m, const quant_eval_params *p, quant_chunks *c,
                                       mica_err *err)
{
    int64_t n_ctx = p->n_ctx;
    if (n_ctx == 0) {
        n_ctx = QUANT_DEFAULT_CTX;
        if (mica_model_n_ctx_train(m) > 0 && n_ctx > mica_model_n_ctx_train(m))
            n_ctx = mica_model_n_ctx_train(m);
        if (n_ctx > c->n_tok) n_ctx = c->n_tok;
    }
    if (n_ctx > c->n_tok)
        return core_fail(err, MICA_ERANGE, "the text has %lld tokens, fewer than one chunk of %lld",
                         (long long)c->n_tok, (long long)n_ctx);
    if (n_ctx < 4)
        return core_fail(err, MICA_ERANGE, "the text has %lld tokens; at least 4 are needed",
                         (long long)c->n_tok);
    c->n_ctx = (int32_t)n_ctx;
    c->n_chunks = (int32_t)(c->n_tok / n_ctx);
    if (p->max_chunks > 0 && c->n_chunks > p->max_chunks) c->n_chunks = p->max_chunks;
    c->first = c->n_ctx / 2;
    c->chunk = malloc((size_t)c->n_ctx * sizeof *c->chunk);
    if (!c->chunk) return core_fail(err, MICA_ENOMEM, "out of memory");
    return MICA_OK;
}

mica_status quant_chunks_make(mica_model *m, const char *text, size_t len,
                              const quant_eval_params *p, quant_chunks *c, mica_err *err)
{
    memset(c, 0, sizeof *c);
    mica_status st = quant_tokenize(m, text, len, &c->tok, &c->n_tok, err);
    if (st) return st;
    const mica_token bos = mica_model_bos(m);
    c->bos = (c->n_tok > 0 && bos >= 0 && c->tok[0] == bos) ? bos : -1;
    if ((st = quant_chunks_layout(m, p, c, err))) {
        if (p->text_name) core_fail_prefix(err, p->text_name);
        quant_chunks_free(c);
    }
    return st;
}

void quant_chunks_free(quant_chunks *c)
{
    free(c->tok);
    free(c->chunk);
    memset(c, 0, sizeof *c);
}

mica_status quant_chunk_logits(mica_context *ctx, quant_chunks *c, int32_t k, float *logits,
                               mica_err *err)
{
    memcpy(c->chunk, c->tok + (int64_t)k * c->n_ctx, (size_t)c->n_ctx * sizeof *c->chunk);
    if (c->bos >= 0) c->chunk[0] = c->bos;
    mica_seq_truncate(ctx, 0, 0);
    return mica_decode(ctx, 0, c->chunk, c->n_ctx, 0, true, logits, err);
}

/* ---- sums ---------------------------------------------------------------------------- */

/* Mean and standard error of the mean from a sum and a sum of squares. */
static void quant_mean_se(double sum, double sum2, int64_t n, double *mean, double *se)
{
    *mean = n ? sum / (double)n : 0;
    double var = n > 1 ? (sum2 / (double)n - *mean * *mean) : 0;
    *se = n > 1 && var > 0 ? sqrt(var / (double)(n - 1)) : 0;
}

typedef struct quant_sums {
    double nll, nll2, bnll, bnll2, kl, kl2, kl_max;
    int64_t n, agree;
} quant_sums;

static void quant_sum_row(quant_sums *s, const float *row, const float *brow, int32_t n_vocab,
                          mica_token target)
{
    double nll, kl;
    quant_row_stats(row, brow, n_vocab, target, &nll, &kl);
    s->nll += nll;
    s->nll2 += nll * nll;
    s->n++;
    if (!brow) return;
    double bnll, zero;
    quant_row_stats(brow, NULL, n_vocab, target, &bnll, &zero);
    s->bnll += bnll;
    s->bnll2 += bnll * bnll;
    s->kl += kl;
    s->kl2 += kl * kl;
    if (kl > s->kl_max) s->kl_max = kl;
    int32_t a, b;
    quant_logsumexp(row, n_vocab, &a);
    quant_logsumexp(brow, n_vocab, &b);
    s->agree += a == b;
}

static void quant_result(const quant_sums *s, bool has_base, quant_eval_result *r)
{
    double mean, se;
    r->n_scored = s->n;
    quant_mean_se(s->nll, s->nll2, s->n, &mean, &se);
    r->ppl = exp(mean);
    r->ppl_se = r->ppl * se;
    r->has_base = has_base;
    if (!has_base) return;
    quant_mean_se(s->bnll, s->bnll2, s->n, &mean, &se);
    r->base_ppl = exp(mean);
    r->base_ppl_se = r->base_ppl * se;
    quant_mean_se(s->kl, s->kl2, s->n, &r->kl_mean, &r->kl_se);
    r->kl_max = s->kl_max;
    r->top1_agree = s->n ? (double)s->agree / (double)s->n : 0;
}

/* ---- the text ------------------------------------------------------------------------ */

/* Both models must see the same token ids and distributions of the same size. */
static mica_status quant_check_base(mica_model *m, mica_model *base, const quant_chunks *c,
                                    const char *text, size_t len, const char *name, mica_err *err)
{
    name = name ? name : "base model";
    if (mica_model_n_vocab(base) != mica_model_n_vocab(m))
        return core_fail(err, MICA_EINVAL,
                         "%s: its vocabulary has %d tokens, the model's %d; KL divergence needs "
                         "the same vocabulary",
                         name, mica_model_n_vocab(base), mica_model_n_vocab(m));
    mica_token *bt = NULL;
    int64_t bn = 0;
    mica_status st = quant_tokenize(base, text, len, &bt, &bn, err);
    if (st) return st;
    const bool same = bn == c->n_tok && !memcmp(bt, c->tok, (size_t)bn * sizeof *bt);
    free(bt);
    if (!same)
        return core_fail(err, MICA_EINVAL, "%s: tokenizes the text differently from the model",
                         name);
    return MICA_OK;
}

typedef struct quant_evaluator {
    mica_context *ctx, *bctx;
    float *logits, *blogits;
} quant_evaluator;

static mica_status quant_evaluator_new(quant_evaluator *e, mica_model *m, mica_model *base,
                                       const quant_chunks *c, int32_t n_threads, mica_err *err)
{
    memset(e, 0, sizeof *e);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = c->n_ctx;
    cp.n_threads = n_threads;
    const size_t n = (size_t)c->n_ctx * (size_t)mica_model_n_vocab(m);
    mica_status st = mica_context_new(&e->ctx, m, cp, err);
    if (!st && base) st = mica_context_new(&e->bctx, base, cp, err);
    if (st) return st;
    e->logits = malloc(n * sizeof(float));
    e->blogits = base ? malloc(n * sizeof(float)) : NULL;
    if (!e->logits || (base && !e->blogits))
        return core_fail(err, MICA_ENOMEM, "out of memory for %zu logits", n);
    return MICA_OK;
}

static void quant_evaluator_free(quant_evaluator *e)
{
    mica_context_free(e->ctx);
    mica_context_free(e->bctx);
    free(e->logits);
    free(e->blogits);
}

mica_status quant_eval_text(mica_model *m, mica_model *base, const char *text, size_t len,
                            const quant_eval_params *p, quant_eval_result *out, mica_err *err)
{
    memset(out, 0, sizeof *out);
    quant_chunks c;
    quant_evaluator e = {0};
    quant_sums s = {0};
    mica_status st = quant_chunks_make(m, text, len, p, &c, err);
    if (st) return st;
    if (base && (st = quant_check_base(m, base, &c, text, len, p->base_name, err))) goto done;
    if ((st = quant_evaluator_new(&e, m, base, &c, p->n_threads, err))) goto done;
    const int32_t n_vocab = mica_model_n_vocab(m);
    for (int32_t k = 0; k < c.n_chunks; k++) {
        if (p->progress) p->progress(p->progress_ctx, "perplexity", NULL, k, c.n_chunks);
        if ((st = quant_chunk_logits(e.ctx, &c, k, e.logits, err))) goto done;
        if (base && (st = quant_chunk_logits(e.bctx, &c, k, e.blogits, err))) goto done;
        for (int32_t j = c.first; j < c.n_ctx - 1; j++) {
            const size_t off = (size_t)j * (size_t)n_vocab;
            quant_sum_row(&s, e.logits + off, base ? e.blogits + off : NULL, n_vocab,
                          quant_chunk_target(&c, k, j));
        }
    }
    if (p->progress) p->progress(p->progress_ctx, "perplexity", NULL, c.n_chunks, c.n_chunks);
    out->n_text_tokens = c.n_tok;
    out->n_ctx = c.n_ctx;
    out->n_chunks = c.n_chunks;
    quant_result(&s, base != NULL, out);
done:
    quant_evaluator_free(&e);
    quant_chunks_free(&c);
    return st;
}
