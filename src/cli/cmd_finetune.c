/*
 * cmd_finetune.c - `mica finetune`: LoRA fine-tuning of a model on JSON-lines records
 * {"prompt": ..., "completion": ...} with src/train (the base frozen, the loss on completion
 * tokens only), AdamW with warmup + cosine decay, a progress line (loss, tokens/s, ETA) on
 * stderr, validation loss after each epoch, and the adapter written in llama.cpp's GGUF LoRA
 * format. Does not own: the training passes (train/), the adapter format (model/lora_write.c).
 */
#include "cli.h"
#include "model/model.h"
#include "train/train.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FT_MAX_FILE (1u << 30)

static const char finetune_help[] =
    "usage: mica finetune -m BASE.gguf --train FILE.jsonl -o ADAPTER.gguf [options]\n"
    "\n"
    "Trains a LoRA adapter on records {\"prompt\": ..., \"completion\": ...}, one JSON object a\n"
    "line; the loss covers the completion tokens (and the end-of-sequence token) only. The\n"
    "base model stays frozen (quantized bases are dequantized to F32 for training). The\n"
    "adapter is llama.cpp's GGUF LoRA format: `mica run --lora ADAPTER.gguf` applies it.\n"
    "\n"
    "  -m, --model FILE      the base model (llama or qwen2, dense)\n"
    "      --train FILE      training records (JSON lines)\n"
    "      --val FILE        validation records: their loss is printed after each epoch\n"
    "  -o, --output FILE     where to write the adapter\n"
    "      --lora-r N        rank (default 16)\n"
    "      --lora-alpha A    scale alpha / r (default 32)\n"
    "      --lora-dropout P  dropout on the adapters' input (default 0.1)\n"
    "      --target LIST     adapted weights: q,k,v,o,gate,up,down; query_key_value = q,k,v\n"
    "                        (default q,k,v,o)\n"
    "      --epochs N        passes over the training records (default 3)\n"
    "      --lr LR           peak learning rate (default 2e-4)\n"
    "      --warmup N        steps of linear warmup (default: 5% of the steps)\n"
    "      --batch N         records per step (default 8)\n"
    "      --ctx N           longest record in tokens; longer ones are skipped (default 512)\n"
    "  -s, --seed S          shuffling, adapter initialisation and dropout (default 1)\n"
    "  -t, --threads N       threads (default: all CPUs)\n";

typedef struct ft_opts {
    const char *model, *train, *val, *out, *targets;
    long rank, epochs, batch, ctx, threads, warmup;
    double alpha, dropout, lr;
    uint64_t seed;
} ft_opts;

static int ft_parse(int argc, char **argv, ft_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        const char **str = cli_is(&a, "-m", "--model")    ? &o->model
                           : cli_is(&a, NULL, "--train")  ? &o->train
                           : cli_is(&a, NULL, "--val")    ? &o->val
                           : cli_is(&a, "-o", "--output") ? &o->out
                           : cli_is(&a, NULL, "--target") ? &o->targets
                                                          : NULL;
        bool ok = true;
        if (str)
            ok = (*str = cli_value(&a)) != NULL;
        else if (cli_is(&a, NULL, "--lora-r"))
            ok = cli_int(&a, 1, 4096, &o->rank);
        else if (cli_is(&a, NULL, "--lora-alpha"))
            ok = cli_float(&a, 0.0, 1e6, &o->alpha);
        else if (cli_is(&a, NULL, "--lora-dropout"))
            ok = cli_float(&a, 0.0, 0.99, &o->dropout);
        else if (cli_is(&a, NULL, "--epochs"))
            ok = cli_int(&a, 1, 100000, &o->epochs);
        else if (cli_is(&a, NULL, "--lr"))
            ok = cli_float(&a, 0.0, 10.0, &o->lr);
        else if (cli_is(&a, NULL, "--warmup"))
            ok = cli_int(&a, 0, 100000000, &o->warmup);
        else if (cli_is(&a, NULL, "--batch"))
            ok = cli_int(&a, 1, 4096, &o->batch);
        else if (cli_is(&a, NULL, "--ctx"))
            ok = cli_int(&a, 2, 1 << 20, &o->ctx);
        else if (cli_is(&a, "-s", "--seed"))
            ok = cli_u64(&a, &o->seed);
        else if (cli_is(&a, "-t", "--threads"))
            ok = cli_int(&a, 1, 1024, &o->threads);
        else
            return cli_unknown(&a);
        if (!ok) return 1;
    }
    if (!o->model) return cli_fail("finetune: -m BASE.gguf is required");
    if (!o->train) return cli_fail("finetune: --train FILE.jsonl is required");
    if (!o->out) return cli_fail("finetune: -o ADAPTER.gguf is required");
    return 0;
}

