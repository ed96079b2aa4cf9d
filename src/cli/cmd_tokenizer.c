/*
 * cmd_tokenizer.c - `mica tokenizer train`: learns a byte-level BPE vocabulary (tok_train,
 * src/tokenizer/tok_train.c) from text files and JSON lines, and writes it as a GGUF that
 * holds only the tokenizer.* keys. A .jsonl file contributes each line's "prompt" and
 * "completion" strings, each followed by a line break; other files contribute their bytes.
 * The JSON reader here only decodes string values (no Jansson, so the command exists in
 * builds without the gateway's libraries).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "core/core.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char tokenizer_help[] =
    "usage: mica tokenizer train --vocab N [--pre NAME] -o VOCAB.gguf FILES...\n"
    "\n"
    "Trains a byte-level BPE vocabulary (GPT-2 style, llama.cpp's \"gpt2\" tokenizer) on the\n"
    "files: 256 byte symbols, the most frequent merges, and the control tokens\n"
    "<|endoftext|> (BOS/EOS), <|im_start|> and <|im_end|> (end of turn) of ChatML.\n"
    "A file ending in .jsonl contributes each line's \"prompt\" and \"completion\" strings\n"
    "(a line break after each); any other file is read as text. See docs/tokenizer-training.md.\n"
    "\n"
    "  --vocab N        vocabulary size, 259 .. 1048576 (256 + merges + 3 special tokens)\n"
    "  --pre NAME       llama.cpp pre-tokenizer that splits the text before merging, stored\n"
    "                   as tokenizer.ggml.pre (default qwen2: digits one by one, CJK runs)\n"
    "  -o FILE          output GGUF; written to FILE.tmp and renamed when complete\n";

#define TOKENIZER_MAX_CORPUS ((size_t)1 << 30)
#define TOKENIZER_MAX_FILES  4096
#define JSON_MAX_DEPTH       64

typedef struct tokenizer_opts {
    long n_vocab;
    const char *pre, *out;
    const char *files[TOKENIZER_MAX_FILES];
    int n_files;
} tokenizer_opts;

static int tokenizer_parse(int argc, char **argv, tokenizer_opts *o)
{
    if (argc < 2 || strcmp(argv[1], "train"))
        return cli_fail("tokenizer: unknown action '%s' (mica tokenizer train ...; see --help)",
                        argc < 2 ? "" : argv[1]);
    cli_args a = {argc, argv, 1};
    for (a.i = 2; a.i < argc; a.i++) {
        if (cli_is(&a, NULL, "--vocab")) {
            if (!cli_int(&a, 256 + TOK_TRAIN_N_SPECIAL, 1 << 20, &o->n_vocab)) return 1;
        } else if (cli_is(&a, NULL, "--pre")) {
            if (!(o->pre = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-o", "--output")) {
            if (!(o->out = cli_value(&a))) return 1;
        } else if (argv[a.i][0] == '-' && argv[a.i][1]) {
            return cli_unknown(&a);
        } else if (o->n_files == TOKENIZER_MAX_FILES) {
            return cli_fail("tokenizer: more than %d files", TOKENIZER_MAX_FILES);
        } else {
            o->files[o->n_files++] = argv[a.i];
        }
    }
    if (!o->n_vocab) return cli_fail("tokenizer: --vocab N is required");
    if (!o->out) return cli_fail("tokenizer: -o FILE is required");
    if (!o->n_files) return cli_fail("tokenizer: no input files");
    return 0;
}

/* ---- JSON lines ------------------------------------------------------------------------ */

typedef struct json_in {
    const char *p, *end;
} json_in;

static void json_ws(json_in *in)
{
    while (in->p < in->end && (*in->p == ' ' || *in->p == '\t' || *in->p == '\r' || *in->p == '\n'))
        in->p++;
}

