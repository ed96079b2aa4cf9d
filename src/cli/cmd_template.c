/*
 * cmd_template.c - `mica template`: renders a chat template (a .jinja file, or a model's
 * tokenizer.chat_template with its BOS/EOS token texts) over a conversation given as JSON and
 * prints the exact bytes, as transformers' apply_chat_template would produce them. Reads the
 * files and converts JSON with Jansson (tmpl_json.h); the rendering is src/template/'s.
 */
#include "cli.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "template/template.h"
#include "template/tmpl_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char template_help[] =
    "usage: mica template (-m MODEL | --template FILE) --messages FILE.json [--tools FILE.json]\n"
    "                     [--add-generation-prompt] [--bos S] [--eos S] [--var NAME=JSON ...]\n"
    "                     [--now 'YYYY-MM-DD HH:MM:SS']\n"
    "\n"
    "Renders a chat template the way Hugging Face transformers' apply_chat_template does\n"
    "(Python jinja2) and prints the result's exact bytes (no newline added).\n"
    "\n"
    "  -m, --model FILE           GGUF model: its tokenizer.chat_template, and its BOS / EOS\n"
    "                             token texts as bos_token / eos_token\n"
    "      --template FILE        a Jinja chat template file\n"
    "      --messages FILE.json   the conversation: a JSON array of OpenAI messages, or an\n"
    "                             object with \"messages\" (and then its \"tools\", if any)\n"
    "      --tools FILE.json      a JSON array of tools (default: tools is None)\n"
    "      --add-generation-prompt  end with the assistant's turn header\n"
    "      --bos S, --eos S       bos_token / eos_token (default: the model's, else undefined)\n"
    "      --var NAME=JSON        one more template variable, e.g. enable_thinking=false\n"
    "                             (repeatable; the value is JSON)\n"
    "      --now 'YYYY-MM-DD HH:MM:SS'  the time strftime_now() formats (default: now)\n";

#define MAX_VARS 64
#define MAX_FILE (64u << 20)

typedef struct template_opts {
    const char *model, *template_file, *messages, *tools, *bos, *eos, *now;
    const char *vars[MAX_VARS];
    int n_vars;
    bool gen_prompt;
} template_opts;

static int template_parse(int argc, char **argv, template_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        const char **slot = NULL;
        if (cli_is(&a, "-m", "--model"))
            slot = &o->model;
        else if (cli_is(&a, NULL, "--template"))
            slot = &o->template_file;
        else if (cli_is(&a, NULL, "--messages"))
            slot = &o->messages;
        else if (cli_is(&a, NULL, "--tools"))
            slot = &o->tools;
        else if (cli_is(&a, NULL, "--bos"))
            slot = &o->bos;
        else if (cli_is(&a, NULL, "--eos"))
            slot = &o->eos;
        else if (cli_is(&a, NULL, "--now"))
            slot = &o->now;
        else if (cli_is(&a, NULL, "--add-generation-prompt"))
            o->gen_prompt = true;
        else if (cli_is(&a, NULL, "--var")) {
            if (o->n_vars == MAX_VARS) return cli_fail("template: more than %d --var", MAX_VARS);
            if (!(o->vars[o->n_vars++] = cli_value(&a))) return 1;
        } else
            return cli_unknown(&a);
        if (slot && !(*slot = cli_value(&a))) return 1;
    }
    if (!o->model == !o->template_file)
        return cli_fail("template: give exactly one of -m MODEL or --template FILE");
    if (!o->messages) return cli_fail("template: --messages FILE.json is required");
    return 0;
}

/* ---- inputs ------------------------------------------------------------------------------ */

/* The text of token id key_id (tokenizer.ggml.bos_token_id / eos_token_id), or NULL. */
static char *token_text(const gguf_file *f, const char *key_id)
{
    int64_t id = -1;
    const gguf_kv *tokens;
    mica_err err;
    if (gguf_get_int_opt(f, key_id, &id, &err) || id < 0 ||
        gguf_get_arr(f, "tokenizer.ggml.tokens", &tokens, &err) || (uint64_t)id >= tokens->arr_n)
        return NULL;
    gguf_str s = gguf_arr_str(f, tokens, (uint64_t)id);
    char *t = malloc(s.len + 1);
    if (t) {
        memcpy(t, s.ptr, s.len);
        t[s.len] = '\0';
    }
    return t;
}

typedef struct template_src {
    char *text, *name, *bos, *eos;
    size_t len;
} template_src;

static mica_status load_model_template(const char *path, template_src *t, mica_err *err)
{
    gguf_file *f;
    mica_status st = gguf_open(&f, path, err);
    if (st) return st;
    gguf_str s = {0};
    st = gguf_get_str_opt(f, "tokenizer.chat_template", &s, err);
    if (!st && !s.ptr)
        st = core_fail(err, MICA_EFORMAT, "%s: the model has no tokenizer.chat_template", path);
    if (!st) {
        t->text = malloc(s.len + 1);
        t->name = malloc(strlen(path) + 32);
        if (!t->text || !t->name) {
            st = core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
        } else {
            memcpy(t->text, s.ptr, s.len);
            t->text[s.len] = '\0';
            t->len = s.len;
            sprintf(t->name, "%s:tokenizer.chat_template", path);
            t->bos = token_text(f, "tokenizer.ggml.bos_token_id");
            t->eos = token_text(f, "tokenizer.ggml.eos_token_id");
        }
    }
    gguf_close(f);
    return st;
}

