/*
 * cmd_chat.c - `mica chat`: an interactive conversation on the terminal (or over a pipe). Each
 * line read is a user message; the whole conversation is rendered with the model's chat
 * format (its Jinja template, or a built-in one: src/template's tmpl_chat), and only the part
 * of the prompt that is not already in the KV cache is evaluated, so a long conversation costs
 * one prompt pass per turn, not one per message. /reset forgets the conversation, /exit (or
 * end of input) quits.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "core/core.h"
#include "template/template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char chat_help[] =
    "usage: mica chat [-m MODEL] [options]\n"
    "\n"
    "Talks with the model: each line on standard input is a user message, the answer is\n"
    "streamed to stdout. The conversation is formatted with the model's chat template (or a\n"
    "built-in ChatML / Llama-3 / Llama-2 format when it has none).\n"
    "\n"
    "  -m, --model FILE        GGUF model (default: the embedded mica-sensor-moe)\n"
    "      --system TEXT       a system message at the start of the conversation\n"
    "  -n, --n-predict N       at most N tokens per answer (default 512)\n" CLI_GEN_HELP
    "  -c, --ctx N             context size in tokens (default: the model's, at most 4096)\n"
    "  -t, --threads N         threads (default: all CPUs)\n"
    "\n"
    "Commands: /reset forgets the conversation; /exit quits (so does the end of input).\n";

#define CHAT_MAX_TURNS 4096
#define CHAT_LINE_MAX  (1 << 20)

typedef struct chat_opts {
    const char *system;
    long n_predict;
    cli_gen_opts g;
} chat_opts;

typedef struct chat_turn {
    const char *role; /* "system", "user", "assistant" */
    char *text;
} chat_turn;

typedef struct chat_state {
    mica_model *m;
    mica_context *c;
    mica_sampler *s;
    tmpl_chat *fmt;
    int32_t n_ctx;
    chat_turn turns[CHAT_MAX_TURNS];
    int n_turns;
    mica_token *cached; /* the tokens in the KV cache of sequence 0, n_ctx of them at most */
    int32_t n_cached;
    mica_token *prompt;
    float *logits;
} chat_state;