/* ---- records -------------------------------------------------------------------------- */

/* One tokenized record: ids[0..n), the first n_prompt of them prompt tokens. */
typedef struct ft_example {
    int32_t *ids;
    int32_t n, n_prompt;
} ft_example;

typedef struct ft_set {
    ft_example *ex;
    int32_t n, cap;
    int32_t n_skipped, n_tok_max;
    int64_t n_target_tokens;
} ft_set;

static void ft_set_free(ft_set *s)
{
    for (int32_t i = 0; i < s->n; i++) free(s->ex[i].ids);
    free(s->ex);
}

static const char *json_str_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* prompt (with the vocabulary's BOS) then completion and EOS. */
static mica_status ft_tokenize(const model *m, const char *prompt, const char *completion,
                               tok_ids *ids, int32_t *n_prompt, mica_err *err)
{
    mica_status st = tok_encode(m->vocab, prompt, strlen(prompt), true, false, ids, err);
    if (st) return st;
    *n_prompt = (int32_t)ids->n;
    st = tok_encode(m->vocab, completion, strlen(completion), false, false, ids, err);
    if (!st && tok_eos(m->vocab) >= 0 && !tok_ids_push(ids, tok_eos(m->vocab)))
        st = core_fail(err, MICA_ENOMEM, "out of memory");
    return st;
}

static int ft_add(ft_set *s, const tok_ids *ids, int32_t n_prompt)
{
    if (s->n == s->cap) {
        const int32_t cap = s->cap ? 2 * s->cap : 256;
        ft_example *grown = realloc(s->ex, (size_t)cap * sizeof *grown);
        if (!grown) return cli_fail("finetune: out of memory");
        s->ex = grown;
        s->cap = cap;
    }
    ft_example *e = &s->ex[s->n];
    e->ids = malloc(ids->n * sizeof(int32_t));
    if (!e->ids) return cli_fail("finetune: out of memory");
    memcpy(e->ids, ids->v, ids->n * sizeof(int32_t));
    e->n = (int32_t)ids->n;
    e->n_prompt = n_prompt;
    s->n_tok_max = e->n > s->n_tok_max ? e->n : s->n_tok_max;
    s->n_target_tokens += e->n - n_prompt;
    s->n++;
    return 0;
}

/* One line of a JSON-lines file: blank lines are skipped. */
static int ft_line(const model *m, const char *path, int line, const char *text, size_t len,
                   int32_t max_tok, ft_set *s)
{
    if (strspn(text, " \t\r") >= len) return 0;
    json_error_t jerr;
    json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) return cli_fail("%s:%d: %s", path, line, jerr.text);
    const char *prompt = json_str_field(obj, "prompt"),
               *completion = json_str_field(obj, "completion");
    int rc = 0;
    if (!prompt || !completion) {
        rc = cli_fail("%s:%d: expected an object with string fields \"prompt\" and \"completion\"",
                      path, line);
        goto done;
    }
    tok_ids ids;
    tok_ids_init(&ids, FT_MAX_FILE);
    int32_t n_prompt = 0;
    mica_err err;
    if (ft_tokenize(m, prompt, completion, &ids, &n_prompt, &err))
        rc = cli_fail("%s:%d: %s", path, line, err.msg);
    else if (ids.n > (size_t)max_tok)
        s->n_skipped++;
    else if (ids.n > (size_t)n_prompt)
        rc = ft_add(s, &ids, n_prompt);
    tok_ids_free(&ids);
done:
    json_decref(obj);
    return rc;
}

static int ft_load(const model *m, const char *path, int32_t max_tok, ft_set *s)
{
    char *text;
    size_t len;
    mica_err err;
    if (core_read_file(path, FT_MAX_FILE, &text, &len, &err)) return cli_fail_err(&err);
    int rc = 0, line = 1;
    for (size_t i = 0; i < len && !rc; line++) {
        const char *nl = memchr(text + i, '\n', len - i);
        const size_t end = nl ? (size_t)(nl - text) : len;
        rc = ft_line(m, path, line, text + i, end - i, max_tok, s);
        i = end + 1;
    }
    free(text);
    if (!rc && s->n_skipped)
        fprintf(stderr, "mica: %s: %d records longer than --ctx %d tokens skipped\n", path,
                s->n_skipped, max_tok);
    if (!rc && !s->n) rc = cli_fail("%s: no usable records", path);
    return rc;
}

