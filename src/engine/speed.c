/*
 * speed.c - llama-bench's pp/tg rounds over mica_decode and what it reports about a model
 * file (see speed.h). The warm-up, the number of rounds and the output format belong to
 * the callers (`mica bench`, bench/bench_shapes.c); this file only measures one round.
 */
#include "engine/speed.h"

#include "core/core.h"
#include "engine/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEED_SEED 0x6d696361 /* "mica" */

static void speed_tokens(const mica_model *m, mica_token *tok, int32_t n)
{
    core_rng r;
    core_rng_seed(&r, SPEED_SEED);
    const uint64_t n_vocab = (uint64_t)mica_model_n_vocab(m);
    for (int32_t i = 0; i < n; i++) tok[i] = (mica_token)core_rng_below(&r, n_vocab);
    if (n > 0 && mica_model_bos(m) >= 0) tok[0] = mica_model_bos(m);
}

/* pp: all n tokens in one decode; tg: n decodes of one token each. */
static mica_status speed_decode(mica_context *c, speed_test test, const mica_token *tok, int32_t n,
                                float *logits, mica_err *err)
{
    if (test == SPEED_PP) return mica_decode(c, 0, tok, n, 0, false, logits, err);
    for (int32_t i = 0; i < n; i++) {
        mica_status st = mica_decode(c, 0, &tok[i], 1, i, false, logits, err);
        if (st) return st;
    }
    return MICA_OK;
}

mica_status speed_run(mica_context *c, speed_test test, int32_t n, double *tokens_per_s,
                      mica_err *err)
{
    if (n < 1) return core_fail(err, MICA_EINVAL, "a speed test needs at least one token");
    const mica_model *m = c->model;
    mica_token *tok = core_calloc((size_t)n, sizeof *tok);
    float *logits = core_calloc((size_t)mica_model_n_vocab(m), sizeof *logits);
    mica_status st = MICA_OK;
    if (!tok || !logits) {
        st = core_fail(err, MICA_ENOMEM, "out of memory for %d tokens", n);
        goto done;
    }
    speed_tokens(m, tok, n);
    mica_seq_truncate(c, 0, 0);
    const double t0 = core_now();
    if ((st = speed_decode(c, test, tok, n, logits, err))) goto done;
    *tokens_per_s = n / (core_now() - t0);
done:
    free(tok);
    free(logits);
    return st;
}

void speed_stats(const double *v, int n, double *mean, double *sd)
{
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) ss += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

/* The share of tensor t one decoded token reads. */
static double speed_read_share(const gguf_file *f, const gguf_tensor *t, int64_t n_used)
{
    if (!strcmp(t->name, "token_embd.weight"))
        return gguf_find_tensor(f, "output.weight") ? 1.0 / (double)t->ne[1] : 1.0;
    if (strstr(t->name, "_exps.") && t->ne[2] > 0) return (double)n_used / (double)t->ne[2];
    return 1.0;
}

static int64_t speed_expert_used(const gguf_file *f, const char *arch)
{
    char key[96];
    int64_t n_used = 0;
    snprintf(key, sizeof key, "%s.expert_used_count", arch);
    gguf_get_int_opt(f, key, &n_used, NULL);
    return n_used;
}

mica_status speed_model_info_read(const char *path, speed_model_info *out, mica_err *err)
{
    memset(out, 0, sizeof *out);
    gguf_file *f;
    mica_status st = gguf_open(&f, path, err);
    if (st) return st;
    gguf_str arch = {0};
    gguf_get_str_opt(f, "general.architecture", &arch, NULL);
    snprintf(out->arch, sizeof out->arch, "%.*s", (int)(arch.len < 31 ? arch.len : 31),
             arch.ptr ? arch.ptr : "");
    const int64_t n_used = speed_expert_used(f, out->arch);
    int64_t matrix_elems[GGUF_T_COUNT] = {0};
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const int64_t ne = gguf_tensor_nelements(t);
        out->n_params += ne;
        out->size_bytes += t->nbytes;
        out->decode_bytes += (double)t->nbytes * speed_read_share(f, t, n_used);
        if (t->type >= GGUF_T_COUNT) continue;
        out->n_of_type[t->type]++;
        if (ne > t->ne[0]) matrix_elems[t->type] += ne;
    }
    for (uint32_t t = 0; t < GGUF_T_COUNT; t++)
        if (matrix_elems[t] > matrix_elems[out->type]) out->type = t;
    gguf_close(f);
    return MICA_OK;
}
