/*
 * cmd_run.c - `mica run`: tokenizes a prompt, evaluates it in one batched pass, then
 * samples and streams the continuation to stdout token by token until -n tokens, an
 * end-of-generation token or the end of the context. A summary line goes to stderr, and
 * with --stats a table of the Mixture-of-Experts routing after it.
 */
#include "cli.h"
#include "core/core.h"
#include "template/template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char run_help[] =
    "usage: mica run [-m MODEL] -p PROMPT [options]\n"
    "\n"
    "Generates a continuation of PROMPT and streams it to stdout (the prompt itself is not\n"
    "printed unless --echo). A summary goes to stderr.\n"
    "\n"
    "  -m, --model FILE        GGUF model (default: the embedded mica-sensor-moe)\n"
    "  -p, --prompt TEXT       the prompt (BOS is added as the model's metadata says)\n"
    "  -n, --n-predict N       tokens to generate (default 128; -1: until the context is "
    "full)\n" CLI_GEN_HELP
    "  -c, --ctx N             context size in tokens (default: the model's)\n"
    "  -t, --threads N         threads (default: all CPUs)\n"
    "      --chat              PROMPT is a user message in the model's chat format and the\n"
    "                          answer follows it (default without -m: the embedded model is a\n"
    "                          chat model); --raw: PROMPT as it is (default with -m)\n"
    "      --echo              print the prompt before the continuation\n"
    "      --stats             after the text, a table of tokens routed to each expert of\n"
    "                          each layer and their mean gate weight (MoE models), on stderr\n";

typedef struct run_opts {
    const char *prompt;
    long n_predict;
    bool echo, stats;
    int chat; /* 1 --chat, 0 --raw, -1 not said */
    cli_gen_opts g;
} run_opts;