/* ---- batches -------------------------------------------------------------------------- */

/* Records order[first..first+n_seq) as rows of n_tok: targets are the next token where that
 * token is part of the completion; rows past the set and padding have none. Returns the
 * number of real (not padding) tokens. */
static int64_t ft_batch(const ft_set *s, const int32_t *order, int32_t first, int32_t n_seq,
                        int32_t n_tok, int32_t *tokens, int32_t *targets)
{
    int64_t n_real = 0;
    for (int32_t b = 0; b < n_seq; b++) {
        int32_t *tk = tokens + (size_t)b * n_tok, *tg = targets + (size_t)b * n_tok;
        const ft_example *e = first + b < s->n ? &s->ex[order[first + b]] : NULL;
        n_real += e ? e->n : 0;
        for (int32_t t = 0; t < n_tok; t++) {
            tk[t] = e && t < e->n ? e->ids[t] : 0;
            tg[t] = e && t + 1 < e->n && t + 1 >= e->n_prompt ? e->ids[t + 1] : -1;
        }
    }
    return n_real;
}

static void ft_shuffle(int32_t *order, int32_t n, core_rng *r)
{
    for (int32_t i = n - 1; i > 0; i--) {
        const int32_t j = (int32_t)core_rng_below(r, (uint64_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* ---- the run -------------------------------------------------------------------------- */

typedef struct ft_run {
    const ft_opts *o;
    train_model *tm;
    train_work *w;
    tensor_pool *pool;
    int32_t n_tok;
    int32_t *tokens, *targets;
    train_opt_cfg opt;
    int64_t step, n_steps;
    double t_start;
    int64_t tokens_done;
} ft_run;

/* Mean loss per completion token over a whole set, without dropout. */
static int ft_eval(ft_run *r, const ft_set *s, double *mean)
{
    mica_err err;
    int32_t *order = malloc((size_t)s->n * sizeof(int32_t));
    if (!order) return cli_fail("finetune: out of memory");
    for (int32_t i = 0; i < s->n; i++) order[i] = i;
    double sum = 0.0;
    int64_t n = 0;
    for (int32_t i = 0; i < s->n; i += (int32_t)r->o->batch) {
        ft_batch(s, order, i, (int32_t)r->o->batch, r->n_tok, r->tokens, r->targets);
        float loss;
        if (train_forward(r->tm, r->w, r->pool, r->tokens, r->targets, false, 0, &loss, &err)) {
            free(order);
            return cli_fail_err(&err);
        }
        sum += (double)loss * (double)train_work_n_targets(r->w);
        n += train_work_n_targets(r->w);
    }
    free(order);
    *mean = n ? sum / (double)n : 0.0;
    return 0;
}

static void ft_progress(const ft_run *r, long epoch, float loss)
{
    const double dt = core_now() - r->t_start;
    const double eta = r->step ? dt / (double)r->step * (double)(r->n_steps - r->step) : 0.0;
    fprintf(stderr,
            "\repoch %ld/%ld  step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %dm%02ds ",
            epoch + 1, r->o->epochs, (long long)r->step, (long long)r->n_steps, (double)loss,
            (double)train_lr_at(&r->opt, r->step - 1), dt > 0 ? (double)r->tokens_done / dt : 0.0,
            (int)(eta / 60), (int)eta % 60);
}

static int ft_epoch(ft_run *r, const ft_set *s, int32_t *order, core_rng *rng, long epoch)
{
    mica_err err;
    ft_shuffle(order, s->n, rng);
    for (int32_t i = 0; i < s->n; i += (int32_t)r->o->batch) {
        const int64_t n_real =
            ft_batch(s, order, i, (int32_t)r->o->batch, r->n_tok, r->tokens, r->targets);
        float loss;
        train_model_zero_grad(r->tm);
        if (train_forward(r->tm, r->w, r->pool, r->tokens, r->targets, true, core_rng_next(rng),
                          &loss, &err))
            return cli_fail_err(&err);
        if (train_backward(r->tm, r->w, r->pool, 1.0f, &err)) return cli_fail_err(&err);
        if (train_adamw_step(r->tm, &r->opt, r->step, NULL, &err)) return cli_fail_err(&err);
        r->step++;
        r->tokens_done += n_real;
        ft_progress(r, epoch, loss);
    }
    fputc('\n', stderr);
    return 0;
}

static int ft_train(ft_run *r, const ft_set *train, const ft_set *val)
{
    int32_t *order = malloc((size_t)train->n * sizeof(int32_t));
    if (!order) return cli_fail("finetune: out of memory");
    for (int32_t i = 0; i < train->n; i++) order[i] = i;
    core_rng rng;
    core_rng_seed(&rng, r->o->seed);
    int rc = 0;
    r->t_start = core_now();
    for (long e = 0; e < r->o->epochs && !rc; e++) {
        rc = ft_epoch(r, train, order, &rng, e);
        double vl = 0.0;
        if (!rc && val && val->n && !(rc = ft_eval(r, val, &vl)))
            fprintf(stderr, "epoch %ld: validation loss %.4f\n", e + 1, vl);
    }
    free(order);
    return rc;
}

static int ft_setup(ft_run *r, const model *m, const ft_set *train, const ft_set *val)
{
    mica_err err;
    const ft_opts *o = r->o;
    if (train_model_from_model(&r->tm, m, &err)) return cli_fail_err(&err);
    const train_lora_cfg lc = {o->targets, (int32_t)o->rank, (float)o->alpha, (float)o->dropout,
                               o->seed};
    if (train_lora_add(r->tm, &lc, &err)) return cli_fail("%s: %s", o->model, err.msg);
    r->n_tok = train->n_tok_max;
    if (val && val->n_tok_max > r->n_tok) r->n_tok = val->n_tok_max;
    if (train_work_new(&r->w, r->tm, (int32_t)o->batch, r->n_tok, &err)) return cli_fail_err(&err);
    r->tokens = malloc((size_t)o->batch * r->n_tok * sizeof(int32_t));
    r->targets = malloc((size_t)o->batch * r->n_tok * sizeof(int32_t));
    if (!r->tokens || !r->targets) return cli_fail("finetune: out of memory");
    if (tensor_pool_new(&r->pool, (int)o->threads, &err)) return cli_fail_err(&err);
    r->n_steps = o->epochs * ((train->n + o->batch - 1) / o->batch);
    r->opt = train_opt_default();
    r->opt.lr = (float)o->lr;
    r->opt.total = r->n_steps;
    r->opt.warmup = o->warmup >= 0 ? o->warmup : r->n_steps / 20;
    return 0;
}

int cmd_finetune(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(finetune_help, stdout);
        return 0;
    }
    ft_opts o = {NULL, NULL,          NULL, NULL, "q,k,v,o", 16,   3, 8,
                 512,  core_n_cpus(), -1,   32.0, 0.1,       2e-4, 1};
    if (ft_parse(argc, argv, &o)) return 1;
    mica_err err;
    model *m = NULL;
    ft_set train = {0}, val = {0};
    ft_run r = {.o = &o};
    int rc = 1;
    if (model_load(&m, o.model, &err)) {
        cli_fail_err(&err);
        goto done;
    }
    const int32_t max_tok = (int32_t)(o.ctx < m->hp.n_ctx_train ? o.ctx : m->hp.n_ctx_train);
    if (ft_load(m, o.train, max_tok, &train) || (o.val && ft_load(m, o.val, max_tok, &val)))
        goto done;
    fprintf(stderr, "%d training records (%lld completion tokens), %d validation records\n",
            train.n, (long long)train.n_target_tokens, val.n);
    if (ft_setup(&r, m, &train, o.val ? &val : NULL) || ft_train(&r, &train, o.val ? &val : NULL))
        goto done;
    if (train_lora_write(r.tm, o.out, (float)o.alpha, &err)) {
        cli_fail_err(&err);
        goto done;
    }
    fprintf(stderr, "wrote %s\n", o.out);
    rc = 0;
done:
    free(r.tokens);
    free(r.targets);
    tensor_pool_free(r.pool);
    train_work_free(r.w);
    train_model_free(r.tm);
    ft_set_free(&train);
    ft_set_free(&val);
    model_free(m);
    return rc;
}
