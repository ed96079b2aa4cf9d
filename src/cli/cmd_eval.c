/*
 * cmd_eval.c - `mica eval`: the accuracy of a model on labelled examples (JSON lines). Every
 * example is answered greedily; all of them go through one continuous-batching scheduler
 * (src/engine/sched.h), so the answers are computed in parallel sequences. Metrics: exact
 * (the whole answer), contains (the reference inside the answer), label (the answer's first
 * sentence, e.g. "Status: warning.", with a confusion table by the records' labels) and
 * numbers (the same numbers as the reference, each copied exactly).
 * Needs Jansson (built with the gateway's libraries).
 */
#define _GNU_SOURCE /* memmem, strndup */
#include "cli.h"
#include "cli_record.h"
#include "core/core.h"
#include "engine/sched.h"
#include "template/template.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char eval_help[] =
    "usage: mica eval [-m MODEL] [--lora ADAPTER] --data FILE.jsonl [options]\n"
    "\n"
    "Answers every example greedily and reports the accuracy. Examples are JSON lines\n"
    "{\"prompt\": ..., \"completion\": ..., [\"label\": ...]} or {\"messages\": [...]} whose\n"
    "last assistant message is the reference.\n"
    "\n"
    "  -m, --model FILE        GGUF model (default: the embedded mica-sensor-moe)\n"
    "      --data FILE         the examples (JSON lines)\n"
    "      --metric LIST       comma list of exact, contains, label, numbers (default: label\n"
    "                          when the examples have labels, else exact)\n"
    "      --format F          chat: prompts as a user message in the model's chat format;\n"
    "                          raw: the prompt text as is (default: chat when the model has a\n"
    "                          chat template or the examples have messages, else raw)\n"
    "  -n, --n-predict N       at most N tokens per answer (default 256)\n"
    "      --limit N           only the first N examples\n"
    "      --parallel N        sequences answered at once (default 8)\n"
    "  -c, --ctx N             positions per sequence (default 1024)\n"
    "  -t, --threads N         threads (default: all CPUs)\n" CLI_LORA_HELP
    "  -o, --output FILE       also write each example's answer and verdicts as JSON lines\n"
    "\n"
    "label compares the first sentence of the answer (up to '.', '。' or a newline) with the\n"
    "reference's; numbers compares the multisets of numbers in the answer and the reference.\n";

enum { M_EXACT = 1, M_CONTAINS = 2, M_LABEL = 4, M_NUMBERS = 8 };
static const char *const metric_names[] = {"exact", "contains", "label", "numbers"};

typedef struct eval_opts {
    const char *model, *data, *output, *format;
    int metrics;
    long n_predict, limit, parallel, n_ctx, n_threads;
    cli_loras loras;
} eval_opts;

typedef struct example {
    char *prompt;    /* rendered prompt text */
    char *reference; /* the expected answer */
    char *label;     /* the record's label, or its reference's first sentence */
    core_buf answer;
    bool done, skipped;
} example;

typedef struct eval_run {
    example *ex;
    size_t n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n_done;
    bool has_labels; /* the records carry "label" */
} eval_run;

static int parse_metrics(const char *v, int *out)
{
    char buf[128];
    if (strlen(v) >= sizeof buf) return cli_fail("eval: --metric: too long");
    strcpy(buf, v);
    *out = 0;
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < 4 && strcmp(t, metric_names[k])) k++;
        if (k == 4)
            return cli_fail("eval: --metric: unknown metric '%s' (exact, contains, label, numbers)",
                            t);
        *out |= 1 << k;
    }
    return 0;
}