static int run_parse(int argc, char **argv, run_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        bool handled;
        if (cli_gen_opt(&a, &o->g, &handled)) return 1;
        if (handled) continue;
        if (cli_is(&a, "-p", "--prompt")) {
            if (!(o->prompt = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-n", "--n-predict")) {
            if (!cli_int(&a, -1, 1L << 30, &o->n_predict)) return 1;
        } else if (cli_is(&a, NULL, "--chat") || cli_is(&a, NULL, "--raw")) {
            o->chat = cli_is(&a, NULL, "--chat");
        } else if (cli_is(&a, NULL, "--echo")) {
            o->echo = true;
        } else if (cli_is(&a, NULL, "--stats")) {
            o->stats = true;
        } else {
            return cli_unknown(&a);
        }
    }
    if (o->chat < 0) o->chat = o->g.model == NULL;
    if (cli_gen_check(&o->g, "run")) return 1;
    if (!o->prompt) return cli_fail("run: -p PROMPT is required");
    return 0;
}

/* The prompt rendered as one user message with the generation prompt (--chat). */
static int chat_prompt(mica_model *m, const char *name, const char *prompt, char **text,
                       size_t *len, bool *add_bos)
{
    tmpl_chat *fmt = NULL;
    tmpl_value *list = tmpl_list(), *msg = tmpl_dict();
    mica_err err;
    mica_status st = list && msg ? tmpl_chat_new(&fmt, m, name, &err)
                                 : core_fail(&err, MICA_ENOMEM, "out of memory");
    if (!st) st = tmpl_dict_set(msg, "role", 4, tmpl_cstr("user"), &err);
    if (!st) st = tmpl_dict_set(msg, "content", 7, tmpl_cstr(prompt), &err);
    if (!st && !(st = tmpl_list_push(list, msg, &err))) msg = NULL;
    if (!st) st = tmpl_chat_render(fmt, list, NULL, true, text, len, &err);
    if (!st) *add_bos = !tmpl_chat_has_bos(fmt, *text, *len);
    tmpl_value_free(msg);
    tmpl_value_free(list);
    tmpl_chat_free(fmt);
    return st ? cli_fail_err(&err) : 0;
}

static void print_piece(const mica_model *m, mica_token t)
{
    char piece[256];
    size_t len = mica_token_to_piece(m, t, false, piece, sizeof piece);
    fwrite(piece, 1, len < sizeof piece ? len : sizeof piece, stdout);
    fflush(stdout);
}

typedef struct run_state {
    mica_model *m;
    mica_context *c;
    mica_sampler *s;
    mica_grammar *g; /* NULL: unconstrained */
    mica_token *prompt;
    float *logits;
    size_t n_prompt;
} run_state;

static mica_status run_generate(run_state *r, const run_opts *o, int32_t n_ctx, int *n_gen,
                                mica_err *err)
{
    mica_status st =
        mica_decode(r->c, 0, r->prompt, (int32_t)r->n_prompt, 0, false, r->logits, err);
    if (st) return st;
    for (size_t i = 0; i < r->n_prompt; i++) mica_sampler_accept(r->s, r->prompt[i]);
    int32_t pos = (int32_t)r->n_prompt;
    *n_gen = 0;
    while (o->n_predict < 0 || *n_gen < o->n_predict) {
        if (r->g && (st = mica_grammar_apply(r->g, r->logits, err))) return st;
        mica_token t = mica_sampler_sample(r->s, r->logits);
        if (mica_model_is_eog(r->m, t)) break;
        if (r->g && (st = mica_grammar_accept(r->g, t, err))) return st;
        print_piece(r->m, t);
        ++*n_gen;
        if (r->g && mica_grammar_done(r->g)) break; /* a complete document */
        /* The last token is not fed back: nothing would read its logits. */
        if (pos >= n_ctx || *n_gen == o->n_predict) break;
        if ((st = mica_decode(r->c, 0, &t, 1, pos++, false, r->logits, err))) return st;
    }
    return MICA_OK;
}

/* Per layer and expert: tokens routed there, their share of the layer's routing decisions
 * and the mean gate weight. Every evaluated token (the prompt, and each generated token but
 * the last, which is never fed back) counts once per layer. */
static void print_routing_stats(const mica_context *c, const mica_model *m)
{
    const int32_t n_layer = mica_model_n_layer(m), n_expert = mica_model_n_expert(m);
    if (!n_expert) {
        fputs("routing statistics: dense model, no experts\n", stderr);
        return;
    }
    fprintf(stderr, "routing statistics: %d layers, %d experts, top-%d\n", n_layer, n_expert,
            mica_model_n_expert_used(m));
    fputs("layer  expert    tokens   share  mean weight\n", stderr);
    for (int32_t l = 0; l < n_layer; l++) {
        uint64_t layer_total = 0;
        mica_expert_stat st;
        for (int32_t e = 0; e < n_expert; e++)
            if (!mica_context_expert_stat(c, l, e, &st, NULL)) layer_total += st.n_tokens;
        for (int32_t e = 0; e < n_expert; e++) {
            if (mica_context_expert_stat(c, l, e, &st, NULL)) continue;
            const double share =
                layer_total ? 100.0 * (double)st.n_tokens / (double)layer_total : 0;
            fprintf(stderr, "%5d  %6d  %8llu  %5.1f%%  %11.4f\n", l, e,
                    (unsigned long long)st.n_tokens, share, st.mean_weight);
        }
    }
}

int cmd_run(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(run_help, stdout);
        return 0;
    }
    run_opts o = {.n_predict = 128, .chat = -1, .g = {.sp = mica_sampler_default_params()}};
    if (run_parse(argc, argv, &o)) {
        cli_loras_free(&o.g.loras);
        return 1;
    }
    run_state r = {0};
    mica_err err;
    char *text = NULL; /* the rendered prompt (--chat) */
    int rc = 1;
    if (cli_gen_open(&o.g, 0, &r.m, &r.c)) goto done;
    const int32_t n_ctx = mica_context_n_ctx(r.c);
    size_t len = strlen(o.prompt);
    bool add_bos = true;
    if (o.chat && chat_prompt(r.m, o.g.model, o.prompt, &text, &len, &add_bos)) goto done;
    const size_t cap = 3 * len + 16; /* mica_tokenize's most */
    r.prompt = malloc(cap * sizeof *r.prompt);
    r.logits = malloc((size_t)mica_model_n_vocab(r.m) * sizeof *r.logits);
    if (!r.prompt || !r.logits) {
        rc = cli_fail("run: out of memory");
        goto done;
    }
    if (mica_tokenize(r.m, text ? text : o.prompt, len, add_bos, o.chat, r.prompt, cap, &r.n_prompt,
                      &err))
        goto fail_err;
    if (r.n_prompt == 0) {
        rc = cli_fail("run: the prompt has no tokens");
        goto done;
    }
    if ((int64_t)r.n_prompt >= n_ctx) {
        rc = cli_fail("run: the prompt has %zu tokens; the context holds %d", r.n_prompt, n_ctx);
        goto done;
    }
    if (mica_sampler_new(&r.s, o.g.sp, mica_model_n_vocab(r.m), &err)) goto fail_err;
    if (cli_gen_grammar(&o.g, r.m, &r.g)) goto done;
    if (o.echo) fputs(o.prompt, stdout);
    double t0 = core_now();
    int n_gen = 0;
    if (run_generate(&r, &o, n_ctx, &n_gen, &err)) goto fail_err;
    double dt = core_now() - t0;
    fprintf(stderr, "\nmica: %zu prompt tokens, %d generated in %.2f s (%.1f tokens/s)\n",
            r.n_prompt, n_gen, dt, dt > 0 ? (double)(r.n_prompt + (size_t)n_gen) / dt : 0.0);
    if (o.stats) print_routing_stats(r.c, r.m);
    rc = 0;
    goto done;
fail_err:
    rc = cli_fail_err(&err);
done:
    mica_sampler_free(r.s);
    mica_grammar_free(r.g);
    free(text);
    free(r.prompt);
    free(r.logits);
    cli_gen_close(&o.g, r.m, r.c);
    return rc;
}
