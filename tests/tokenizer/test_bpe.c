/*
 * test_bpe.c - tests src/tokenizer/tok_regex.c, tok_pre.c and tok_bpe.c: the regex engine on
 * small patterns whose matches are worked out by hand from ECMAScript rules; pre-tokenizer
 * splits of short strings worked out by hand from the patterns llama.cpp uses (including its
 * collapsed-category quirks); llama.cpp's hand-written GPT-2/Llama-3 splitters against the
 * regex engine running the same patterns (two independent implementations) over llama.cpp's
 * test texts; GPT-2's byte mapping rebuilt here from its definition; and BPE merging on a
 * synthetic vocabulary whose results follow from the merge ranks.
 */
#include "test_util.h"

#include "gguf/gguf.h"
#include "tokenizer/tok_int.h"
#include "tokenizer/tok_pre.h"
#include "tokenizer/tok_regex.h"
#include "tokenizer/tok_unicode.h"

/* ---- regex engine ---------------------------------------------------------------------- */

/* The first match of pattern in text (ASCII/UTF-8), searched from code point 0, as
 * [begin, end) code point offsets, or {-1, -1}. */
static void re_find(const char *pattern, const char *text, long *b, long *e)
{
    tok_regex *re;
    mica_err err = {0};
    if (tok_regex_compile(&re, pattern, strlen(pattern), &err))
        fail_msg("compile /%s/: %s", pattern, err.msg);
    uint32_t cps[256];
    size_t n = tok_utf8_to_cps(text, strlen(text), cps);
    bool found;
    size_t mb = 0, me = 0;
    if (tok_regex_search(re, cps, 0, n, 0, &found, &mb, &me, &err))
        fail_msg("search /%s/: %s", pattern, err.msg);
    tok_regex_free(re);
    *b = found ? (long)mb : -1;
    *e = found ? (long)me : -1;
}

static void expect_match(const char *pattern, const char *text, long want_b, long want_e)
{
    long b, e;
    re_find(pattern, text, &b, &e);
    if (b != want_b || e != want_e)
        fail_msg("/%s/ on \"%s\": got [%ld, %ld), want [%ld, %ld)", pattern, text, b, e, want_b,
                 want_e);
}

static void test_regex_semantics(void **state)
{
    expect_match("a|ab", "ab", 0, 1); /* leftmost-first, not longest */
    expect_match("ab|a", "ab", 0, 2);
    expect_match("b+", "aabbbc", 2, 5);    /* leftmost start, greedy */
    expect_match("x{2,3}?", "xxxx", 0, 2); /* lazy takes the minimum */
    expect_match("x{2,3}", "xxxx", 0, 3);
    expect_match("x{2}", "xyxx", 2, 4);
    expect_match("\\s+(?!\\S)", "  a", 0, 1); /* backtracks off the space before 'a' */
    expect_match("\\s+(?!\\S)", "a  ", 1, 3); /* the end counts as "not \S" */
    expect_match("a(?=b)", "acab", 2, 3);
    expect_match("\\s+$", " a  ", 2, 4);
    expect_match("^a", "ba", -1, -1);
    expect_match("(?:ab)+c", "ababc", 0, 5);
    expect_match("[^abc]+", "abxyc", 2, 4);
    expect_match("[a-c\\-]+", "x-ab-", 1, 5);
    expect_match("[\\u4E00-\\u9FA5]+",
                 "a\xE4\xB8\xAD\xE6\x96\x87"
                 "b",
                 1, 3);
    expect_match("[一-龥]+", "a中文b", 1, 3); /* UTF-8 ranges in the pattern */
    expect_match("\\d{1,3}", "ab12345", 2, 5);
    expect_match("a.c", "a\nc abc", 4, 7); /* '.' stops at line ends */
    expect_match("[\\r\\n]", "ab\r\n", 2, 3);
}

static void expect_compile_error(const char *pattern, mica_status want)
{
    tok_regex *re = NULL;
    mica_err err = {0};
    mica_status st = tok_regex_compile(&re, pattern, strlen(pattern), &err);
    if (st != want) fail_msg("/%s/: status %d, want %d (%s)", pattern, st, want, err.msg);
    assert_null(re);
    assert_true(strstr(err.msg, "regex") != NULL);
}