static int eval_parse(int argc, char **argv, eval_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        const char *v;
        bool lora;
        if (cli_lora_opt(&a, &o->loras, &lora)) return 1;
        if (lora) {
            continue;
        } else if (cli_is(&a, "-m", "--model")) {
            if (!(o->model = cli_value(&a))) return 1;
        } else if (cli_is(&a, NULL, "--data")) {
            if (!(o->data = cli_value(&a))) return 1;
        } else if (cli_is(&a, NULL, "--metric")) {
            if (!(v = cli_value(&a)) || parse_metrics(v, &o->metrics)) return 1;
        } else if (cli_is(&a, NULL, "--format")) {
            if (!(o->format = cli_value(&a))) return 1;
            if (strcmp(o->format, "chat") && strcmp(o->format, "raw"))
                return cli_fail("eval: --format: expected chat or raw, not '%s'", o->format);
        } else if (cli_is(&a, "-n", "--n-predict")) {
            if (!cli_int(&a, 1, 1L << 20, &o->n_predict)) return 1;
        } else if (cli_is(&a, NULL, "--limit")) {
            if (!cli_int(&a, 1, 1L << 30, &o->limit)) return 1;
        } else if (cli_is(&a, NULL, "--parallel")) {
            if (!cli_int(&a, 1, 256, &o->parallel)) return 1;
        } else if (cli_is(&a, "-c", "--ctx")) {
            if (!cli_int(&a, 16, 1L << 20, &o->n_ctx)) return 1;
        } else if (cli_is(&a, "-t", "--threads")) {
            if (!cli_int(&a, 1, 1024, &o->n_threads)) return 1;
        } else if (cli_is(&a, "-o", "--output")) {
            if (!(o->output = cli_value(&a))) return 1;
        } else {
            return cli_unknown(&a);
        }
    }
    if (cli_need_default_model("eval", &o->model)) return 1;
    if (!o->data) return cli_fail("eval: --data FILE is required");
    return 0;
}

/* ---- text measures ------------------------------------------------------------------------ */

static void trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s)) ++*s, --*n;
    while (*n && isspace((unsigned char)(*s)[*n - 1])) --*n;
}

/* The first sentence: up to and including the first '.' or '。', or up to a newline. */
static size_t first_sentence(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') return i;
        if (s[i] == '.') return i + 1;
        if (i + 3 <= n && !memcmp(s + i, "。", 3)) return i + 3;
    }
    return n;
}

static bool same_text(const char *a, size_t na, const char *b, size_t nb)
{
    trim(&a, &na);
    trim(&b, &nb);
    return na == nb && !memcmp(a, b, na);
}