static int chat_parse(int argc, char **argv, chat_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        bool handled;
        if (cli_gen_opt(&a, &o->g, &handled)) return 1;
        if (handled) continue;
        if (cli_is(&a, NULL, "--system")) {
            if (!(o->system = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-n", "--n-predict")) {
            if (!cli_int(&a, 1, 1L << 30, &o->n_predict)) return 1;
        } else {
            return cli_unknown(&a);
        }
    }
    return cli_gen_check(&o->g, "chat");
}

static bool add_turn(chat_state *st, const char *role, const char *text, size_t len)
{
    if (st->n_turns == CHAT_MAX_TURNS) return false;
    char *copy = malloc(len + 1);
    if (!copy) return false;
    memcpy(copy, text, len);
    copy[len] = '\0';
    st->turns[st->n_turns++] = (chat_turn){role, copy};
    return true;
}

static void drop_turns(chat_state *st, int keep)
{
    while (st->n_turns > keep) free(st->turns[--st->n_turns].text);
}

/* The conversation as template values: [{"role": ..., "content": ...}, ...]. */
static mica_status conversation(const chat_state *st, tmpl_value **out, mica_err *err)
{
    tmpl_value *list = tmpl_list();
    if (!list) return core_fail(err, MICA_ENOMEM, "out of memory");
    for (int i = 0; i < st->n_turns; i++) {
        tmpl_value *msg = tmpl_dict();
        mica_status s = tmpl_dict_set(msg, "role", 4, tmpl_cstr(st->turns[i].role), err);
        if (!s) s = tmpl_dict_set(msg, "content", 7, tmpl_cstr(st->turns[i].text), err);
        if (!s)
            s = tmpl_list_push(list, msg, err);
        else
            tmpl_value_free(msg);
        if (s) {
            tmpl_value_free(list);
            return s;
        }
    }
    *out = list;
    return MICA_OK;
}

/* Renders and tokenizes the conversation with the generation prompt into st->prompt. */
static mica_status render_prompt(chat_state *st, int32_t *n, mica_err *err)
{
    tmpl_value *msgs = NULL;
    mica_status s = conversation(st, &msgs, err);
    if (s) return s;
    char *text = NULL;
    size_t len = 0;
    s = tmpl_chat_render(st->fmt, msgs, NULL, true, &text, &len, err);
    tmpl_value_free(msgs);
    size_t n_tok = 0;
    if (!s)
        s = mica_tokenize(st->m, text, len, !tmpl_chat_has_bos(st->fmt, text, len), true,
                          st->prompt, (size_t)st->n_ctx, &n_tok, err);
    free(text);
    if (!s && (int64_t)n_tok >= st->n_ctx)
        s = core_fail(err, MICA_ERANGE,
                      "the conversation has %zu tokens; the context holds %d (use /reset)", n_tok,
                      st->n_ctx);
    *n = (int32_t)n_tok;
    return s;
}

/* Evaluates the prompt, reusing the cached prefix (at least one token is evaluated, for its
 * logits). */
static mica_status feed_prompt(chat_state *st, int32_t n, mica_err *err)
{
    int32_t same = 0;
    while (same < n - 1 && same < st->n_cached && st->cached[same] == st->prompt[same]) same++;
    mica_seq_truncate(st->c, 0, same);
    const mica_status s =
        mica_decode(st->c, 0, st->prompt + same, n - same, same, false, st->logits, err);
    if (s) return s;
    memcpy(st->cached, st->prompt, (size_t)n * sizeof *st->cached);
    st->n_cached = n;
    return MICA_OK;
}

/* Samples the answer, streams it, and appends it to the conversation. */
static mica_status answer(chat_state *st, const chat_opts *o, mica_err *err)
{
    mica_grammar *g = NULL; /* a fresh one each answer: --grammar / --json-schema */
    mica_status s =
        o->g.gbnf.len ? mica_grammar_new(&g, st->m, o->g.gbnf.data, o->g.gbnf.len, err) : MICA_OK;
    core_buf text;
    core_buf_init(&text, 64u << 20);
    for (long i = 0; i < o->n_predict && !s; i++) {
        if (g && (s = mica_grammar_apply(g, st->logits, err))) break;
        const mica_token t = mica_sampler_sample(st->s, st->logits);
        if (mica_model_is_eog(st->m, t)) break;
        if (g && (s = mica_grammar_accept(g, t, err))) break;
        mica_sampler_accept(st->s, t);
        char piece[256];
        const size_t len = mica_token_to_piece(st->m, t, false, piece, sizeof piece);
        fwrite(piece, 1, len < sizeof piece ? len : sizeof piece, stdout);
        fflush(stdout);
        core_buf_append(&text, piece, len < sizeof piece ? len : sizeof piece);
        if (st->n_cached + 1 >= st->n_ctx) break;
        if ((s = mica_decode(st->c, 0, &t, 1, st->n_cached, false, st->logits, err))) break;
        st->cached[st->n_cached++] = t;
        if (g && mica_grammar_done(g)) break; /* a complete document */
    }
    fputc('\n', stdout);
    fflush(stdout);
    if (!s && !add_turn(st, "assistant", text.data ? text.data : "", text.len))
        s = core_fail(err, MICA_ENOMEM, "the conversation is too long");
    core_buf_free(&text);
    mica_grammar_free(g);
    return s;
}

static void reset(chat_state *st, const chat_opts *o)
{
    drop_turns(st, o->system ? 1 : 0);
    mica_seq_truncate(st->c, 0, 0);
    st->n_cached = 0;
}

/* One user line: a command, or a message to answer. Returns non-zero to stop. */
static int turn(chat_state *st, const chat_opts *o, const char *line, size_t len)
{
    if (!strcmp(line, "/exit")) return -1;
    if (!strcmp(line, "/reset")) {
        reset(st, o);
        fputs("(the conversation is reset)\n", stderr);
        return 0;
    }
    if (len == 0) return 0;
    const int before = st->n_turns;
    if (!add_turn(st, "user", line, len)) return cli_fail("chat: the conversation is too long");
    mica_err err;
    int32_t n;
    if (render_prompt(st, &n, &err) || feed_prompt(st, n, &err) || answer(st, o, &err)) {
        drop_turns(st, before); /* the failed turn is forgotten */
        fprintf(stderr, "mica: chat: %s\n", err.msg);
    }
    return 0;
}

/* Loads everything; 1 after printing an error. */
static int chat_open(chat_state *st, chat_opts *o)
{
    if (cli_gen_open(&o->g, 4096, &st->m, &st->c)) return 1;
    st->n_ctx = mica_context_n_ctx(st->c);
    mica_err err;
    if (mica_sampler_new(&st->s, o->g.sp, mica_model_n_vocab(st->m), &err) ||
        tmpl_chat_new(&st->fmt, st->m, o->g.model, &err))
        return cli_fail_err(&err);
    if (tmpl_chat_warning(st->fmt))
        fprintf(stderr, "mica: %s; using the built-in %s format\n", tmpl_chat_warning(st->fmt),
                tmpl_chat_format(st->fmt));
    st->cached = malloc((size_t)st->n_ctx * sizeof *st->cached);
    st->prompt = malloc((size_t)st->n_ctx * sizeof *st->prompt);
    st->logits = malloc((size_t)mica_model_n_vocab(st->m) * sizeof *st->logits);
    if (!st->cached || !st->prompt || !st->logits ||
        (o->system && !add_turn(st, "system", o->system, strlen(o->system))))
        return cli_fail("chat: out of memory");
    return 0;
}

static void chat_close(chat_state *st, chat_opts *o)
{
    drop_turns(st, 0);
    tmpl_chat_free(st->fmt);
    mica_sampler_free(st->s);
    cli_gen_close(&o->g, st->m, st->c);
    free(st->cached);
    free(st->prompt);
    free(st->logits);
}

int cmd_chat(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(chat_help, stdout);
        return 0;
    }
    chat_opts o = {.n_predict = 512, .g = {.sp = mica_sampler_default_params()}};
    if (chat_parse(argc, argv, &o)) {
        cli_loras_free(&o.g.loras);
        return 1;
    }
    chat_state *st = core_calloc(1, sizeof *st);
    if (!st) return cli_fail("chat: out of memory");
    int rc = 0;
    if (chat_open(st, &o)) {
        rc = 1;
    } else {
        const bool tty = isatty(0);
        char *line = NULL;
        size_t cap = 0;
        for (;;) {
            if (tty) fputs("> ", stderr);
            ssize_t n = getline(&line, &cap, stdin);
            if (n < 0) break;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
            if (n > CHAT_LINE_MAX) {
                fprintf(stderr, "mica: chat: a line longer than %d bytes is ignored\n",
                        CHAT_LINE_MAX);
                continue;
            }
            if (turn(st, &o, line, (size_t)n)) break;
        }
        free(line);
    }
    chat_close(st, &o);
    free(st);
    return rc;
}
