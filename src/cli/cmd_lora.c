/*
 * cmd_lora.c - LoRA adapters on the command line: `mica lora merge BASE ADAPTER[:SCALE]...
 * -o MERGED.gguf`, and the `--lora FILE[:SCALE]` option that the evaluating commands (run,
 * logits) share: parsing it, loading the adapters against the model and applying them to
 * every sequence of the context. The work is the library's (src/model/lora*.c).
 */
#include "cli.h"
#include "model/lora.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- --lora FILE[:SCALE] ------------------------------------------------------------- */

/* Splits "FILE:SCALE" at its last ':' when what follows is a number (so a path with a colon
 * and no scale still works); the path is copied into *path. */
static bool lora_spec(const char *spec, char **path, float *scale)
{
    const char *colon = strrchr(spec, ':');
    size_t len = strlen(spec);
    *scale = 1.0f;
    if (colon && colon[1]) {
        char *end;
        errno = 0;
        const double v = strtod(colon + 1, &end);
        if (!*end && !errno && v > -1e6 && v < 1e6) {
            *scale = (float)v;
            len = (size_t)(colon - spec);
        }
    }
    *path = len ? malloc(len + 1) : NULL;
    if (!*path) return false;
    memcpy(*path, spec, len);
    (*path)[len] = '\0';
    return true;
}

int cli_lora_opt(cli_args *a, cli_loras *l, bool *handled)
{
    *handled = cli_is(a, NULL, "--lora");
    if (!*handled) return 0;
    const char *v = cli_value(a);
    if (!v) return 1;
    if (l->n == CLI_MAX_LORAS)
        return cli_fail("%s --lora: at most %d adapters", a->argv[0], CLI_MAX_LORAS);
    if (!lora_spec(v, &l->path[l->n], &l->scale[l->n]))
        return cli_fail("%s --lora: '%s' is not FILE[:SCALE]", a->argv[0], v);
    l->n++;
    return 0;
}

int cli_lora_load(cli_loras *l, mica_model *m)
{
    mica_err err;
    for (int i = 0; i < l->n; i++)
        if (mica_lora_load(&l->lora[i], m, l->path[i], &err)) return cli_fail_err(&err);
    return 0;
}

int cli_lora_attach(cli_loras *l, mica_model *m, mica_context *c)
{
    mica_err err;
    if (cli_lora_load(l, m)) return 1;
    if (l->n && mica_context_set_loras(c, -1, l->lora, l->scale, l->n, &err))
        return cli_fail_err(&err);
    return 0;
}

void cli_loras_free(cli_loras *l)
{
    for (int i = 0; i < l->n; i++) {
        mica_lora_free(l->lora[i]);
        free(l->path[i]);
        l->lora[i] = NULL;
        l->path[i] = NULL;
    }
    l->n = 0;
}

/* ---- mica lora merge ----------------------------------------------------------------- */

static const char lora_help[] =
    "usage: mica lora merge BASE.gguf ADAPTER.gguf[:SCALE]... -o MERGED.gguf [-t THREADS]\n"
    "\n"
    "Merges LoRA adapters (llama.cpp's GGUF adapter format) into a model: every adapted\n"
    "weight becomes W + SCALE * alpha/rank * B A, in the base's own tensor type (quantized\n"
    "weights are dequantized, merged and quantized again). Keys and other tensors are copied.\n"
    "\n"
    "  -o, --output FILE    the merged model (written to FILE.tmp, then renamed)\n"
    "  -t, --threads N      threads (default: all CPUs)\n"
    "\n"
    "SCALE defaults to 1. The same adapters apply at run time without merging:\n"
    "  mica run -m BASE.gguf --lora ADAPTER.gguf[:SCALE] ...\n";

typedef struct merge_opts {
    const char *base, *out;
    cli_loras loras;
    long n_threads;
} merge_opts;

static int merge_parse(int argc, char **argv, merge_opts *o)
{
    cli_args a = {argc, argv, 0}; /* argv[0] is "lora", argv[1] "merge" */
    for (a.i = 2; a.i < argc; a.i++) {
        if (cli_is(&a, "-o", "--output")) {
            if (!(o->out = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-t", "--threads")) {
            if (!cli_int(&a, 1, 1024, &o->n_threads)) return 1;
        } else if (argv[a.i][0] == '-') {
            return cli_unknown(&a);
        } else if (!o->base) {
            o->base = argv[a.i];
        } else {
            cli_loras *l = &o->loras;
            if (l->n == CLI_MAX_LORAS)
                return cli_fail("lora merge: at most %d adapters", CLI_MAX_LORAS);
            if (!lora_spec(argv[a.i], &l->path[l->n], &l->scale[l->n]))
                return cli_fail("lora merge: '%s' is not ADAPTER[:SCALE]", argv[a.i]);
            l->n++;
        }
    }
    if (!o->base || !o->loras.n || !o->out)
        return cli_fail("lora merge: BASE, at least one ADAPTER and -o MERGED are required");
    return 0;
}

static int lora_merge_cmd(int argc, char **argv)
{
    merge_opts o = {0};
    int rc = merge_parse(argc, argv, &o);
    mica_err err;
    if (!rc && lora_merge_file(o.base, (const char *const *)o.loras.path, o.loras.scale, o.loras.n,
                               o.out, (int)o.n_threads, &err))
        rc = cli_fail_err(&err);
    if (!rc) fprintf(stderr, "mica: merged %d adapter(s) into %s\n", o.loras.n, o.out);
    cli_loras_free(&o.loras);
    return rc;
}

int cmd_lora(int argc, char **argv)
{
    if (argc < 2 || cli_wants_help(argc, argv)) {
        fputs(lora_help, argc < 2 ? stderr : stdout);
        return argc < 2;
    }
    if (!strcmp(argv[1], "merge")) return lora_merge_cmd(argc, argv);
    return cli_fail("lora: unknown subcommand '%s' (see mica lora --help)", argv[1]);
}