static void test_regex_rejects_what_it_cannot_do(void **state)
{
    expect_compile_error("(?i:a)", MICA_EUNSUPPORTED);
    expect_compile_error("\\p{Han}+", MICA_EUNSUPPORTED);
    expect_compile_error("a**", MICA_EUNSUPPORTED);
    expect_compile_error("(a*)*", MICA_EUNSUPPORTED); /* would loop on empty matches */
    expect_compile_error("(ab", MICA_EUNSUPPORTED);
    expect_compile_error("ab)", MICA_EUNSUPPORTED);
    expect_compile_error("[ab", MICA_EUNSUPPORTED);
    expect_compile_error("[z-a]", MICA_EUNSUPPORTED);
    expect_compile_error("a{3,2}", MICA_EUNSUPPORTED);
    expect_compile_error("\\q", MICA_EUNSUPPORTED);
    tok_regex *re;
    mica_err err = {0};
    assert_int_equal(tok_regex_compile(&re, "\\p{L}+", 6, &err), MICA_OK);
    assert_true(tok_regex_collapsed(re));
    tok_regex_free(re);
    assert_int_equal(tok_regex_compile(&re, "[0-9]+", 6, &err), MICA_OK);
    assert_false(tok_regex_collapsed(re));
    tok_regex_free(re);
}

/* ---- pre-tokenizers ------------------------------------------------------------------- */

/* Splits text with pre-tokenizer `pre` (or with the regex list rx when pre < 0) and returns
 * the pieces joined by '|' in out. */
static void split_join(int pre, const char *const *rx, size_t n_rx, const char *text, char *out,
                       size_t cap)
{
    size_t n = strlen(text);
    uint32_t *cps = malloc((n + 1) * sizeof *cps);
    size_t *lens = malloc((n + 1) * sizeof *lens);
    assert_non_null(cps);
    assert_non_null(lens);
    size_t n_cps = tok_utf8_to_cps(text, n, cps), n_pieces = 0;
    mica_err err = {0};
    mica_status st = pre >= 0 ? tok_pre_split(pre, cps, n_cps, lens, &n_pieces, &err)
                              : tok_pre_split_with(rx, n_rx, cps, n_cps, lens, &n_pieces, &err);
    if (st) fail_msg("split \"%s\": %s", text, err.msg);
    size_t k = 0, at = 0, total = 0;
    for (size_t p = 0; p < n_pieces; p++) {
        assert_true(lens[p] > 0);
        if (p > 0 && k + 1 < cap) out[k++] = '|';
        for (size_t i = 0; i < lens[p]; i++) {
            char buf[4];
            int l = core_utf8_encode(cps[at++], buf);
            for (int j = 0; j < l && k + 1 < cap; j++) out[k++] = buf[j];
        }
        total += lens[p];
    }
    out[k] = '\0';
    assert_int_equal(total, n_cps);
    free(cps);
    free(lens);
}

