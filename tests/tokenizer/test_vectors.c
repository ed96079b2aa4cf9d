/*
 * test_vectors.c - the tokenizer's acceptance test: llama.cpp's own test vectors
 * (shared/testdata/llamacpp/tokenizer/<vocab>.gguf.inp / .out, format in that folder's
 * README section 6). Every case is tokenized with add_special = false, parse_special = false
 * and must give exactly the ids llama.cpp's test-tokenizer-0 expects. One test per vocabulary;
 * a vocabulary whose .gguf is not in the snapshot prints SKIP and passes.
 */
#include "test_util.h"

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

#define SEP       "\n__ggml_vocab_test__\n"
#define MAX_CASES 256

typedef struct vec_case {
    const char *text;
    size_t len;
} vec_case;

/* Splits the .inp text in place on the separator. Every case is followed by one, except
 * perhaps the last; so an empty piece after the final separator is not a case. */
static int split_cases(char *inp, size_t len, vec_case *cases)
{
    const size_t sep_len = strlen(SEP);
    int n = 0;
    char *p = inp, *end = inp + len;
    while (p < end) {
        char *s = NULL;
        for (char *q = p; q + sep_len <= end; q++)
            if (memcmp(q, SEP, sep_len) == 0) {
                s = q;
                break;
            }
        if (n == MAX_CASES) fail_msg("more than %d cases", MAX_CASES);
        cases[n].text = p;
        cases[n].len = (size_t)((s ? s : end) - p);
        n++;
        if (!s) break;
        p = s + sep_len;
    }
    return n;
}

/* The ids of one .out line ("" for an empty line); *line advances past it. */
static size_t parse_ids(char **line, int32_t *ids, size_t cap)
{
    size_t n = 0;
    char *p = *line;
    while (*p && *p != '\n') {
        char *e;
        long v = strtol(p, &e, 10);
        if (e == p) {
            p++;
            continue;
        }
        if (n == cap) fail_msg("more than %zu ids on one .out line", cap);
        ids[n++] = (int32_t)v;
        p = e;
    }
    *line = *p ? p + 1 : p;
    return n;
}

/* The case text as a C-style escaped string, at most ~200 characters. */
static void escape_text(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            k += (size_t)snprintf(out + k, cap - k, "\\n");
        else if (c == '\t')
            k += (size_t)snprintf(out + k, cap - k, "\\t");
        else if (c < 0x20 || c == 0x7F)
            k += (size_t)snprintf(out + k, cap - k, "\\x%02X", c);
        else
            out[k++] = (char)c;
    }
    out[k] = '\0';
}

static void check_case(const char *vocab, const tok_vocab *v, int idx, vec_case c,
                       const int32_t *want, size_t n_want)
{
    tok_ids got;
    mica_err err = {0};
    char esc[256];
    tok_ids_init(&got, 1 << 16);
    mica_status st = tok_encode(v, c.text, c.len, false, false, &got, &err);
    escape_text(c.text, c.len, esc, sizeof esc);
    if (st) tok_ids_free(&got);
    if (st) fail_msg("%s: case %d \"%s\": tok_encode failed: %s", vocab, idx, esc, err.msg);
    size_t i = 0;
    while (i < got.n && i < n_want && got.v[i] == want[i]) i++;
    if (i < got.n || i < n_want) {
        long g = i < got.n ? (long)got.v[i] : -1, w = i < n_want ? (long)want[i] : -1;
        size_t n_got = got.n;
        tok_ids_free(&got);
        fail_msg("%s: case %d \"%s\": ids differ at position %zu: got %ld want %ld "
                 "(got %zu ids, want %zu; -1 = none)",
                 vocab, idx, esc, i, g, w, n_got, n_want);
    }
    tok_ids_free(&got);
}

/* What one vocabulary's test holds, freed by the teardown even when a check fails. */
typedef struct vec_state {
    const char *stem;
    gguf_file *f;
    tok_vocab *v;
    char *inp, *out;
} vec_state;

static void run_vectors(vec_state *st)
{
    char dir[1024], path[1200];
    const char *stem = st->stem;
    TU_SHARED_PATH(dir, "testdata/llamacpp/tokenizer");
    snprintf(path, sizeof path, "%s/%s.gguf", dir, stem);
    if (!tu_exists(path)) {
        printf("SKIP: %s: vocabulary file absent\n", stem);
        return;
    }
    mica_err err = {0};
    if (gguf_open(&st->f, path, &err)) fail_msg("%s: gguf_open: %s", stem, err.msg);
    if (tok_load(&st->v, st->f, &err)) fail_msg("%s: tok_load: %s", stem, err.msg);

    size_t inp_len, out_len;
    snprintf(path, sizeof path, "%s/%s.gguf.inp", dir, stem);
    st->inp = tu_read_file(path, &inp_len);
    snprintf(path, sizeof path, "%s/%s.gguf.out", dir, stem);
    st->out = tu_read_file(path, &out_len);
    static vec_case cases[MAX_CASES];
    int n = split_cases(st->inp, inp_len, cases);
    static int32_t want[1 << 14];
    char *line = st->out;
    for (int i = 0; i < n; i++) {
        if (!*line) fail_msg("%s: .out has fewer lines than the %d cases", stem, n);
        size_t n_want = parse_ids(&line, want, sizeof want / sizeof want[0]);
        check_case(stem, st->v, i, cases[i], want, n_want);
    }
    printf("%s: %d cases match llama.cpp\n", stem, n);
}

static void test_vocab(void **state)
{
    run_vectors(*state);
}

static int free_state(void **state)
{
    vec_state *st = *state;
    tok_free(st->v);
    gguf_close(st->f);
    free(st->inp);
    free(st->out);
    st->v = NULL, st->f = NULL, st->inp = st->out = NULL;
    return 0;
}

/* The vocabularies with llama.cpp vectors; those whose .gguf is not in the snapshot skip. */
static vec_state vocabs[] = {
    /* SentencePiece */
    {.stem = "ggml-vocab-llama-spm"},
    {.stem = "ggml-vocab-phi-3"},
    {.stem = "synthetic-spm-512"},
    /* byte-level BPE */
    {.stem = "ggml-vocab-gpt-2"},
    {.stem = "ggml-vocab-falcon"},
    {.stem = "ggml-vocab-mpt"},
    {.stem = "ggml-vocab-starcoder"},
    {.stem = "ggml-vocab-refact"},
    {.stem = "ggml-vocab-deepseek-llm"},
    {.stem = "ggml-vocab-deepseek-coder"},
    {.stem = "ggml-vocab-command-r"},
    {.stem = "ggml-vocab-llama-bpe"},
    {.stem = "ggml-vocab-qwen2"},
    {.stem = "ggml-vocab-qwen35"},
    {.stem = "ggml-vocab-gemma-4"},
    /* WordPiece */
    {.stem = "ggml-vocab-bert-bge"},
};

#define N_VOCABS (sizeof vocabs / sizeof vocabs[0])

int main(void)
{
    /* one test per vocabulary, named by it; its state is freed by the teardown */
    struct CMUnitTest tests[N_VOCABS];
    for (size_t i = 0; i < N_VOCABS; i++)
        tests[i] = (struct CMUnitTest){vocabs[i].stem, test_vocab, NULL, free_state, &vocabs[i]};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
