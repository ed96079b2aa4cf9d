/*
 * cli_train.c - the training loop of `mica train` and `mica finetune` over src/train: data
 * into examples (cli_record.c renders records as `mica eval` does, so a model learns the
 * tokens it will be prompted with), shuffled batches padded to the longest example, AdamW
 * with warmup + cosine decay, a progress line on a terminal, a summary line per epoch, and
 * checkpoints. Resuming is exact: the order of an epoch and the dropout of a step are drawn
 * from the seed and their numbers, not from state carried along, so a checkpoint needs only
 * the weights, the optimizer's moments and the step.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli_train.h"

#include "cli_record.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CT_MAX_FILE (1u << 30)
#define CT_ROUND    16 /* batch rows are padded to a multiple of this */
#define CT_WINDOW   32 /* batches whose examples are sorted by length together */

/* ---- examples ------------------------------------------------------------------------- */

void ct_set_free(ct_set *s)
{
    for (int32_t i = 0; i < s->n; i++) free(s->ex[i].ids);
    free(s->ex);
    memset(s, 0, sizeof *s);
}

static int ct_add(ct_set *s, const char *cmd, const int32_t *ids, int32_t n, int32_t n_prompt)
{
    if (s->n == s->cap) {
        const int32_t cap = s->cap ? 2 * s->cap : 256;
        ct_example *grown = realloc(s->ex, (size_t)cap * sizeof *grown);
        if (!grown) return cli_fail("%s: out of memory", cmd);
        s->ex = grown;
        s->cap = cap;
    }
    ct_example *e = &s->ex[s->n];
    if (!(e->ids = malloc((size_t)n * sizeof(int32_t)))) return cli_fail("%s: out of memory", cmd);
    memcpy(e->ids, ids, (size_t)n * sizeof(int32_t));
    e->n = n;
    e->n_prompt = n_prompt;
    s->n_tok_max = n > s->n_tok_max ? n : s->n_tok_max;
    s->n_target_tokens += n - (n_prompt ? n_prompt : 1);
    s->n++;
    return 0;
}

/* The prompt's tokens, then the answer's: in the chat format the rendered target with its
 * special tokens, raw the completion and EOS. The two texts are tokenized together when that
 * keeps the prompt's tokens (a SentencePiece vocabulary would otherwise give the answer a
 * second leading space), else one after the other. */
static mica_status ct_tokenize(const ct_text *t, bool chat, const cli_record *r, tok_ids *ids,
                               int32_t *n_prompt, mica_err *err)
{
    const size_t np = strlen(r->prompt);
    const char *answer = chat ? r->target : r->reference;
    const bool add_bos = !(chat && tmpl_chat_has_bos(t->fmt, r->prompt, np));
    mica_status st = tok_encode(t->vocab, r->prompt, np, add_bos, chat, ids, err);
    if (st) return st;
    *n_prompt = (int32_t)ids->n;
    char *both = malloc(np + strlen(answer) + 1);
    tok_ids joint;
    tok_ids_init(&joint, ids->max);
    if (!both) return core_fail(err, MICA_ENOMEM, "out of memory");
    memcpy(both, r->prompt, np);
    strcpy(both + np, answer);
    st = tok_encode(t->vocab, both, strlen(both), add_bos, chat, &joint, err);
    free(both);
    if (!st && joint.n > ids->n && !memcmp(joint.v, ids->v, ids->n * sizeof(int32_t))) {
        tok_ids_free(ids);
        *ids = joint;
    } else {
        tok_ids_free(&joint);
        if (!st) st = tok_encode(t->vocab, answer, strlen(answer), false, chat, ids, err);
    }
    if (!st && !chat && tok_eos(t->vocab) >= 0 && !tok_ids_push(ids, tok_eos(t->vocab)))
        st = core_fail(err, MICA_ENOMEM, "out of memory");
    return st;
}

static int ct_record(const ct_text *t, const char *path, int line, json_t *rec, ct_set *s)
{
    if (!json_is_object(rec)) return cli_fail("%s:%d: expected a JSON object", path, line);
    const bool chat = s->chat || json_is_array(json_object_get(rec, "messages"));
    cli_record r;
    mica_err err;
    if (cli_record_render(rec, chat, t->fmt, chat, &r, &err))
        return cli_fail("%s:%d: %s", path, line, err.msg);
    tok_ids ids;
    tok_ids_init(&ids, CT_MAX_FILE);
    int32_t n_prompt = 0;
    int rc = 0;
    if (ct_tokenize(t, chat, &r, &ids, &n_prompt, &err))
        rc = cli_fail("%s:%d: %s", path, line, err.msg);
    else if (ids.n > (size_t)t->max_tok)
        s->n_skipped++;
    else if (ids.n > (size_t)n_prompt)
        rc = ct_add(s, t->cmd, ids.v, (int32_t)ids.n, n_prompt);
    tok_ids_free(&ids);
    cli_record_free(&r);
    return rc;
}