/* The numbers in s ("-12.5", "230", "2" of CO2), sorted, as one comparable string. */
static void numbers_key(const char *s, core_buf *out)
{
    char *items[256];
    int n = 0;
    for (size_t i = 0; s[i] && n < 256;) {
        if (!isdigit((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t st = i > 0 && s[i - 1] == '-' ? i - 1 : i;
        while (isdigit((unsigned char)s[i])) i++;
        if (s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
            i++;
            while (isdigit((unsigned char)s[i])) i++;
        }
        items[n] = strndup(s + st, i - st);
        if (items[n]) n++;
    }
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && strcmp(items[b - 1], items[b]) > 0; b--) {
            char *t = items[b];
            items[b] = items[b - 1];
            items[b - 1] = t;
        }
    for (int k = 0; k < n; k++) {
        core_buf_printf(out, "%s ", items[k]);
        free(items[k]);
    }
}

static bool same_numbers(const char *a, const char *b)
{
    core_buf ka, kb;
    core_buf_init(&ka, 1 << 16);
    core_buf_init(&kb, 1 << 16);
    numbers_key(a, &ka);
    numbers_key(b, &kb);
    const bool same = ka.len == kb.len && (!ka.len || !memcmp(ka.data, kb.data, ka.len));
    core_buf_free(&ka);
    core_buf_free(&kb);
    return same;
}

/* ---- examples ------------------------------------------------------------------------------ */

/* The prompt of a record as the model sees it, and its reference answer. */
static mica_status render_example(json_t *rec, bool chat, const tmpl_chat *fmt, example *e,
                                  mica_err *err)
{
    cli_record r;
    const mica_status st = cli_record_render(rec, chat, fmt, false, &r, err);
    e->prompt = r.prompt;
    e->reference = r.reference;
    return st;
}

static mica_status load_examples(const eval_opts *o, const tmpl_chat *fmt, bool *chat,
                                 eval_run *run, mica_err *err)
{
    FILE *f = fopen(o->data, "r");
    if (!f) return core_fail(err, MICA_EIO, "%s: cannot open: %s", o->data, strerror(errno));
    char *line = NULL;
    size_t cap = 0, alloc = 0;
    mica_status st = MICA_OK;
    for (long ln = 1; getline(&line, &cap, f) >= 0 && !st; ln++) {
        if (o->limit && (long)run->n >= o->limit) break;
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        json_error_t je;
        json_t *rec = json_loads(line, 0, &je);
        if (!json_is_object(rec)) {
            st = core_fail(err, MICA_EFORMAT, "%s:%ld: %s", o->data, ln,
                           rec ? "expected a JSON object" : je.text);
            json_decref(rec);
            break;
        }
        if (!o->format && run->n == 0 && json_is_array(json_object_get(rec, "messages")))
            *chat = true;
        if (run->n == alloc) {
            alloc = alloc ? alloc * 2 : 256;
            example *grown = realloc(run->ex, alloc * sizeof *grown);
            if (!grown) {
                json_decref(rec);
                st = core_fail(err, MICA_ENOMEM, "out of memory");
                break;
            }
            run->ex = grown;
        }
        example *e = &run->ex[run->n++];
        memset(e, 0, sizeof *e);
        core_buf_init(&e->answer, 1 << 20);
        if ((st = render_example(rec, *chat, fmt, e, err))) {
            char where[4200];
            snprintf(where, sizeof where, "%s:%ld", o->data, ln);
            core_fail_prefix(err, where);
        } else {
            json_t *label = json_object_get(rec, "label");
            e->label = json_is_string(label) ? strdup(json_string_value(label)) : NULL;
            run->has_labels |= e->label != NULL;
            if (!e->label)
                e->label =
                    strndup(e->reference, first_sentence(e->reference, strlen(e->reference)));
        }
        json_decref(rec);
    }
    free(line);
    fclose(f);
    if (!st && run->n == 0) st = core_fail(err, MICA_EFORMAT, "%s: no examples", o->data);
    return st;
}

/* ---- answering ------------------------------------------------------------------------------ */

static void on_event(void *ud, const eng_event *ev)
{
    eval_run *run = ((void **)ud)[0];
    example *e = ((void **)ud)[1];
    if (ev->text_len) core_buf_append(&e->answer, ev->text, ev->text_len);
    if (!ev->done) return;
    pthread_mutex_lock(&run->mu);
    e->done = true;
    run->n_done++;
    pthread_cond_signal(&run->cv);
    pthread_mutex_unlock(&run->mu);
}

static mica_status answer_all(const eval_opts *o, mica_model *m, const tmpl_chat *fmt, bool chat,
                              eval_run *run, size_t *n_skipped, mica_err *err)
{
    eng_sched_params p = eng_sched_default_params();
    p.n_slots = (int32_t)o->parallel;
    p.n_ctx = (int32_t)o->n_ctx;
    p.n_batch = p.n_slots + 256;
    p.n_threads = (int32_t)o->n_threads;
    p.max_waiting = (int32_t)run->n + 1;
    eng_sched *s;
    mica_status st = eng_sched_new(&s, m, &p, err);
    if (st) return st;
    void *(*uds)[2] = calloc(run->n, sizeof *uds);
    mica_token *toks = malloc((size_t)o->n_ctx * sizeof *toks);
    if (!uds || !toks) st = core_fail(err, MICA_ENOMEM, "out of memory");
    size_t submitted = 0;
    for (size_t i = 0; i < run->n && !st; i++) {
        example *e = &run->ex[i];
        size_t n = 0;
        const size_t len = strlen(e->prompt);
        const bool add_bos = !(chat && tmpl_chat_has_bos(fmt, e->prompt, len));
        mica_err terr;
        if (mica_tokenize(m, e->prompt, len, add_bos, chat, toks, (size_t)o->n_ctx, &n, &terr) ||
            (long)n + o->n_predict > o->n_ctx) {
            e->skipped = true; /* longer than the context: counted, not answered */
            ++*n_skipped;
            continue;
        }
        uds[i][0] = run;
        uds[i][1] = e;
        eng_req_params rp = {.prompt = toks,
                             .n_prompt = (int32_t)n,
                             .max_tokens = (int32_t)o->n_predict,
                             .sampling = mica_sampler_default_params(),
                             .on_event = on_event,
                             .ud = uds[i]};
        rp.sampling.temperature = 0;
        rp.loras = o->loras.lora;
        rp.lora_scales = o->loras.scale;
        rp.n_loras = o->loras.n;
        eng_req *req;
        if ((st = eng_sched_submit(s, &rp, &req, err))) break;
        eng_req_release(req);
        submitted++;
    }
    if (!st) st = eng_sched_start(s, err);
    cli_progress prog;
    cli_progress_init(&prog);
    pthread_mutex_lock(&run->mu);
    while (!st && run->n_done < submitted) {
        cli_progress_update(&prog, "answering", o->data, (int64_t)run->n_done, (int64_t)submitted);
        pthread_cond_wait(&run->cv, &run->mu);
    }
    pthread_mutex_unlock(&run->mu);
    cli_progress_clear(&prog);
    eng_sched_free(s);
    free(uds);
    free(toks);
    return st;
}

/* ---- scoring --------------------------------------------------------------------------------- */

static bool verdict(int metric, const example *e)
{
    const char *a = e->answer.data ? e->answer.data : "";
    const size_t na = e->answer.len, nr = strlen(e->reference);
    switch (metric) {
    case M_EXACT:
        return same_text(a, na, e->reference, nr);
    case M_CONTAINS: {
        const char *r = e->reference;
        size_t n = nr;
        trim(&r, &n);
        return n == 0 || memmem(a, na, r, n) != NULL;
    }
    case M_LABEL:
        return same_text(a, first_sentence(a, na), e->reference, first_sentence(e->reference, nr));
    default:
        return same_numbers(a, e->reference);
    }
}

/* The label the answer's first sentence stands for: the label of an example whose reference
 * starts with that sentence; "(other)" when none does. */
static const char *predicted_label(const eval_run *run, const example *e)
{
    const char *a = e->answer.data ? e->answer.data : "";
    const size_t n = first_sentence(a, e->answer.len);
    for (size_t i = 0; i < run->n; i++) {
        const char *r = run->ex[i].reference;
        if (same_text(a, n, r, first_sentence(r, strlen(r)))) return run->ex[i].label;
    }
    return "(other)";
}

static void print_confusion(const eval_run *run)
{
    const char *labels[32];
    int n = 0;
    for (size_t i = 0; i < run->n && n < 32; i++) {
        int k = 0;
        while (k < n && strcmp(labels[k], run->ex[i].label)) k++;
        if (k == n) labels[n++] = run->ex[i].label;
    }
    printf("confusion (rows: expected, columns: answered; last column: other)\n%-16s", "");
    for (int c = 0; c < n; c++) printf(" %10.10s", labels[c]);
    printf(" %10s\n", "(other)");
    for (int r = 0; r < n; r++) {
        printf("%-16.16s", labels[r]);
        long row[33] = {0};
        for (size_t i = 0; i < run->n; i++) {
            const example *e = &run->ex[i];
            if (e->skipped || strcmp(e->label, labels[r])) continue;
            const char *p = predicted_label(run, e);
            int c = 0;
            while (c < n && strcmp(labels[c], p)) c++;
            row[c]++;
        }
        for (int c = 0; c <= n; c++) printf(" %10ld", row[c]);
        printf("\n");
    }
}

static mica_status write_output(const eval_opts *o, const eval_run *run, mica_err *err)
{
    FILE *f = fopen(o->output, "w");
    if (!f) return core_fail(err, MICA_EIO, "%s: cannot create: %s", o->output, strerror(errno));
    for (size_t i = 0; i < run->n; i++) {
        const example *e = &run->ex[i];
        core_buf answer; /* valid UTF-8 for JSON */
        core_buf_init(&answer, e->answer.len * 3 + 16);
        core_buf_append_utf8(&answer, e->answer.data ? e->answer.data : "", e->answer.len);
        json_t *v =
            json_pack("{s:s,s:s,s:s%,s:b}", "prompt", e->prompt, "reference", e->reference,
                      "answer", answer.data ? answer.data : "", answer.len, "skipped", e->skipped);
        core_buf_free(&answer);
        for (int k = 0; k < 4 && v; k++)
            if (o->metrics & (1 << k))
                json_object_set_new(v, metric_names[k],
                                    json_boolean(!e->skipped && verdict(1 << k, e)));
        if (v) json_dumpf(v, f, JSON_COMPACT);
        fputc('\n', f);
        json_decref(v);
    }
    return fclose(f) ? core_fail(err, MICA_EIO, "%s: write failed", o->output) : MICA_OK;
}

static void report(const eval_opts *o, const eval_run *run, size_t skipped, double secs)
{
    const size_t answered = run->n - skipped;
    for (int k = 0; k < 4; k++) {
        if (!(o->metrics & (1 << k))) continue;
        size_t ok = 0;
        for (size_t i = 0; i < run->n; i++)
            ok += !run->ex[i].skipped && verdict(1 << k, &run->ex[i]);
        printf("%-8s %6.2f %%  (%zu of %zu)\n", metric_names[k],
               answered ? 100.0 * (double)ok / (double)answered : 0.0, ok, answered);
    }
    if (o->metrics & M_LABEL) print_confusion(run);
    fprintf(stderr, "mica: eval: %zu examples answered in %.1f s (%.1f examples/s)%s", answered,
            secs, secs > 0 ? (double)answered / secs : 0.0, skipped ? "; " : "\n");
    if (skipped) fprintf(stderr, "%zu skipped: longer than the context\n", skipped);
}

int cmd_eval(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(eval_help, stdout);
        return 0;
    }
    eval_opts o = {.n_predict = 256, .parallel = 8, .n_ctx = 1024};
    if (eval_parse(argc, argv, &o)) return 1;
    eval_run run = {0};
    pthread_mutex_init(&run.mu, NULL);
    pthread_cond_init(&run.cv, NULL);
    mica_model *m = NULL;
    tmpl_chat *fmt = NULL;
    mica_err err;
    int rc = 0;
    size_t skipped = 0;
    if (mica_model_load(&m, o.model, &err) || tmpl_chat_new(&fmt, m, o.model, &err)) {
        rc = cli_fail_err(&err);
        goto done;
    }
    if ((rc = cli_lora_load(&o.loras, m))) goto done;
    bool chat = o.format ? !strcmp(o.format, "chat") : !strcmp(tmpl_chat_format(fmt), "model");
    if (load_examples(&o, fmt, &chat, &run, &err)) {
        rc = cli_fail_err(&err);
        goto done;
    }
    if (!o.metrics) o.metrics = run.has_labels ? M_LABEL : M_EXACT;
    const double t0 = core_now();
    if (answer_all(&o, m, fmt, chat, &run, &skipped, &err) ||
        (o.output && write_output(&o, &run, &err))) {
        rc = cli_fail_err(&err);
        goto done;
    }
    report(&o, &run, skipped, core_now() - t0);
done:
    for (size_t i = 0; i < run.n; i++) {
        free(run.ex[i].prompt);
        free(run.ex[i].reference);
        free(run.ex[i].label);
        core_buf_free(&run.ex[i].answer);
    }
    free(run.ex);
    tmpl_chat_free(fmt);
    cli_loras_free(&o.loras);
    mica_model_free(m);
    pthread_cond_destroy(&run.cv);
    pthread_mutex_destroy(&run.mu);
    return rc;
}