static mica_status load_template(const template_opts *o, template_src *t, mica_err *err)
{
    if (o->model) return load_model_template(o->model, t, err);
    mica_status st = core_read_file(o->template_file, MAX_FILE, &t->text, &t->len, err);
    if (st) return st;
    t->name = malloc(strlen(o->template_file) + 1);
    if (!t->name) return core_fail(err, MICA_ENOMEM, "%s: out of memory", o->template_file);
    strcpy(t->name, o->template_file);
    return MICA_OK;
}

static mica_status load_json_file(const char *path, tmpl_value **out, mica_err *err)
{
    char *text;
    size_t len;
    mica_status st = core_read_file(path, MAX_FILE, &text, &len, err);
    if (st) return st;
    st = tmpl_from_json_text(text, len, out, path, err);
    free(text);
    return st;
}

typedef struct template_vars {
    tmpl_value *messages, *tools, *values[MAX_VARS];
    tmpl_var vars[MAX_VARS];
    char names[MAX_VARS][128];
    int n;
} template_vars;

/* A JSON array of messages, or an object with "messages" (and maybe "tools"). */
static mica_status load_messages(const template_opts *o, template_vars *v, mica_err *err)
{
    tmpl_value *doc;
    mica_status st = load_json_file(o->messages, &doc, err);
    if (st) return st;
    if (tmpl_value_kind(doc) == TMPL_LIST) {
        v->messages = doc;
        return MICA_OK;
    }
    tmpl_value *m = tmpl_dict_get(doc, "messages"), *tools = tmpl_dict_get(doc, "tools");
    if (m && tmpl_value_kind(m) == TMPL_LIST) {
        v->messages = tmpl_value_ref(m);
        if (tools && !o->tools) v->tools = tmpl_value_ref(tools);
    } else {
        st = core_fail(err, MICA_EFORMAT,
                       "%s: expected a JSON array of messages or an object with \"messages\"",
                       o->messages);
    }
    tmpl_value_free(doc);
    return st;
}

static mica_status parse_var(const char *arg, template_vars *v, mica_err *err)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : 0;
    if (!eq || n == 0 || n >= sizeof v->names[0])
        return core_fail(err, MICA_EINVAL, "--var %s: expected NAME=JSON", arg);
    memcpy(v->names[v->n], arg, n);
    v->names[v->n][n] = '\0';
    char what[160];
    snprintf(what, sizeof what, "--var %s", v->names[v->n]);
    mica_status st = tmpl_from_json_text(eq + 1, strlen(eq + 1), &v->values[v->n], what, err);
    if (st) return st;
    v->vars[v->n] = (tmpl_var){v->names[v->n], v->values[v->n]};
    v->n++;
    return MICA_OK;
}

static mica_status load_vars(const template_opts *o, template_vars *v, mica_err *err)
{
    mica_status st = load_messages(o, v, err);
    if (!st && o->tools) st = load_json_file(o->tools, &v->tools, err);
    if (!st && v->tools && tmpl_value_kind(v->tools) != TMPL_LIST &&
        tmpl_value_kind(v->tools) != TMPL_NONE)
        st = core_fail(err, MICA_EFORMAT, "%s: expected a JSON array of tools",
                       o->tools ? o->tools : o->messages);
    for (int i = 0; !st && i < o->n_vars; i++) st = parse_var(o->vars[i], v, err);
    return st;
}

static void free_vars(template_vars *v)
{
    tmpl_value_free(v->messages);
    tmpl_value_free(v->tools);
    for (int i = 0; i < v->n; i++) tmpl_value_free(v->values[i]);
}

/* ---- the command ------------------------------------------------------------------------- */

int cmd_template(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(template_help, stdout);
        return 0;
    }
    template_opts o = {0};
    if (template_parse(argc, argv, &o)) return 1;
    mica_err err;
    template_src src = {0};
    template_vars vars = {0};
    tmpl_template *t = NULL;
    char *out = NULL;
    size_t out_len = 0;
    mica_status st = load_template(&o, &src, &err);
    if (!st) st = tmpl_parse(&t, src.name, src.text, src.len, &err);
    if (!st) st = load_vars(&o, &vars, &err);
    if (!st) {
        tmpl_render_params p = {
            .messages = vars.messages,
            .tools = vars.tools && tmpl_value_kind(vars.tools) == TMPL_LIST ? vars.tools : NULL,
            .add_generation_prompt = o.gen_prompt,
            .bos_token = o.bos ? o.bos : src.bos,
            .eos_token = o.eos ? o.eos : src.eos,
            .vars = vars.vars,
            .n_vars = (size_t)vars.n,
            .now = o.now,
        };
        st = tmpl_render(t, &p, &out, &out_len, &err);
    }
    if (!st && (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout)))
        st = core_fail(&err, MICA_EIO, "stdout: write failed");
    free(out);
    free_vars(&vars);
    tmpl_free(t);
    free(src.text);
    free(src.name);
    free(src.bos);
    free(src.eos);
    return st ? cli_fail_err(&err) : 0;
}
