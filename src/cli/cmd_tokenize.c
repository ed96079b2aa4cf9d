/*
 * cmd_tokenize.c - `mica tokenize`: text (from -p or a file's exact bytes) to token ids,
 * printed one per line with their pieces, or on one line with --ids.
 */
#include "cli.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char tokenize_help[] =
    "usage: mica tokenize -m MODEL (-p TEXT | -f FILE) [--ids] [--no-bos] [--special]\n"
    "\n"
    "  -m, --model FILE   GGUF model whose vocabulary to use\n"
    "  -p, --prompt TEXT  text to tokenize\n"
    "  -f, --file FILE    tokenize this file's bytes as they are\n"
    "      --ids          print only the ids, on one line separated by single spaces\n"
    "      --no-bos       do not add BOS/EOS (by default they are added as the model's\n"
    "                     metadata says)\n"
    "      --special      parse special-token text such as <s> into special tokens\n";

#define TOKENIZE_MAX_FILE (256u << 20)

typedef struct tokenize_opts {
    const char *model, *prompt, *file;
    bool ids_only, no_bos, special;
} tokenize_opts;

static int tokenize_parse(int argc, char **argv, tokenize_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        if (cli_is(&a, "-m", "--model")) {
            if (!(o->model = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-p", "--prompt")) {
            if (!(o->prompt = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-f", "--file")) {
            if (!(o->file = cli_value(&a))) return 1;
        } else if (cli_is(&a, NULL, "--ids")) {
            o->ids_only = true;
        } else if (cli_is(&a, NULL, "--no-bos")) {
            o->no_bos = true;
        } else if (cli_is(&a, NULL, "--special")) {
            o->special = true;
        } else {
            return cli_unknown(&a);
        }
    }
    if (!o->model) return cli_fail("tokenize: -m MODEL is required");
    if (!o->prompt == !o->file) return cli_fail("tokenize: give exactly one of -p TEXT or -f FILE");
    return 0;
}

static void print_tokens(const mica_model *m, const mica_token *ids, size_t n, bool ids_only)
{
    char piece[256];
    for (size_t i = 0; i < n; i++) {
        if (ids_only) {
            printf("%s%d", i ? " " : "", ids[i]);
            continue;
        }
        size_t len = mica_token_to_piece(m, ids[i], true, piece, sizeof piece);
        if (len > sizeof piece) len = sizeof piece;
        printf("%6d -> '%.*s'\n", ids[i], (int)len, piece);
    }
    if (ids_only) printf("\n");
}

int cmd_tokenize(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(tokenize_help, stdout);
        return 0;
    }
    tokenize_opts o = {0};
    if (tokenize_parse(argc, argv, &o)) return 1;
    mica_err err;
    char *text = NULL;
    size_t len = 0;
    mica_model *m = NULL;
    mica_token *ids = NULL;
    int rc = 1;
    if (o.file) {
        if (core_read_file(o.file, TOKENIZE_MAX_FILE, &text, &len, &err)) goto fail_err;
    } else {
        len = strlen(o.prompt);
    }
    if (mica_model_load(&m, o.model, &err)) goto fail_err;
    size_t cap = 3 * len + 16, n = 0; /* mica_tokenize's most */
    ids = malloc(cap * sizeof *ids);
    if (!ids) {
        rc = cli_fail("tokenize: out of memory");
        goto done;
    }
    if (mica_tokenize(m, text ? text : o.prompt, len, !o.no_bos, o.special, ids, cap, &n, &err))
        goto fail_err;
    print_tokens(m, ids, n, o.ids_only);
    rc = 0;
    goto done;
fail_err:
    rc = cli_fail_err(&err);
done:
    free(ids);
    free(text);
    mica_model_free(m);
    return rc;
}
