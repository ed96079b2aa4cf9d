/*
 * test_spm.c - tests src/tokenizer/tok_spm.c, the SentencePiece merge, on small vocabularies
 * written here, with expectations worked out by hand from llama.cpp's algorithm
 * (llm_tokenizer_spm_session): the pair with the highest score merges first, ties go to the
 * leftmost pair, pieces that are not tokens fall back to <0xXX> bytes, and characters are cut
 * by llama.cpp's UTF-8 length table (0xF8..0xFF count as 4-byte leads; a truncated character
 * at the end stays one piece). The full-vocabulary cases are in test_vectors.c.
 */
#include "test_util.h"

#include "gguf/gguf.h"
#include "tokenizer/tok_int.h"

/* ids of the test vocabulary: <unk> <s> </s>, <0x00>..<0xFF> at 3 + byte, then these */
enum { ID_A = 259, ID_B, ID_C, ID_D, ID_AB, ID_BC, ID_CD, ID_ABCD, N_TOKENS };

#define BYTE(b) (3 + (b))

typedef struct spm_vocab {
    gguf_file *f;
    tok_vocab *v;
} spm_vocab;

/* A vocabulary where ab, bc, cd and abcd have the given scores. */
static spm_vocab make_vocab(const char *name, float ab, float bc, float cd, float abcd)
{
    static char byte_names[256][8];
    const char *toks[N_TOKENS];
    int32_t types[N_TOKENS];
    float scores[N_TOKENS] = {0};
    const char *tail[] = {"a", "b", "c", "d", "ab", "bc", "cd", "abcd"};
    toks[0] = "<unk>", toks[1] = "<s>", toks[2] = "</s>";
    types[0] = TOK_TYPE_UNKNOWN, types[1] = types[2] = TOK_TYPE_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(byte_names[b], sizeof byte_names[b], "<0x%02X>", b);
        toks[BYTE(b)] = byte_names[b];
        types[BYTE(b)] = TOK_TYPE_BYTE;
    }
    for (int i = 0; i < 8; i++) {
        toks[ID_A + i] = tail[i];
        types[ID_A + i] = TOK_TYPE_NORMAL;
        scores[ID_A + i] = -10; /* single letters: never compared with each other */
    }
    scores[ID_AB] = ab, scores[ID_BC] = bc, scores[ID_CD] = cd, scores[ID_ABCD] = abcd;

    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, N_TOKENS), MICA_OK);
    assert_int_equal(
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_I32, types, N_TOKENS), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_F32, scores, N_TOKENS),
                     MICA_OK);

    char path[1024];
    mica_err err = {0};
    spm_vocab sv = {0};
    snprintf(path, sizeof path, "%s/tok_spm_%s.gguf", tu_tmpdir(), name);
    if (gguf_writer_write(w, path, &err)) fail_msg("write %s: %s", path, err.msg);
    gguf_writer_free(w);
    if (gguf_open(&sv.f, path, &err)) fail_msg("open %s: %s", path, err.msg);
    if (tok_load(&sv.v, sv.f, &err)) fail_msg("tok_load %s: %s", path, err.msg);
    return sv;
}

static void free_vocab(spm_vocab *sv)
{
    tok_free(sv->v);
    gguf_close(sv->f);
}

/* tok_spm_encode(text) must give want[0..n). */
static void expect_spm(const spm_vocab *sv, const char *text, size_t len, const int32_t *want,
                       size_t n)
{
    tok_ids ids;
    mica_err err = {0};
    tok_ids_init(&ids, 256);
    if (tok_spm_encode(sv->v, text, len, &ids, &err)) fail_msg("tok_spm_encode: %s", err.msg);
    for (size_t i = 0; i < n || i < ids.n; i++) {
        long g = i < ids.n ? ids.v[i] : -1, w = i < n ? want[i] : -1;
        if (g != w) {
            tok_ids_free(&ids);
            fail_msg("text of %zu bytes: position %zu: got %ld want %ld", len, i, g, w);
        }
    }
    tok_ids_free(&ids);
}

static void test_highest_score_first(void **state)
{
    spm_vocab sv = make_vocab("score", -2, -1, -5, -5); /* bc beats ab */
    const int32_t want[] = {ID_A, ID_BC};
    expect_spm(&sv, "abc", 3, want, 2);
    free_vocab(&sv);
}

static void test_tie_goes_left(void **state)
{
    spm_vocab sv = make_vocab("tie", -1, -1, -5, -5);
    const int32_t want[] = {ID_AB, ID_C};
    expect_spm(&sv, "abc", 3, want, 2);
    free_vocab(&sv);
}

/* ab and cd merge first, then their pair abcd is found. Had bc merged first (higher score),
 * abcd would be unreachable. */
static void test_merges_chain(void **state)
{
    spm_vocab sv = make_vocab("chain", -1, -3, -2, -4);
    const int32_t whole[] = {ID_ABCD};
    expect_spm(&sv, "abcd", 4, whole, 1);
    free_vocab(&sv);
    sv = make_vocab("chain2", -2, -1, -3, -4);
    const int32_t split[] = {ID_A, ID_BC, ID_D};
    expect_spm(&sv, "abcd", 4, split, 3);
    free_vocab(&sv);
}

static void test_byte_fallback(void **state)
{
    spm_vocab sv = make_vocab("bytes", -1, -1, -1, -1);
    const int32_t e_acute[] = {BYTE(0xC3), BYTE(0xA9)};
    expect_spm(&sv, "\xC3\xA9", 2, e_acute, 2);
    const int32_t mixed[] = {ID_AB, BYTE('x'), ID_CD};
    expect_spm(&sv, "abxcd", 5, mixed, 3);
    expect_spm(&sv, "", 0, NULL, 0);
    free_vocab(&sv);
}

/* llama.cpp cuts characters by the lead byte's high nibble: 0xF8 starts a 4-byte "character"
 * that swallows "abc", which then cannot merge; a lead byte cut short by the end of the text
 * keeps the bytes that are there (here 0xE4 takes "a" along). */
static void test_utf8_cuts(void **state)
{
    spm_vocab sv = make_vocab("utf8", -1, -1, -1, -1);
    const int32_t f8[] = {BYTE(0xF8), BYTE('a'), BYTE('b'), BYTE('c'), ID_AB};
    expect_spm(&sv,
               "\xF8"
               "abcab",
               6, f8, 5);
    const int32_t cut[] = {ID_AB, BYTE(0xE4), BYTE('a')};
    expect_spm(&sv,
               "ab\xE4"
               "a",
               4, cut, 3);
    free_vocab(&sv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_highest_score_first), cmocka_unit_test(test_tie_goes_left),
        cmocka_unit_test(test_merges_chain),        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_utf8_cuts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
