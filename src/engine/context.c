/*
 * context.c - the public model and context API: loading a model, tokenizing, and decoding
 * batches of tokens of a sequence into logits through the KV cache. Long inputs are split
 * into passes of n_batch tokens. Calls model/ and tokenizer/; knows nothing of HTTP.
 */
#include "engine.h"
#include "grammar/grammar.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ENGINE_MAX_BATCH 512

mica_status mica_model_load(mica_model **out, const char *path, mica_err *err)
{
    *out = NULL;
    mica_model *mm = core_calloc(1, sizeof *mm);
    if (!mm) return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    mica_status st = model_load(&mm->m, path, err);
    if (!st) st = model_repack(mm->m, err);
    if (st) {
        model_free(mm->m);
        free(mm);
        return st;
    }
    pthread_mutex_init(&mm->gram_mu, NULL);
    *out = mm;
    return MICA_OK;
}

void mica_model_free(mica_model *mm)
{
    if (!mm) return;
    model_free(mm->m);
    gram_vocab_free(mm->gram_vocab);
    pthread_mutex_destroy(&mm->gram_mu);
    free(mm);
}

int32_t mica_model_n_vocab(const mica_model *mm)
{
    return mm->m->hp.n_vocab;
}
int32_t mica_model_n_ctx_train(const mica_model *mm)
{
    return mm->m->hp.n_ctx_train;
}
int32_t mica_model_n_embd(const mica_model *mm)
{
    return mm->m->hp.n_embd;
}
int32_t mica_model_n_layer(const mica_model *mm)
{
    return mm->m->hp.n_layer;
}
int32_t mica_model_n_expert(const mica_model *mm)
{
    return mm->m->hp.n_expert;
}
int32_t mica_model_n_expert_used(const mica_model *mm)
{
    return mm->m->hp.n_expert_used;
}
const char *mica_model_arch(const mica_model *mm)
{
    return mm->m->arch->name;
}
mica_token mica_model_bos(const mica_model *mm)
{
    return tok_bos(mm->m->vocab);
}
mica_token mica_model_eos(const mica_model *mm)
{
    return tok_eos(mm->m->vocab);
}
bool mica_model_is_eog(const mica_model *mm, mica_token t)
{
    return tok_is_eog(mm->m->vocab, t);
}

int64_t mica_model_meta_str(const mica_model *mm, const char *key, char *buf, size_t cap)
{
    gguf_str v;
    const gguf_kv *kv = gguf_find(mm->m->gguf, key);
    if (!kv || kv->type != GGUF_VT_STRING || gguf_get_str(mm->m->gguf, key, &v, NULL)) return -1;
    if (cap) {
        const size_t n = v.len < cap - 1 ? (size_t)v.len : cap - 1;
        memcpy(buf, v.ptr, n);
        buf[n] = '\0';
    }
    return (int64_t)v.len;
}

mica_status mica_tokenize(const mica_model *mm, const char *text, size_t len, bool add_special,
                          bool parse_special, mica_token *ids, size_t cap, size_t *n_out,
                          mica_err *err)
{
    tok_ids out;
    /* The most a text can take: byte fallback writes each space as the three bytes of U+2581,
     * one token each; plus BOS, EOS and the like. */
    tok_ids_init(&out, 3 * len + 16);
    mica_status st = tok_encode(mm->m->vocab, text, len, add_special, parse_special, &out, err);
    if (st) goto done;
    *n_out = out.n;
    if (out.n > cap) {
        st = core_fail(err, MICA_ERANGE, "%zu tokens do not fit in a buffer of %zu", out.n, cap);
        goto done;
    }
    if (out.n) memcpy(ids, out.v, out.n * sizeof *ids);
done:
    tok_ids_free(&out);
    return st;
}

size_t mica_token_to_piece(const mica_model *mm, mica_token t, bool special, char *buf, size_t cap)
{
    return tok_piece(mm->m->vocab, t, special, buf, cap);
}

/* ---- contexts ------------------------------------------------------------------------ */

mica_context_params mica_context_default_params(void)
{
    mica_context_params p = {0, 1, 0};
    return p;
}