static void expect_pre(const char *name, const char *text, const char *want)
{
    int pre = tok_pre_from_name(name, strlen(name));
    if (pre < 0) fail_msg("pre-tokenizer %s unknown", name);
    char got[512];
    split_join(pre, NULL, 0, text, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("%s on \"%s\": got \"%s\", want \"%s\"", name, text, got, want);
}

static void expect_rx(const char *rx, const char *text, const char *want)
{
    char got[512];
    split_join(-1, &rx, 1, text, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("/%s/ on \"%s\": got \"%s\", want \"%s\"", rx, text, got, want);
}

static void test_pre_names(void **state)
{
    const char *known[] = {"default",   "gpt-2",     "falcon",       "mpt",
                           "starcoder", "refact",    "deepseek-llm", "deepseek-coder",
                           "llama3",    "llama-bpe", "qwen2",        "olmo",
                           "dbrx",      "smaug-bpe", "command-r",    "stablelm2"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (tok_pre_from_name(known[i], strlen(known[i])) < 0) fail_msg("%s unknown", known[i]);
    assert_int_equal(tok_pre_from_name("no-such-pre", 11), -1);
    assert_int_equal(tok_pre_from_name("gpt-2x", 5), tok_pre_from_name("gpt-2", 5));
    assert_int_equal(tok_pre_from_name("gpt", 3), -1);
    assert_int_equal(tok_pre_n_regex(-1), 0);
    assert_int_equal(tok_pre_n_regex(tok_pre_from_name("falcon", 6)), 3);
}

static void test_gpt2_splits(void **state)
{
    expect_pre("gpt-2", "Hello world", "Hello| world");
    expect_pre("gpt-2", "I'm  fine\n", "I|'m| | fine|\n");
    expect_pre("gpt-2", "ab   cd", "ab|  | cd");
    expect_pre("gpt-2", "a\t\tb", "a|\t|\t|b"); /* " ?\p{L}+" takes a space, not a tab */
    expect_pre("gpt-2", "x1.5 ,,", "x|1|.|5| ,,");
    expect_pre("gpt-2", "\xC3\xA9t\xC3\xA9 \xE4\xB8\xAD", "\xC3\xA9t\xC3\xA9| \xE4\xB8\xAD");
    expect_pre("gpt-2",
               "a\xE3\x80\x80"
               "b",
               "a|\xE3\x80\x80|b"); /* U+3000 is white space */
    expect_pre("gpt-2", "", "");
}

static void test_llama3_splits(void **state)
{
    expect_pre("llama-bpe", "12345", "123|45");
    expect_pre("llama-bpe", "Hello, world!\n\n", "Hello|,| world|!\n\n");
    expect_pre("llama-bpe", "I'M ok", "I|'M| ok"); /* contractions ignore case */
    expect_pre("llama-bpe", "a \n\n b", "a| \n\n| b");
    expect_pre("llama-bpe", "$x", "$x"); /* [^\r\n\p{L}\p{N}]?\p{L}+ */
}

static void test_other_pre_splits(void **state)
{
    /* falcon: digits in threes after the GPT-2 split */
    expect_pre("falcon", "3333 ok", "333|3| ok");
    /* starcoder: every digit alone first */
    expect_pre("starcoder", "a123", "a|1|2|3");
    /* default: punctuation runs, GPT-2, digit runs, digits in threes */
    expect_pre("default", "a+=b 12345", "a|+=|b| |123|45");
    /* deepseek-coder: CR/LF alone, letters with one leading space, punctuation, digits */
    expect_pre("deepseek-coder", "ab\ncd 12!", "ab|\n|cd| |1|2|!");
    /* deepseek-llm: CJK runs split from Latin, trailing spaces kept whole */
    expect_pre("deepseek-llm", "ab\xE4\xB8\xAD\xE6\x96\x87  ", "ab|\xE4\xB8\xAD\xE6\x96\x87|  ");
    /* qwen2 runs on the regex engine: one digit at a time */
    expect_pre("qwen2", "x 123", "x| |1|2|3");
}

/* llama.cpp's collapsed \p{S} lists no '~' although '~' is Sm; and a non-ASCII symbol is the
 * symbol representative. So "+~+" is split around the '~', and U+00D7 (Sm) is matched. */
static void test_collapsed_quirks(void **state)
{
    expect_rx("[\\p{S}]+", "+~+", "+|~|+");
    expect_rx("\\p{S}+", "\xC3\x97+", "\xC3\x97+");
    /* U+00D1 (a letter) is not the collapsed number representative 0xD1 */
    expect_rx("\\p{N}+",
              "1\xC3\x91"
              "2",
              "1|\xC3\x91|2");
    /* patterns without \p{...} see non-ASCII white space as \v, which \s matches */
    expect_rx("\\s+",
              "a\xE3\x80\x80"
              "b",
              "a|\xE3\x80\x80|b");
}

/* Both of llama.cpp's hand-written splitters must agree with the regex they stand for. */
static void compare_custom_with_engine(const char *pre_name, const char *text, size_t n)
{
    int pre = tok_pre_from_name(pre_name, strlen(pre_name));
    uint32_t *cps = malloc((n + 1) * sizeof *cps);
    size_t *a = malloc((n + 1) * sizeof *a), *b = malloc((n + 1) * sizeof *b);
    assert_true(cps && a && b);
    size_t n_cps = tok_utf8_to_cps(text, n, cps), na = 0, nb = 0;
    mica_err err = {0};
    const char *rx = tok_pre_regex(pre, 0);
    assert_int_equal(tok_pre_split(pre, cps, n_cps, a, &na, &err), MICA_OK);
    assert_int_equal(tok_pre_split_with(&rx, 1, cps, n_cps, b, &nb, &err), MICA_OK);
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    if (i < na || i < nb)
        fail_msg("%s: splitter and engine differ at piece %zu (%zu vs %zu pieces)", pre_name, i, na,
                 nb);
    free(cps);
    free(a);
    free(b);
}

static void test_custom_splitters_match_engine(void **state)
{
    static const char *const texts[] = {"Hello world",
                                        "  leading",
                                        "trailing  ",
                                        "\t\t\n x",
                                        "I'm 'RE' we'll 'd",
                                        "3333333",
                                        "a\xC2\x85"
                                        "b\xC2\xA0 c",
                                        "\xE2\x80\xA8\xE2\x80\xA8x",
                                        "(.,) ~~ $$",
                                        "\xFF\xFE"
                                        "bad"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        compare_custom_with_engine("gpt-2", texts[i], strlen(texts[i]));
        compare_custom_with_engine("llama3", texts[i], strlen(texts[i]));
    }
    /* and over llama.cpp's own test texts, when the shared data is there */
    static const char *const files[] = {"ggml-vocab-llama-bpe.gguf.inp",
                                        "ggml-vocab-gpt-2.gguf.inp"};
    for (size_t f = 0; f < 2; f++) {
        char rel[256], path[1024];
        snprintf(rel, sizeof rel, "testdata/llamacpp/tokenizer/%s", files[f]);
        TU_SHARED_PATH(path, rel);
        size_t len;
        char *inp = tu_read_file(path, &len);
        compare_custom_with_engine("gpt-2", inp, len);
        compare_custom_with_engine("llama3", inp, len);
        free(inp);
    }
}

/* Random bytes (mostly broken UTF-8) through every pre-tokenizer: no crash, and the pieces
 * always cover the text exactly. */
static void test_random_bytes_split_cleanly(void **state)
{
    static const unsigned char alphabet[] = {'a',  ' ',  '1',  '\'', '\n', '\r', '~',
                                             '.',  0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xF0,
                                             0x9F, 0x80, 0xFF, 0xE3, 0x80, 0x00};
    uint32_t seed = 12345;
    uint32_t cps[64];
    size_t lens[64];
    for (int pre = 0; tok_pre_n_regex(pre) > 0; pre++) {
        for (int iter = 0; iter < 300; iter++) {
            char text[64];
            seed = seed * 1664525u + 1013904223u;
            size_t n = (seed >> 16) % sizeof text;
            for (size_t i = 0; i < n; i++) {
                seed = seed * 1664525u + 1013904223u;
                text[i] = (char)alphabet[(seed >> 16) % sizeof alphabet];
            }
            size_t n_cps = tok_utf8_to_cps(text, n, cps), n_pieces = 0, total = 0;
            mica_err err = {0};
            if (tok_pre_split(pre, cps, n_cps, lens, &n_pieces, &err))
                fail_msg("pre %d: %s", pre, err.msg);
            for (size_t p = 0; p < n_pieces; p++) {
                assert_true(lens[p] > 0);
                total += lens[p];
            }
            assert_int_equal(total, n_cps);
        }
    }
}

/* ---- byte mapping ---------------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode, from its definition: printable Latin-1 bytes keep their value,
 * the rest take 256, 257, ... in byte order. */
static void gpt2_byte_table(uint32_t cp[256])
{
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp[b] = printable ? (uint32_t)b : next++;
    }
}

static void test_unmap_inverts_gpt2_bytes(void **state)
{
    uint32_t cp[256];
    gpt2_byte_table(cp);
    char text[4 * 256], want[256], got[4 * 256];
    size_t n = 0;
    for (int b = 0; b < 256; b++) {
        n += (size_t)core_utf8_encode(cp[b], text + n);
        want[b] = (char)b;
    }
    assert_int_equal(tok_bpe_unmap(text, n, got), 256);
    assert_memory_equal(got, want, 256);
    /* U+0120 is the space, U+010A the newline */
    assert_int_equal(tok_bpe_unmap("\xC4\xA0hi\xC4\x8A", 6, got), 4);
    assert_memory_equal(got, " hi\n", 4);
    /* a character outside the mapping keeps its bytes */
    assert_int_equal(tok_bpe_unmap("a\xE4\xB8\xAD", 4, got), 4);
    assert_memory_equal(got, "a\xE4\xB8\xAD", 4);
}

/* ---- merging on a synthetic vocabulary ------------------------------------------------- */

typedef struct bpe_fixture {
    gguf_file *f;
    tok_vocab *v;
} bpe_fixture;

/* ids: 0 a, 1 b, 2 c, 3 ab, 4 bc, 5 aa, 6 abc, 7 x, 8 y, 9 \u0120 (space), 10 \u0120a */
static const char *const syn_tokens[] = {"a",   "b", "c", "ab",       "bc",          "aa",
                                         "abc", "x", "y", "\xC4\xA0", "\xC4\xA0\x61"};
/* ranks: "b c" 0, "a b" 1, "a a" 2, "x y" 3 (no "xy" token), "\u0120 a" 4 */
static const char *const syn_merges[] = {"b c", "a b", "a a", "x y", "\xC4\xA0 a"};

static bpe_fixture load_synthetic(const char *pre)
{
    enum { N = sizeof syn_tokens / sizeof syn_tokens[0] };
    int32_t types[N];
    for (int i = 0; i < N; i++) types[i] = 1;
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), MICA_OK);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.pre", pre), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", syn_tokens, N), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_I32, types, N),
                     MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", syn_merges,
                                             sizeof syn_merges / sizeof syn_merges[0]),
                     MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 0), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 0), MICA_OK);
    char path[1024];
    snprintf(path, sizeof path, "%s/tok_bpe_synthetic_%s.gguf", tu_tmpdir(), pre);
    mica_err err = {0};
    if (gguf_writer_write(w, path, &err)) fail_msg("write %s: %s", path, err.msg);
    gguf_writer_free(w);
    bpe_fixture fx = {0};
    if (gguf_open(&fx.f, path, &err)) fail_msg("open %s: %s", path, err.msg);
    if (tok_load(&fx.v, fx.f, &err)) fail_msg("tok_load %s: %s", path, err.msg);
    return fx;
}