static int json_hex4(json_in *in)
{
    if (in->end - in->p < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *in->p++;
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* \uXXXX (after the "\u"), a surrogate pair taking two escapes; appends its UTF-8. */
static const char *json_unicode(json_in *in, core_buf *out)
{
    int cp = json_hex4(in);
    if (cp < 0) return "bad \\u escape";
    if (cp >= 0xDC00 && cp <= 0xDFFF) return "unpaired surrogate in a \\u escape";
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        int lo = -1;
        if (in->end - in->p >= 2 && in->p[0] == '\\' && in->p[1] == 'u') {
            in->p += 2;
            lo = json_hex4(in);
        }
        if (lo < 0xDC00 || lo > 0xDFFF) return "unpaired surrogate in a \\u escape";
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    char utf8[4];
    int n = core_utf8_encode((uint32_t)cp, utf8);
    return out && !core_buf_append(out, utf8, (size_t)n) ? "out of memory" : NULL;
}

/* A string (at its opening quote); its decoded bytes go to out unless out is NULL. Returns
 * NULL or what is wrong. */
static const char *json_string(json_in *in, core_buf *out)
{
    static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
    if (in->p == in->end || *in->p != '"') return "expected a string";
    for (in->p++; in->p < in->end;) {
        char c = *in->p++, byte = c;
        if (c == '"') return NULL;
        if ((unsigned char)c < 0x20) return "control character in a string";
        if (c == '\\') {
            if (in->p == in->end) break;
            const char e = *in->p++;
            if (e == 'u') {
                const char *why = json_unicode(in, out);
                if (why) return why;
                continue;
            }
            const char *k = e ? strchr(esc_in, e) : NULL;
            if (!k) return "bad escape in a string";
            byte = esc_out[k - esc_in];
        }
        if (out && !core_buf_append(out, &byte, 1)) return "out of memory";
    }
    return "unterminated string";
}

static const char *json_value(json_in *in, int depth);

/* Called for each member of the top-level object with its decoded key; sets *taken when it
 * consumed the value itself. */
typedef const char *(*json_member_fn)(void *ctx, const core_buf *key, json_in *in, bool *taken);

/* An object or array (at its opening bracket). Values are skipped, except those that
 * `member` (for an object; may be NULL) takes. */
static const char *json_container(json_in *in, int depth, json_member_fn member, void *ctx)
{
    const char close = *in->p == '{' ? '}' : ']';
    if (depth > JSON_MAX_DEPTH) return "nested too deeply";
    core_buf key;
    core_buf_init(&key, 1 << 16);
    const char *why = NULL;
    in->p++;
    json_ws(in);
    bool more = !(in->p < in->end && *in->p == close);
    if (!more) in->p++;
    while (more && !why) {
        bool taken = false;
        json_ws(in);
        if (close == '}') {
            key.len = 0;
            if ((why = json_string(in, member ? &key : NULL))) break;
            json_ws(in);
            if (in->p == in->end || *in->p++ != ':') why = "expected ':'";
            json_ws(in);
            if (!why && member) why = member(ctx, &key, in, &taken);
        }
        if (!why && !taken) why = json_value(in, depth + 1);
        json_ws(in);
        if (why) break;
        if (in->p == in->end)
            why = "unterminated object or array";
        else if (*in->p == close)
            more = false, in->p++;
        else if (*in->p++ != ',')
            why = "expected ',' or a closing bracket";
    }
    core_buf_free(&key);
    return why;
}

/* Any value, skipped: numbers and literals are checked only for their characters. */
static const char *json_value(json_in *in, int depth)
{
    json_ws(in);
    if (in->p == in->end) return "expected a value";
    if (*in->p == '"') return json_string(in, NULL);
    if (*in->p == '{' || *in->p == '[') return json_container(in, depth, NULL, NULL);
    const char *start = in->p;
    while (in->p < in->end && *in->p && strchr("+-.0123456789eEtruefalsn", *in->p)) in->p++;
    return in->p == start ? "expected a value" : NULL;
}

/* The "prompt" and "completion" strings of one record. */
typedef struct jsonl_fields {
    core_buf text[2];
    bool has[2];
} jsonl_fields;

static const char *jsonl_member(void *ctx, const core_buf *key, json_in *in, bool *taken)
{
    static const char *const names[2] = {"prompt", "completion"};
    jsonl_fields *f = ctx;
    for (int i = 0; i < 2; i++) {
        if (key->len != strlen(names[i]) || memcmp(key->data, names[i], key->len)) continue;
        if (in->p == in->end || *in->p != '"')
            return "\"prompt\" and \"completion\" must be strings";
        *taken = f->has[i] = true;
        f->text[i].len = 0;
        return json_string(in, &f->text[i]);
    }
    return NULL;
}

/* Appends the record's prompt and completion, each with a line break, to corpus. */
static int jsonl_line(const char *path, long line_no, const char *s, size_t n, core_buf *corpus)
{
    jsonl_fields f = {0};
    core_buf_init(&f.text[0], TOKENIZER_MAX_CORPUS);
    core_buf_init(&f.text[1], TOKENIZER_MAX_CORPUS);
    json_in in = {s, s + n};
    json_ws(&in);
    const char *why = in.p < in.end && *in.p == '{' ? json_container(&in, 0, jsonl_member, &f)
                                                    : "expected a JSON object";
    json_ws(&in);
    if (!why && in.p != in.end) why = "text after the JSON object";
    if (!why && !f.has[0] && !f.has[1]) why = "no \"prompt\" or \"completion\" string";
    for (int i = 0; i < 2 && !why; i++)
        if (f.has[i] && (!core_buf_append(corpus, f.text[i].data, f.text[i].len) ||
                         !core_buf_append(corpus, "\n", 1)))
            why = "the corpus is too large";
    core_buf_free(&f.text[0]);
    core_buf_free(&f.text[1]);
    return why ? cli_fail("%s:%ld: %s", path, line_no, why) : 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Adds one file to the corpus: a .jsonl file line by line, any other as it is (with a line
 * break at the end when it lacks one, so files do not run into each other). */
static int add_file(const char *path, core_buf *corpus)
{
    char *data;
    size_t len;
    mica_err err;
    if (core_read_file(path, TOKENIZER_MAX_CORPUS, &data, &len, &err)) return cli_fail_err(&err);
    int rc = 0;
    if (has_suffix(path, ".jsonl")) {
        long line_no = 1;
        for (size_t at = 0; at < len && !rc; line_no++) {
            const char *nl = memchr(data + at, '\n', len - at);
            size_t end = nl ? (size_t)(nl - data) : len;
            json_in blank = {data + at, data + end};
            json_ws(&blank);
            if (blank.p < blank.end) rc = jsonl_line(path, line_no, data + at, end - at, corpus);
            at = end + 1;
        }
    } else if (!core_buf_append(corpus, data, len) ||
               (len && data[len - 1] != '\n' && !core_buf_append(corpus, "\n", 1))) {
        rc = cli_fail("%s: the corpus exceeds %zu bytes", path, TOKENIZER_MAX_CORPUS);
    }
    free(data);
    return rc;
}

/* ---- the command ----------------------------------------------------------------------- */

static int train_and_write(const tokenizer_opts *o, const core_buf *corpus)
{
    cli_progress prog;
    cli_progress_init(&prog);
    tok_train_params p = {.n_vocab = (int32_t)o->n_vocab,
                          .pre = o->pre,
                          .progress = cli_progress_update,
                          .progress_ctx = &prog};
    tok_train_stats s;
    mica_err err;
    gguf_writer *w = gguf_writer_new();
    if (!w) return cli_fail("%s: out of memory", o->out);
    const double t0 = core_now();
    mica_status st = tok_train(&p, corpus->data, corpus->len, w, &s, &err);
    cli_progress_clear(&prog);
    if (!st) st = gguf_writer_write(w, o->out, &err);
    gguf_writer_free(w);
    if (st) return cli_fail_err(&err);
    fprintf(stderr,
            "mica: vocabulary of %d tokens (256 bytes, %d merges, %d special; pre-tokenizer %s) "
            "from %llu bytes, %llu distinct pre-tokens: %.3f tokens/byte, %.1f s -> %s\n",
            s.n_vocab, s.n_merges, TOK_TRAIN_N_SPECIAL, o->pre ? o->pre : TOK_TRAIN_DEFAULT_PRE,
            (unsigned long long)s.n_bytes, (unsigned long long)s.n_words,
            (double)s.n_tokens / (double)s.n_bytes, core_now() - t0, o->out);
    if (s.n_vocab < o->n_vocab)
        fprintf(stderr,
                "mica: note: every pre-token of the corpus is a single token at %d tokens, so the "
                "vocabulary stops there (--vocab %ld)\n",
                s.n_vocab, o->n_vocab);
    return 0;
}

int cmd_tokenizer(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(tokenizer_help, stdout);
        return 0;
    }
    tokenizer_opts o = {0};
    if (tokenizer_parse(argc, argv, &o)) return 1;
    core_buf corpus;
    core_buf_init(&corpus, TOKENIZER_MAX_CORPUS);
    int rc = 0;
    for (int i = 0; i < o.n_files && !rc; i++) rc = add_file(o.files[i], &corpus);
    if (!rc && corpus.len == 0)
        rc = cli_fail("tokenizer: empty corpus: no text in the %d input file(s)", o.n_files);
    if (!rc) rc = train_and_write(&o, &corpus);
    core_buf_free(&corpus);
    return rc;
}