static mica_status context_alloc_kv(mica_context *c, const model_hparams *hp, mica_err *err)
{
    uint64_t n = (uint64_t)hp->n_layer * (uint64_t)c->kv.n_seq * (uint64_t)c->kv.n_ctx;
    if (!core_mul_ok(n, (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim, &n) ||
        n > SIZE_MAX / sizeof(float))
        return core_fail(err, MICA_ENOMEM, "KV cache of %d x %d positions is too large",
                         c->kv.n_seq, c->kv.n_ctx);
    c->kv.k = calloc((size_t)n, sizeof(float));
    c->kv.v = calloc((size_t)n, sizeof(float));
    if (!c->kv.k || !c->kv.v)
        return core_fail(err, MICA_ENOMEM, "out of memory for a KV cache of %llu floats",
                         (unsigned long long)(2 * n));
    return MICA_OK;
}

mica_status mica_context_new(mica_context **out, mica_model *mm, mica_context_params p,
                             mica_err *err)
{
    const model_hparams *hp = &mm->m->hp;
    *out = NULL;
    if (p.n_ctx < 0 || p.n_seq < 0 || p.n_threads < 0 || p.n_seq > 4096)
        return core_fail(err, MICA_EINVAL, "context: negative or too large parameter");
    mica_context *c = core_calloc(1, sizeof *c);
    if (!c) return core_fail(err, MICA_ENOMEM, "out of memory");
    c->model = mm;
    c->kv.n_ctx = p.n_ctx ? p.n_ctx : hp->n_ctx_train;
    c->kv.n_seq = p.n_seq ? p.n_seq : 1;
    c->n_batch = c->kv.n_ctx < ENGINE_MAX_BATCH ? c->kv.n_ctx : ENGINE_MAX_BATCH;
    int n_threads = p.n_threads ? p.n_threads : core_n_cpus();
    mica_status st = context_alloc_kv(c, hp, err);
    if (st) goto fail;
    c->seq_len = core_calloc((size_t)c->kv.n_seq, sizeof *c->seq_len);
    c->next_pos = core_calloc((size_t)c->kv.n_seq, sizeof *c->next_pos);
    c->batch = core_calloc((size_t)c->n_batch, sizeof *c->batch);
    if (!c->seq_len || !c->next_pos || !c->batch) {
        st = core_fail(err, MICA_ENOMEM, "out of memory");
        goto fail;
    }
    if ((st = model_work_new(&c->work, mm->m, c->n_batch, c->kv.n_ctx, n_threads, err))) goto fail;
    if ((st = tensor_pool_new(&c->pool, n_threads, err))) goto fail;
    if ((st = lora_work_new(&c->lora, mm->m, c->kv.n_seq, c->n_batch, err))) goto fail;
    model_work_set_lora(c->work, c->lora);
    *out = c;
    return MICA_OK;
fail:
    mica_context_free(c);
    return st;
}

void mica_context_free(mica_context *c)
{
    if (!c) return;
    tensor_pool_free(c->pool);
    model_work_free(c->work);
    lora_work_free(c->lora);
    free(c->kv.k);
    free(c->kv.v);
    free(c->seq_len);
    free(c->next_pos);
    free(c->batch);
    free(c);
}

void mica_seq_truncate(mica_context *c, int32_t seq, int32_t from)
{
    if (seq < 0 || seq >= c->kv.n_seq || from < 0) return;
    if (from < c->seq_len[seq]) c->seq_len[seq] = from;
}

/* Checks a whole multi-sequence batch before anything runs, so an error keeps nothing:
 * sequences in range, each sequence's positions consecutive from at most its length, inside
 * the context, token ids in the vocabulary. Fills c->next_pos with each sequence's end. */
static mica_status check_multi(mica_context *c, const mica_batch_token *t, int32_t n, mica_err *err)
{
    const int32_t n_vocab = c->model->m->hp.n_vocab;
    for (int32_t s = 0; s < c->kv.n_seq; s++) c->next_pos[s] = -1;
    for (int32_t i = 0; i < n; i++) {
        const int32_t s = t[i].seq;
        if (s < 0 || s >= c->kv.n_seq)
            return core_fail(err, MICA_ERANGE, "sequence %d out of range [0, %d)", s, c->kv.n_seq);
        if (t[i].token < 0 || t[i].token >= n_vocab)
            return core_fail(err, MICA_ERANGE, "token id %d out of range [0, %d)", t[i].token,
                             n_vocab);
        const int32_t want = c->next_pos[s] < 0 ? c->seq_len[s] : c->next_pos[s];
        if (t[i].pos < 0 || t[i].pos > want || (c->next_pos[s] >= 0 && t[i].pos != want))
            return core_fail(err, MICA_ERANGE,
                             "position %d of sequence %d: expected %s%d (it holds %d positions)",
                             t[i].pos, s, c->next_pos[s] < 0 ? "at most " : "", want,
                             c->seq_len[s]);
        if (t[i].pos >= c->kv.n_ctx)
            return core_fail(err, MICA_ERANGE, "position %d is past the context of %d", t[i].pos,
                             c->kv.n_ctx);
        c->next_pos[s] = t[i].pos + 1;
    }
    return MICA_OK;
}

mica_status mica_decode_multi(mica_context *c, const mica_batch_token *t, int32_t n, float *logits,
                              mica_err *err)
{
    if (n < 1) return core_fail(err, MICA_EINVAL, "nothing to decode");
    mica_status st = check_multi(c, t, n, err);
    if (st) return st;
    /* Decoding at a position forgets what followed it. */
    for (int32_t i = n - 1; i >= 0; i--)
        if (t[i].pos < c->seq_len[t[i].seq]) c->seq_len[t[i].seq] = t[i].pos;
    const size_t n_vocab = (size_t)c->model->m->hp.n_vocab;
    size_t rows = 0;
    for (int32_t done = 0; done < n;) {
        const int32_t chunk = n - done < c->n_batch ? n - done : c->n_batch;
        size_t chunk_rows = 0;
        for (int32_t i = 0; i < chunk; i++) {
            const mica_batch_token *bt = &t[done + i];
            c->batch[i] = (model_batch_tok){bt->token, bt->pos, bt->seq, bt->logits};
            chunk_rows += bt->logits;
        }
        st = model_forward(c->model->m, c->work, &c->kv, c->pool, c->batch, chunk,
                           logits + rows * n_vocab, err);
        if (st) return st;
        for (int32_t i = 0; i < chunk; i++) c->seq_len[c->batch[i].seq] = c->batch[i].pos + 1;
        rows += chunk_rows;
        done += chunk;
    }
    return MICA_OK;
}

mica_status mica_decode(mica_context *c, int32_t seq, const mica_token *tokens, int32_t n,
                        int32_t pos0, bool all_logits, float *logits, mica_err *err)
{
    if (n < 1) return core_fail(err, MICA_EINVAL, "nothing to decode");
    mica_batch_token *t = malloc((size_t)n * sizeof *t);
    if (!t) return core_fail(err, MICA_ENOMEM, "out of memory for %d tokens", n);
    for (int32_t i = 0; i < n; i++)
        t[i] = (mica_batch_token){tokens[i], seq, pos0 + i, all_logits || i == n - 1};
    mica_status st = mica_decode_multi(c, t, n, logits, err);
    free(t);
    return st;
}

static void l2_normalize(const double *sum, float *out, int32_t n)
{
    double norm = 0.0;
    for (int32_t i = 0; i < n; i++) norm += sum[i] * sum[i];
    norm = sqrt(norm);
    for (int32_t i = 0; i < n; i++) out[i] = norm > 0 ? (float)(sum[i] / norm) : 0.0f;
}

mica_status mica_embed(mica_context *c, int32_t seq, const mica_token *tokens, int32_t n,
                       float *out, mica_err *err)
{
    if (n < 1) return core_fail(err, MICA_EINVAL, "nothing to embed");
    if (n > c->kv.n_ctx)
        return core_fail(err, MICA_ERANGE, "%d tokens exceed the context of %d", n, c->kv.n_ctx);
    const int32_t ne = c->model->m->hp.n_embd;
    float *hidden = malloc((size_t)c->n_batch * (size_t)ne * sizeof *hidden);
    double *sum = calloc((size_t)ne, sizeof *sum);
    mica_status st = MICA_OK;
    if (!hidden || !sum) {
        st = core_fail(err, MICA_ENOMEM, "out of memory for an embedding");
        goto done;
    }
    mica_seq_truncate(c, seq, 0);
    for (int32_t done = 0; done < n && !st; done += c->n_batch) {
        const int32_t chunk = n - done < c->n_batch ? n - done : c->n_batch;
        for (int32_t i = 0; i < chunk; i++)
            c->batch[i] = (model_batch_tok){tokens[done + i], done + i, seq, false};
        st = model_forward_hidden(c->model->m, c->work, &c->kv, c->pool, c->batch, chunk, hidden,
                                  err);
        for (int32_t i = 0; i < chunk && !st; i++)
            for (int32_t k = 0; k < ne; k++) sum[k] += hidden[(size_t)i * (size_t)ne + k];
        if (!st) c->seq_len[seq] = done + chunk;
    }
    if (!st) l2_normalize(sum, out, ne);
    mica_seq_truncate(c, seq, 0);
done:
    free(hidden);
    free(sum);
    return st;
}

int32_t mica_seq_len(const mica_context *c, int32_t seq)
{
    return seq >= 0 && seq < c->kv.n_seq ? c->seq_len[seq] : 0;
}

int32_t mica_context_n_seq(const mica_context *c)
{
    return c->kv.n_seq;
}

int32_t mica_context_n_ctx(const mica_context *c)
{
    return c->kv.n_ctx;
}

mica_status mica_context_expert_stat(const mica_context *c, int32_t layer, int32_t expert,
                                     mica_expert_stat *out, mica_err *err)
{
    const model_moe_stats *s = model_work_moe_stats(c->work);
    *out = (mica_expert_stat){0, 0.0};
    if (layer < 0 || layer >= c->model->m->hp.n_layer)
        return core_fail(err, MICA_ERANGE, "layer %d out of range [0, %d)", layer,
                         c->model->m->hp.n_layer);
    if (expert < 0 || expert >= s->n_expert)
        return core_fail(err, MICA_ERANGE, "expert %d out of range [0, %d)", expert, s->n_expert);
    const size_t i = (size_t)layer * (size_t)s->n_expert + (size_t)expert;
    out->n_tokens = s->n_tokens[i];
    out->mean_weight = s->n_tokens[i] ? s->weight_sum[i] / (double)s->n_tokens[i] : 0.0;
    return MICA_OK;
}

void mica_context_reset_expert_stats(mica_context *c)
{
    model_work_reset_moe_stats(c->work);
}
