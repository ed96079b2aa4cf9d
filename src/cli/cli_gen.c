/*
 * cli_gen.c - what every generating command (mica run, mica chat) takes: the model, context
 * size, threads, sampling, LoRA adapters and a grammar (--grammar GBNF or --json-schema),
 * parsed in one place and turned into the engine's objects in one place.
 */
#include "cli.h"
#include "core/core.h"
#ifdef MICA_HAVE_SERVER
#include "grammar/schema_json.h"
#endif

#include <stdlib.h>

int cli_gen_opt(cli_args *a, cli_gen_opts *o, bool *handled)
{
    if (cli_sampling_opt(a, &o->sp, handled) || *handled) return *handled ? 0 : 1;
    if (cli_lora_opt(a, &o->loras, handled) || *handled) return *handled ? 0 : 1;
    *handled = true;
    if (cli_is(a, "-m", "--model")) {
        if (!(o->model = cli_value(a))) return 1;
    } else if (cli_is(a, "-c", "--ctx")) {
        if (!cli_int(a, 16, 1L << 24, &o->n_ctx)) return 1;
    } else if (cli_is(a, "-t", "--threads")) {
        if (!cli_int(a, 1, 1024, &o->n_threads)) return 1;
    } else if (cli_is(a, NULL, "--grammar")) {
        if (!(o->grammar_file = cli_value(a))) return 1;
    } else if (cli_is(a, NULL, "--json-schema")) {
        if (!(o->schema_file = cli_value(a))) return 1;
    } else {
        *handled = false;
    }
    return 0;
}

int cli_gen_check(cli_gen_opts *o, const char *cmd)
{
    if (cli_need_default_model(cmd, &o->model)) return 1;
    if (o->grammar_file && o->schema_file)
        return cli_fail("%s: --grammar and --json-schema exclude each other", cmd);
    return 0;
}

int cli_gen_open(cli_gen_opts *o, int32_t n_ctx_cap, mica_model **m, mica_context **c)
{
    mica_err err;
    if (mica_model_load(m, o->model, &err)) return cli_fail_err(&err);
    int32_t n_ctx = mica_model_n_ctx_train(*m);
    if (n_ctx_cap && (n_ctx <= 0 || n_ctx > n_ctx_cap)) n_ctx = n_ctx_cap;
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = o->n_ctx ? (int32_t)o->n_ctx : n_ctx;
    cp.n_threads = (int32_t)o->n_threads;
    if (mica_context_new(c, *m, cp, &err)) return cli_fail_err(&err);
    if (cli_lora_attach(&o->loras, *m, *c)) return 1;
    return cli_gen_grammar_text(o, &o->gbnf);
}

void cli_gen_close(cli_gen_opts *o, mica_model *m, mica_context *c)
{
    mica_context_free(c);
    cli_loras_free(&o->loras);
    mica_model_free(m);
    core_buf_free(&o->gbnf);
}

int cli_gen_grammar_text(const cli_gen_opts *o, core_buf *out)
{
    const char *path = o->grammar_file ? o->grammar_file : o->schema_file;
    core_buf_init(out, 64u << 20);
    if (!path) return 0;
    char *text = NULL;
    size_t len = 0;
    mica_err err;
    int rc = 0;
    if (core_read_file(path, 16u << 20, &text, &len, &err)) {
        rc = cli_fail_err(&err);
    } else if (o->schema_file) {
#ifdef MICA_HAVE_SERVER
        if (gram_schema_gbnf_text(text, len, out, &err)) rc = cli_fail("%s: %s", path, err.msg);
#else
        rc = cli_fail("%s: --json-schema needs a build with Jansson", path);
#endif
    } else if (!core_buf_append(out, text, len)) {
        rc = cli_fail("%s: too large", path);
    }
    free(text);
    return rc;
}

int cli_gen_grammar(const cli_gen_opts *o, mica_model *m, mica_grammar **out)
{
    *out = NULL;
    if (!o->gbnf.len) return 0;
    mica_err err;
    if (mica_grammar_new(out, m, o->gbnf.data, o->gbnf.len, &err))
        return cli_fail("%s: %s", o->grammar_file ? o->grammar_file : o->schema_file, err.msg);
    return 0;
}