static int ct_load_records(const ct_text *t, const char *path, const char *text, size_t len,
                           ct_set *s)
{
    int rc = 0, line = 1;
    for (size_t i = 0; i < len && !rc; line++) {
        const char *nl = memchr(text + i, '\n', len - i);
        const size_t end = nl ? (size_t)(nl - text) : len;
        if (strspn(text + i, " \t\r") < end - i) {
            json_error_t jerr;
            json_t *rec = json_loadb(text + i, end - i, JSON_REJECT_DUPLICATES, &jerr);
            rc = rec ? ct_record(t, path, line, rec, s)
                     : cli_fail("%s:%d: %s", path, line, jerr.text);
            json_decref(rec);
        }
        i = end + 1;
    }
    return rc;
}

/* Plain text: BOS, the text, cut into windows of max_tok tokens, every token learnt. */
static int ct_load_text(const ct_text *t, const char *path, const char *text, size_t len, ct_set *s)
{
    tok_ids ids;
    tok_ids_init(&ids, CT_MAX_FILE);
    mica_err err;
    int rc = 0;
    if (tok_encode(t->vocab, text, len, true, false, &ids, &err)) rc = cli_fail_err(&err);
    for (size_t i = 0; !rc && i + 1 < ids.n; i += (size_t)t->max_tok) {
        const size_t n = ids.n - i < (size_t)t->max_tok ? ids.n - i : (size_t)t->max_tok;
        if (n >= 2) rc = ct_add(s, t->cmd, ids.v + i, (int32_t)n, 0);
    }
    tok_ids_free(&ids);
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int ct_load(const ct_text *t, const char *path, ct_set *s)
{
    char *text;
    size_t len;
    mica_err err;
    if (core_read_file(path, CT_MAX_FILE, &text, &len, &err)) return cli_fail_err(&err);
    s->chat = t->format ? !strcmp(t->format, "chat") : !strcmp(tmpl_chat_format(t->fmt), "model");
    const int rc = ends_with(path, ".jsonl") ? ct_load_records(t, path, text, len, s)
                                             : ct_load_text(t, path, text, len, s);
    free(text);
    if (rc) return rc;
    if (s->n_skipped)
        fprintf(stderr, "mica: %s: %d records longer than %d tokens skipped\n", path, s->n_skipped,
                t->max_tok);
    if (!s->n) return cli_fail("%s: no usable records", path);
    return 0;
}

static void special_text(const tok_vocab *v, int32_t id, char *buf, size_t cap)
{
    const size_t n = id >= 0 ? tok_piece(v, id, true, buf, cap - 1) : 0;
    buf[n < cap ? n : cap - 1] = '\0';
}

int ct_chat_format(const tok_vocab *v, const gguf_file *f, tmpl_chat **out)
{
    char bos[64], eos[64];
    special_text(v, tok_bos(v), bos, sizeof bos);
    special_text(v, tok_eos(v), eos, sizeof eos);
    gguf_str src = {NULL, 0};
    mica_err err;
    if (gguf_get_str_opt(f, "tokenizer.chat_template", &src, &err) ||
        tmpl_chat_new_text(out, src.ptr, (size_t)src.len, bos, eos, f->path, &err))
        return cli_fail_err(&err);
    return 0;
}

/* ---- options -------------------------------------------------------------------------- */

int ct_opt(cli_args *a, ct_opts *o, bool *handled)
{
    *handled = true;
    bool ok = true;
    if (cli_is(a, NULL, "--epochs"))
        ok = cli_int(a, 1, 100000, &o->epochs);
    else if (cli_is(a, NULL, "--lr"))
        ok = cli_float(a, 0.0, 10.0, &o->lr);
    else if (cli_is(a, NULL, "--warmup"))
        ok = cli_int(a, 0, 100000000, &o->warmup);
    else if (cli_is(a, NULL, "--weight-decay"))
        ok = cli_float(a, 0.0, 10.0, &o->weight_decay);
    else if (cli_is(a, NULL, "--batch"))
        ok = cli_int(a, 1, 4096, &o->batch);
    else if (cli_is(a, NULL, "--save-every"))
        ok = cli_int(a, 1, 100000000, &o->save_every);
    else if (cli_is(a, NULL, "--checkpoint"))
        ok = (o->checkpoint = cli_value(a)) != NULL;
    else if (cli_is(a, NULL, "--resume"))
        ok = (o->resume = cli_value(a)) != NULL;
    else if (cli_is(a, "-s", "--seed"))
        ok = cli_u64(a, &o->seed);
    else if (cli_is(a, "-t", "--threads"))
        ok = cli_int(a, 1, 1024, &o->threads);
    else
        *handled = false;
    return ok ? 0 : 1;
}

/* ---- the loop ------------------------------------------------------------------------- */

static volatile sig_atomic_t ct_interrupted;

static void ct_on_sigint(int sig)
{
    (void)sig;
    ct_interrupted = 1;
}

typedef struct ct_loop {
    const ct_opts *o;
    const char *cmd;
    char ckpt[4096];
    train_model *tm;
    train_work **works; /* by row length / CT_ROUND: made when a batch first needs it */
    train_work *w;      /* the last batch's */
    tensor_pool *pool;
    int32_t n_tok, *tokens, *targets, *order;
    train_opt_cfg opt;
    int64_t step, n_steps, steps_per_epoch, first_step;
    double t_start, loss_sum;
    int64_t tokens_done, loss_n;
    cli_progress prog;
} ct_loop;

/* A seed for (what, number) drawn from the run's seed, so that nothing depends on history. */
static uint64_t ct_seed(const ct_loop *L, uint64_t what, uint64_t n)
{
    core_rng r;
    core_rng_seed(&r, L->o->seed ^ (what * 0x9E3779B97F4A7C15ull) ^ (n * 0xD1B54A32D192ED03ull));
    return core_rng_next(&r);
}

static const ct_set *ct_sort_set;

/* Longest first, then by index, so the order is the same on every machine. */
static int ct_by_length(const void *a, const void *b)
{
    const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    const int32_t ni = ct_sort_set->ex[i].n, nj = ct_sort_set->ex[j].n;
    return ni != nj ? (ni < nj) - (ni > nj) : (i > j) - (i < j);
}

/* A shuffled order in which each window of CT_WINDOW batches is sorted by length, so that a
 * batch pads its rows little and batches still come in a random order of windows. */
static void ct_order(ct_loop *L, const ct_set *s, int64_t epoch)
{
    core_rng r;
    core_rng_seed(&r, ct_seed(L, 1, (uint64_t)epoch));
    for (int32_t i = 0; i < s->n; i++) L->order[i] = i;
    for (int32_t i = s->n - 1; i > 0; i--) {
        const int32_t j = (int32_t)core_rng_below(&r, (uint64_t)i + 1), tmp = L->order[i];
        L->order[i] = L->order[j];
        L->order[j] = tmp;
    }
    const int32_t win = (int32_t)L->o->batch * CT_WINDOW;
    ct_sort_set = s;
    for (int32_t i = 0; i < s->n; i += win)
        qsort(L->order + i, (size_t)(s->n - i < win ? s->n - i : win), sizeof(int32_t),
              ct_by_length);
}

/* The work for rows of n_tok tokens (a multiple of CT_ROUND). */
static int ct_work(ct_loop *L, int32_t n_tok)
{
    train_work **w = &L->works[n_tok / CT_ROUND];
    mica_err err;
    if (!*w && train_work_new(w, L->tm, (int32_t)L->o->batch, n_tok, &err))
        return cli_fail_err(&err);
    L->w = *w;
    return 0;
}

/* Examples order[first..first+batch) as rows of the longest one's length rounded up to
 * CT_ROUND: targets are the next token where it is learnt; rows past the set and padding
 * have none. Picks the work of that length; returns 1 after an error. */
static int ct_batch(ct_loop *L, const ct_set *s, const int32_t *order, int32_t first,
                    int64_t *n_real)
{
    const int32_t n_seq = (int32_t)L->o->batch;
    int32_t n_tok = 1;
    for (int32_t b = 0; b < n_seq && first + b < s->n; b++)
        if (s->ex[order[first + b]].n > n_tok) n_tok = s->ex[order[first + b]].n;
    n_tok = (n_tok + CT_ROUND - 1) / CT_ROUND * CT_ROUND;
    *n_real = 0;
    for (int32_t b = 0; b < n_seq; b++) {
        int32_t *tk = L->tokens + (size_t)b * n_tok, *tg = L->targets + (size_t)b * n_tok;
        const ct_example *e = first + b < s->n ? &s->ex[order[first + b]] : NULL;
        *n_real += e ? e->n : 0;
        for (int32_t t = 0; t < n_tok; t++) {
            tk[t] = e && t < e->n ? e->ids[t] : 0;
            tg[t] = e && t + 1 < e->n && t + 1 >= e->n_prompt ? e->ids[t + 1] : -1;
        }
    }
    return ct_work(L, n_tok);
}

/* Mean loss per learnt token over a whole set, without dropout. */
static int ct_eval(ct_loop *L, const ct_set *s, double *mean)
{
    mica_err err;
    int32_t *order = malloc((size_t)s->n * sizeof(int32_t));
    if (!order) return cli_fail("%s: out of memory", L->cmd);
    for (int32_t i = 0; i < s->n; i++) order[i] = i;
    double sum = 0.0;
    int64_t n = 0;
    int rc = 0;
    for (int32_t i = 0; i < s->n && !rc; i += (int32_t)L->o->batch) {
        int64_t n_real;
        float loss = 0.0f;
        if ((rc = ct_batch(L, s, order, i, &n_real))) break;
        if (train_forward(L->tm, L->w, L->pool, L->tokens, L->targets, false, 0, &loss, &err))
            rc = cli_fail_err(&err);
        sum += (double)loss * (double)train_work_n_targets(L->w);
        n += train_work_n_targets(L->w);
    }
    free(order);
    *mean = n ? sum / (double)n : 0.0;
    return rc;
}

static void ct_progress(ct_loop *L, int64_t epoch, float loss)
{
    if (!L->prog.tty) return;
    const double now = core_now(), dt = now - L->t_start;
    if (L->step < L->n_steps && now - L->prog.last < 0.2) return;
    L->prog.last = now;
    const int64_t done = L->step - L->first_step;
    const double eta = done ? dt / (double)done * (double)(L->n_steps - L->step) : 0.0;
    fprintf(stderr,
            "\r\033[Kepoch %lld/%ld  step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %dm%02ds",
            (long long)epoch + 1, L->o->epochs, (long long)L->step, (long long)L->n_steps,
            (double)loss, (double)train_lr_at(&L->opt, L->step - 1),
            dt > 0 ? (double)L->tokens_done / dt : 0.0, (int)(eta / 60), (int)eta % 60);
    L->prog.shown = true;
}

static int ct_save(ct_loop *L)
{
    mica_err err;
    if (train_checkpoint_write(L->tm, L->step, L->ckpt, &err)) return cli_fail_err(&err);
    return 0;
}

static int ct_step(ct_loop *L, const ct_set *s, int64_t epoch)
{
    mica_err err;
    const int32_t first = (int32_t)((L->step % L->steps_per_epoch) * L->o->batch);
    int64_t n_real;
    float loss;
    if (ct_batch(L, s, L->order, first, &n_real)) return 1;
    train_model_zero_grad(L->tm);
    if (train_forward(L->tm, L->w, L->pool, L->tokens, L->targets, true,
                      ct_seed(L, 2, (uint64_t)L->step), &loss, &err) ||
        train_backward(L->tm, L->w, L->pool, 1.0f, &err) ||
        train_adamw_step(L->tm, &L->opt, L->step, NULL, &err))
        return cli_fail_err(&err);
    L->step++;
    L->tokens_done += n_real;
    L->loss_sum += (double)loss * (double)train_work_n_targets(L->w);
    L->loss_n += train_work_n_targets(L->w);
    ct_progress(L, epoch, loss);
    return 0;
}

static void ct_epoch_line(ct_loop *L, int64_t epoch, const ct_set *val, double val_loss)
{
    if (L->prog.shown) fputs("\r\033[K", stderr);
    L->prog.shown = false;
    const double dt = core_now() - L->t_start;
    fprintf(stderr, "%s: epoch %lld/%ld  step %lld  train loss %.4f", L->cmd, (long long)epoch + 1,
            L->o->epochs, (long long)L->step, L->loss_n ? L->loss_sum / (double)L->loss_n : 0.0);
    if (val) fprintf(stderr, "  validation loss %.4f", val_loss);
    fprintf(stderr, "  %.0f tok/s  %.0fs\n", dt > 0 ? (double)L->tokens_done / dt : 0.0, dt);
    L->loss_sum = 0.0;
    L->loss_n = 0;
}

static int ct_epochs(ct_loop *L, const ct_set *train, const ct_set *val)
{
    int rc = 0;
    while (!rc && L->step < L->n_steps) {
        const int64_t epoch = L->step / L->steps_per_epoch;
        ct_order(L, train, epoch);
        const int64_t end = (epoch + 1) * L->steps_per_epoch;
        while (!rc && L->step < end && !ct_interrupted) {
            rc = ct_step(L, train, epoch);
            if (!rc && L->step % L->o->save_every == 0 && L->step < end) rc = ct_save(L);
        }
        if (rc) break;
        if (ct_interrupted) {
            if (L->prog.shown) fputc('\n', stderr);
            if (!(rc = ct_save(L)))
                fprintf(stderr,
                        "mica: %s: interrupted after step %lld; continue with --resume %s\n",
                        L->cmd, (long long)L->step, L->ckpt);
            return rc ? rc : 130;
        }
        double vl = 0.0;
        if (val && (rc = ct_eval(L, val, &vl))) break;
        ct_epoch_line(L, epoch, val, vl);
        if (L->step < L->n_steps) rc = ct_save(L);
    }
    return rc;
}

static int ct_setup(ct_loop *L, const ct_set *train, const ct_set *val)
{
    mica_err err;
    const ct_opts *o = L->o;
    L->n_tok = train->n_tok_max;
    if (val && val->n_tok_max > L->n_tok) L->n_tok = val->n_tok_max;
    L->n_tok = (L->n_tok + CT_ROUND - 1) / CT_ROUND * CT_ROUND;
    L->works = calloc((size_t)(L->n_tok / CT_ROUND + 1), sizeof *L->works);
    L->tokens = malloc((size_t)o->batch * L->n_tok * sizeof(int32_t));
    L->targets = malloc((size_t)o->batch * L->n_tok * sizeof(int32_t));
    L->order = malloc((size_t)train->n * sizeof(int32_t));
    if (!L->works || !L->tokens || !L->targets || !L->order)
        return cli_fail("%s: out of memory", L->cmd);
    if (tensor_pool_new(&L->pool, (int)o->threads, &err)) return cli_fail_err(&err);
    L->steps_per_epoch = (train->n + o->batch - 1) / o->batch;
    L->n_steps = o->epochs * L->steps_per_epoch;
    L->opt = train_opt_default();
    L->opt.lr = (float)o->lr;
    L->opt.weight_decay = (float)o->weight_decay;
    L->opt.total = L->n_steps;
    L->opt.warmup = o->warmup >= 0 ? o->warmup : L->n_steps / 20;
    if (o->resume) {
        if (train_checkpoint_read(L->tm, o->resume, &L->step, &err)) return cli_fail_err(&err);
        if (L->step > L->n_steps)
            return cli_fail("%s: the checkpoint is at step %lld, past this run's %lld steps",
                            o->resume, (long long)L->step, (long long)L->n_steps);
        fprintf(stderr, "%s: resuming at step %lld of %lld\n", L->cmd, (long long)L->step,
                (long long)L->n_steps);
    }
    L->first_step = L->step;
    return 0;
}

int ct_run(const ct_opts *o, const char *cmd, const char *output, train_model *tm,
           const ct_set *train, const ct_set *val)
{
    ct_loop L = {.o = o, .cmd = cmd, .tm = tm};
    snprintf(L.ckpt, sizeof L.ckpt, "%s%s", o->checkpoint ? o->checkpoint : output,
             o->checkpoint ? "" : ".ckpt");
    cli_progress_init(&L.prog);
    struct sigaction sa = {0}, old;
    sa.sa_handler = ct_on_sigint;
    sigemptyset(&sa.sa_mask);
    ct_interrupted = 0;
    sigaction(SIGINT, &sa, &old);
    int rc = ct_setup(&L, train, val);
    L.t_start = core_now();
    if (!rc) rc = ct_epochs(&L, train, val);
    sigaction(SIGINT, &old, NULL);
    if (!rc && !o->checkpoint) unlink(L.ckpt);
    free(L.tokens);
    free(L.targets);
    free(L.order);
    tensor_pool_free(L.pool);
    for (int32_t i = 0; L.works && i <= L.n_tok / CT_ROUND; i++) train_work_free(L.works[i]);
    free(L.works);
    return rc;
}
