/*
 * test_wpm.c - tests src/tokenizer/tok_wpm.c on a synthetic BERT vocabulary (GGUF spelling:
 * word starts carry U+2581, continuations are bare): BERT's normalization (lowercase, accents
 * stripped, controls dropped), its word boundaries (white space, punctuation, ASCII symbols,
 * CJK ideographs) and greedy longest-match-first covering, with expected ids worked out by
 * hand from those rules.
 */
#include "test_util.h"

#include "gguf/gguf.h"
#include "tokenizer/tok_int.h"

#define W "\xE2\x96\x81" /* U+2581 */

static const char *const wpm_tokens[] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]",  "[MASK]",         W "hello", W "world", W "un", "aff",
    "able",  W ",",   W "!",   W "cafe", W "\xE4\xB8\xAD", W "a",     "b",       W "ab",
};

typedef struct wpm_fixture {
    gguf_file *f;
    tok_vocab *v;
} wpm_fixture;

static int setup(void **state)
{
    enum { N = sizeof wpm_tokens / sizeof wpm_tokens[0] };
    int32_t types[N];
    for (int i = 0; i < N; i++) types[i] = i < 5 ? 3 : 1;
    types[1] = 2;
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "bert"), MICA_OK);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.pre", "bert-bge"), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", wpm_tokens, N), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_I32, types, N),
                     MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 1), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 2), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.seperator_token_id", 3), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", 0), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.mask_token_id", 4), MICA_OK);
    char path[1024];
    snprintf(path, sizeof path, "%s/tok_wpm_synthetic.gguf", tu_tmpdir());
    mica_err err = {0};
    if (gguf_writer_write(w, path, &err)) fail_msg("write %s: %s", path, err.msg);
    gguf_writer_free(w);
    wpm_fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    if (gguf_open(&fx->f, path, &err)) fail_msg("open %s: %s", path, err.msg);
    if (tok_load(&fx->v, fx->f, &err)) fail_msg("tok_load %s: %s", path, err.msg);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    wpm_fixture *fx = *state;
    tok_free(fx->v);
    gguf_close(fx->f);
    free(fx);
    return 0;
}

static void expect_wpm(const tok_vocab *v, const char *text, const int32_t *want, size_t n_want)
{
    tok_ids ids;
    tok_ids_init(&ids, 1024);
    mica_err err = {0};
    if (tok_wpm_encode(v, text, strlen(text), &ids, &err))
        fail_msg("encode \"%s\": %s", text, err.msg);
    char got[256] = "", exp[256] = "";
    for (size_t i = 0; i < ids.n; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids.v[i]);
    for (size_t i = 0; i < n_want; i++)
        snprintf(exp + strlen(exp), sizeof exp - strlen(exp), " %d", want[i]);
    tok_ids_free(&ids);
    if (strcmp(got, exp) != 0) fail_msg("\"%s\": got [%s ], want [%s ]", text, got, exp);
}

#define IDS(...)                                                                                   \
    (const int32_t[]){__VA_ARGS__}, sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)

static void test_words_and_punctuation(void **state)
{
    const tok_vocab *v = ((wpm_fixture *)*state)->v;
    expect_wpm(v, "Hello, WORLD!", IDS(5, 10, 6, 11));
    expect_wpm(v, "\t hello \n", IDS(5));
    expect_wpm(v, "a$b", IDS(14, 1, 1)); /* '$' (ASCII symbol) is a word; "b" has no word start */
    expect_wpm(v, "\xE4\xB8\xAD\xE6\x96\x87", IDS(13, 1)); /* each ideograph is a word */
    expect_wpm(v, "", NULL, 0);
}

static void test_greedy_longest_match(void **state)
{
    const tok_vocab *v = ((wpm_fixture *)*state)->v;
    expect_wpm(v, "unaffable", IDS(7, 8, 9));
    expect_wpm(v, "ab", IDS(16)); /* the longer "\u2581ab" wins over "\u2581a" "b" */
    expect_wpm(v, "unknownword", IDS(1));
    expect_wpm(v, "unaffx", IDS(1)); /* a dead end discards the word's pieces: [UNK] alone */
}

static void test_normalization(void **state)
{
    const tok_vocab *v = ((wpm_fixture *)*state)->v;
    expect_wpm(v, "Caf\xC3\xA9", IDS(12));  /* precomposed e acute */
    expect_wpm(v, "CAFE\xCC\x81", IDS(12)); /* e + combining acute */
    expect_wpm(v, "hel\x01lo", IDS(5));     /* controls vanish without splitting */
    expect_wpm(v,
               "\xFF"
               "hello\xC3",
               IDS(5)); /* invalid bytes: U+FFFD, dropped */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words_and_punctuation),
        cmocka_unit_test(test_greedy_longest_match),
        cmocka_unit_test(test_normalization),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
