/*
 * cmd_logits.c - `mica logits`: evaluates a token sequence and writes float32 little-endian
 * logits, one row of n_vocab per position (the layout of llama.cpp reference .bin files),
 * from one batched pass or, with --incremental, one token at a time through the KV cache.
 * The file is written to OUT.tmp and renamed, so an error leaves no partial output.
 */
#include "cli.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char logits_help[] =
    "usage: mica logits -m MODEL --tokens 1,2,3 -o OUT.bin [--incremental] [-t N] [--lora F]\n"
    "\n"
    "  -m, --model FILE     GGUF model\n"
    "      --tokens LIST    comma-separated token ids (no BOS is added)\n"
    "  -o, --output FILE    where to write n_tokens x n_vocab float32 little-endian logits\n"
    "      --incremental    decode one token at a time instead of one batched pass\n"
    "  -t, --threads N      threads (default: all CPUs)\n" CLI_LORA_HELP;

#define LOGITS_MAX_TOKENS 65536

typedef struct logits_opts {
    const char *model, *tokens, *out;
    bool incremental;
    long n_threads;
    cli_loras loras;
} logits_opts;

static int logits_parse(int argc, char **argv, logits_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        bool handled;
        if (cli_lora_opt(&a, &o->loras, &handled)) return 1;
        if (handled) continue;
        if (cli_is(&a, "-m", "--model")) {
            if (!(o->model = cli_value(&a))) return 1;
        } else if (cli_is(&a, NULL, "--tokens")) {
            if (!(o->tokens = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-o", "--output")) {
            if (!(o->out = cli_value(&a))) return 1;
        } else if (cli_is(&a, NULL, "--incremental")) {
            o->incremental = true;
        } else if (cli_is(&a, "-t", "--threads")) {
            if (!cli_int(&a, 1, 1024, &o->n_threads)) return 1;
        } else {
            return cli_unknown(&a);
        }
    }
    if (!o->model || !o->tokens || !o->out)
        return cli_fail("logits: -m MODEL, --tokens LIST and -o OUT are required");
    return 0;
}

/* Parses "1,2,3" into ids; every id must be within [0, n_vocab). */
static int parse_tokens(const char *s, int32_t n_vocab, mica_token *ids, int32_t *n)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= n_vocab)
            return cli_fail("logits: --tokens: '%s': token %d is not an id in [0, %d)", s, *n + 1,
                            n_vocab);
        if (*n >= LOGITS_MAX_TOKENS)
            return cli_fail("logits: --tokens: more than %d tokens", LOGITS_MAX_TOKENS);
        ids[(*n)++] = (mica_token)v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return cli_fail("logits: --tokens: '%s': expected ',' after token %d", s, *n);
    }
    if (!*n) return cli_fail("logits: --tokens: no tokens given");
    return 0;
}

static mica_status evaluate(mica_context *c, const mica_token *ids, int32_t n, bool incremental,
                            int32_t n_vocab, float *logits, mica_err *err)
{
    if (!incremental) return mica_decode(c, 0, ids, n, 0, true, logits, err);
    for (int32_t i = 0; i < n; i++) {
        mica_status st = mica_decode(c, 0, &ids[i], 1, i, false, logits + (size_t)i * n_vocab, err);
        if (st) return st;
    }
    return MICA_OK;
}

static int write_rows(const char *path, const float *logits, size_t n)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return cli_fail("%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return cli_fail("%s: %s", tmp, strerror(errno));
    /* The format is little-endian float32; this is what x86 and ARM Linux store natively. */
    bool ok = fwrite(logits, sizeof *logits, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return cli_fail("%s: %s", path, strerror(e));
    }
    return 0;
}

int cmd_logits(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(logits_help, stdout);
        return 0;
    }
    logits_opts o = {0};
    if (logits_parse(argc, argv, &o)) {
        cli_loras_free(&o.loras);
        return 1;
    }
    mica_err err;
    mica_model *m = NULL;
    mica_context *c = NULL;
    mica_token *ids = malloc(LOGITS_MAX_TOKENS * sizeof *ids);
    float *logits = NULL;
    int32_t n = 0;
    int rc = 1;
    if (!ids) {
        cli_loras_free(&o.loras);
        return cli_fail("logits: out of memory");
    }
    if (mica_model_load(&m, o.model, &err)) goto fail_err;
    const int32_t n_vocab = mica_model_n_vocab(m);
    if ((rc = parse_tokens(o.tokens, n_vocab, ids, &n))) goto done;
    rc = 1;
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = n;
    cp.n_threads = (int32_t)o.n_threads;
    if (mica_context_new(&c, m, cp, &err)) goto fail_err;
    if (cli_lora_attach(&o.loras, m, c)) goto done;
    logits = malloc((size_t)n * (size_t)n_vocab * sizeof *logits);
    if (!logits) {
        rc = cli_fail("logits: out of memory for %d x %d logits", n, n_vocab);
        goto done;
    }
    if (evaluate(c, ids, n, o.incremental, n_vocab, logits, &err)) goto fail_err;
    rc = write_rows(o.out, logits, (size_t)n * (size_t)n_vocab);
    goto done;
fail_err:
    rc = cli_fail_err(&err);
done:
    free(logits);
    free(ids);
    mica_context_free(c);
    cli_loras_free(&o.loras);
    mica_model_free(m);
    return rc;
}