static void free_synthetic(bpe_fixture *fx)
{
    tok_free(fx->v);
    gguf_close(fx->f);
}

static void expect_bpe(const tok_vocab *v, const char *text, size_t len, const int32_t *want,
                       size_t n_want)
{
    tok_ids ids;
    tok_ids_init(&ids, 1024);
    mica_err err = {0};
    if (tok_bpe_encode(v, text, len, &ids, &err)) fail_msg("encode \"%s\": %s", text, err.msg);
    bool same = ids.n == n_want;
    for (size_t i = 0; same && i < n_want; i++) same = ids.v[i] == want[i];
    if (!same) {
        size_t n = ids.n;
        long first = n ? ids.v[0] : -1;
        tok_ids_free(&ids);
        fail_msg("\"%s\": got %zu ids (first %ld), want %zu (first %ld)", text, n, first, n_want,
                 n_want ? (long)want[0] : -1);
    }
    tok_ids_free(&ids);
}

static void test_bpe_merges_by_rank(void **state)
{
    bpe_fixture fx = load_synthetic("gpt-2");
    /* "b c" (rank 0) beats "a b" (rank 1); "a bc" is not a merge */
    expect_bpe(fx.v, "abc", 3, (const int32_t[]){0, 4}, 2);
    /* equal ranks: the leftmost pair merges first, leaving "aa" "a" */
    expect_bpe(fx.v, "aaa", 3, (const int32_t[]){5, 0}, 2);
    /* "ab" then nothing more: "d" is no token and no single byte of it is one, so it is
     * dropped as llama.cpp drops it */
    expect_bpe(fx.v, "abd", 3, (const int32_t[]){3}, 1);
    /* "x y" merges into a symbol the vocabulary lacks: its single bytes are emitted */
    expect_bpe(fx.v, "xy", 2, (const int32_t[]){7, 8}, 2);
    /* GPT-2 pre-split: " a" is one pre-token, spelled \u0120a */
    expect_bpe(fx.v, "ab a", 4, (const int32_t[]){3, 10}, 2);
    /* invalid UTF-8 becomes U+FFFD, which has no tokens here: nothing, and no crash */
    expect_bpe(fx.v, "\xFF\xC3", 2, NULL, 0);
    expect_bpe(fx.v, "", 0, NULL, 0);
    free_synthetic(&fx);
}

static void test_bpe_ignore_merges(void **state)
{
    /* llama-bpe sets ignore_merges: a pre-token that is a whole token skips merging */
    bpe_fixture fx = load_synthetic("llama-bpe");
    assert_true(fx.v->ignore_merges);
    expect_bpe(fx.v, "abc", 3, (const int32_t[]){6}, 1);
    expect_bpe(fx.v, "aaa", 3, (const int32_t[]){5, 0}, 2);
    free_synthetic(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regex_semantics),
        cmocka_unit_test(test_regex_rejects_what_it_cannot_do),
        cmocka_unit_test(test_pre_names),
        cmocka_unit_test(test_gpt2_splits),
        cmocka_unit_test(test_llama3_splits),
        cmocka_unit_test(test_other_pre_splits),
        cmocka_unit_test(test_collapsed_quirks),
        cmocka_unit_test(test_custom_splitters_match_engine),
        cmocka_unit_test(test_random_bytes_split_cleanly),
        cmocka_unit_test(test_unmap_inverts_gpt2_bytes),
        cmocka_unit_test(test_bpe_merges_by_rank),
        cmocka_unit_test(test_bpe_ignore_merges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
