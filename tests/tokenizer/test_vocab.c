/*
 * test_vocab.c - tests src/tokenizer/tok_vocab.c, tok_rules.c, tok_piece.c and the
 * special-token side of tok_encode.c: load errors on small GGUFs written here, llama.cpp's
 * defaults, token pieces of the synthetic vocabulary (facts from
 * shared/testdata/llamacpp/tokenizer/synthetic-spm-512.vocab.json and its README), the SPM
 * round trip, parse_special, phi-3's name-based rules, and stories260K's prompt (its README).
 */
#include "test_util.h"

#include "gguf/gguf.h"
#include "tokenizer/tok_int.h"

#define LOW_8 "\xE2\x96\x81" /* U+2581 */

/* ---- helpers -------------------------------------------------------------------------- */

typedef struct opened {
    gguf_file *f;
    tok_vocab *v;
} opened;

static void close_vocab(opened *o)
{
    tok_free(o->v);
    gguf_close(o->f);
}

/* Opens a vocabulary under ../shared (skips when absent) and loads it. */
static opened open_shared(const char *rel)
{
    char path[1024];
    mica_err err = {0};
    opened o = {0};
    TU_SHARED_PATH(path, rel);
    if (gguf_open(&o.f, path, &err)) fail_msg("gguf_open %s: %s", rel, err.msg);
    if (tok_load(&o.v, o.f, &err)) fail_msg("tok_load %s: %s", rel, err.msg);
    return o;
}

/* Writes w to a scratch file, opens it and tries tok_load; returns the status, err filled. */
static mica_status load_written(gguf_writer *w, const char *name, opened *o, mica_err *err)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tok_vocab_%s.gguf", tu_tmpdir(), name);
    assert_int_equal(gguf_writer_write(w, path, err), MICA_OK);
    gguf_writer_free(w);
    o->f = NULL;
    o->v = NULL;
    assert_int_equal(gguf_open(&o->f, path, err), MICA_OK);
    return tok_load(&o->v, o->f, err);
}

/* A writer holding a small SPM vocabulary: <unk> <s> </s> ▁ a ▁a (no byte tokens). */
static gguf_writer *small_spm(void)
{
    static const char *const toks[] = {"<unk>", "<s>", "</s>", LOW_8, "a", LOW_8 "a"};
    static const int32_t types[] = {2, 3, 3, 1, 1, 1};
    static const float scores[] = {0, 0, 0, -3, -2, -1};
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 6), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_I32, types, 6),
                     MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_F32, scores, 6),
                     MICA_OK);
    return w;
}

static void expect_error(gguf_writer *w, const char *name, mica_status want, const char *needle)
{
    opened o;
    mica_err err = {0};
    mica_status st = load_written(w, name, &o, &err);
    if (st != want || !strstr(err.msg, needle))
        fail_msg("%s: got status %d \"%s\", want %d with \"%s\"", name, st, err.msg, want, needle);
    assert_null(o.v);
    gguf_close(o.f);
}

/* Tokenizes s and compares with want[0..n). */
static void expect_ids(const tok_vocab *v, const char *s, bool add_special, bool parse_special,
                       const int32_t *want, size_t n)
{
    tok_ids ids;
    mica_err err = {0};
    tok_ids_init(&ids, 4096);
    if (tok_encode(v, s, strlen(s), add_special, parse_special, &ids, &err))
        fail_msg("tok_encode \"%s\": %s", s, err.msg);
    for (size_t i = 0; i < n || i < ids.n; i++) {
        long g = i < ids.n ? ids.v[i] : -1, w = i < n ? want[i] : -1;
        if (g != w) {
            tok_ids_free(&ids);
            fail_msg("\"%s\" (add_special %d, parse_special %d): position %zu: got %ld want %ld", s,
                     add_special, parse_special, i, g, w);
        }
    }
    tok_ids_free(&ids);
}

static void encode(const tok_vocab *v, const char *s, size_t len, bool parse_special, tok_ids *ids)
{
    mica_err err = {0};
    tok_ids_init(ids, 1 << 16);
    if (tok_encode(v, s, len, false, parse_special, ids, &err)) fail_msg("tok_encode: %s", err.msg);
}

static void expect_piece(const tok_vocab *v, int32_t id, bool special, const char *want,
                         size_t want_len)
{
    char buf[64];
    size_t n = tok_piece(v, id, special, buf, sizeof buf);
    if (n != want_len || memcmp(buf, want, n) != 0)
        fail_msg("piece of %d (special %d): got %zu bytes '%.*s', want %zu bytes '%s'", id, special,
                 n, (int)(n < sizeof buf ? n : sizeof buf), buf, want_len, want);
}

/* ---- load errors ---------------------------------------------------------------------- */

static void test_missing_tokens(void **state)
{
    gguf_writer *w = gguf_writer_new();
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), MICA_OK);
    expect_error(w, "no_tokens", MICA_EFORMAT, "tokenizer.ggml.tokens: missing");
}

static void test_unknown_model(void **state)
{
    gguf_writer *w = small_spm();
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "t5x"), MICA_OK);
    expect_error(w, "bad_model", MICA_EUNSUPPORTED, "unsupported tokenizer model 't5x'");
}

static void test_bos_out_of_range(void **state)
{
    gguf_writer *w = small_spm();
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 6), MICA_OK);
    expect_error(w, "bad_bos", MICA_ERANGE, "tokenizer.ggml.bos_token_id: id 6 out of range");
}

static void test_duplicate_token(void **state)
{
    static const char *const toks[] = {"<unk>", "x", "x"};
    gguf_writer *w = gguf_writer_new();
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3), MICA_OK);
    expect_error(w, "dup", MICA_EFORMAT, "duplicate token 'x' has ids 1 and 2");
}

static void test_unknown_pre(void **state)
{
    static const char *const toks[] = {"a", "b", "ab"};
    static const char *const merges[] = {"a b"};
    gguf_writer *w = gguf_writer_new();
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), MICA_OK);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre"), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1), MICA_OK);
    expect_error(w, "bad_pre", MICA_EUNSUPPORTED, "unsupported pre-tokenizer 'no-such-pre'");
}

/* llama.cpp's SPM defaults when the keys are absent: bos 1, eos 2, unk 0, add_bos, space
 * prefix. The vocabulary has no byte tokens, so "b" falls back to <unk>. */
static void test_spm_defaults(void **state)
{
    opened o;
    mica_err err = {0};
    assert_int_equal(load_written(small_spm(), "small", &o, &err), MICA_OK);
    assert_int_equal(tok_bos(o.v), 1);
    assert_int_equal(tok_eos(o.v), 2);
    assert_true(tok_add_bos(o.v));
    assert_false(tok_add_eos(o.v));
    assert_string_equal(tok_model_name(o.v), "llama");
    assert_string_equal(tok_pre_name(o.v), "default");
    assert_true(tok_is_eog(o.v, 2));
    const int32_t a_a[] = {1, 5, 5}, b[] = {3, 0};
    expect_ids(o.v, "a a", true, false, a_a, 3);
    expect_ids(o.v, "b", false, false, b, 2);
    close_vocab(&o);
}

/* ---- pieces --------------------------------------------------------------------------- */

static void test_piece_synthetic(void **state)
{
    opened o = open_shared("testdata/llamacpp/tokenizer/synthetic-spm-512.gguf");
    const tok_vocab *v = o.v;
    assert_int_equal(tok_n_vocab(v), 512);
    expect_piece(v, 3 + 0x41, false, "A", 1); /* <0x41> */
    expect_piece(v, 3, false, "\0", 1);       /* <0x00> */
    expect_piece(v, 3 + 0x0A, false, "\n", 1);
    expect_piece(v, 3 + 0xFF, false, "\xFF", 1);
    expect_piece(v, 261, false, " the", 4); /* ▁the */
    expect_piece(v, 482, false, " ", 1);    /* ▁ */
    expect_piece(v, 485, false, "a", 1);
    expect_piece(v, 1, false, "", 0); /* <s>: control, hidden unless special */
    expect_piece(v, 1, true, "<s>", 3);
    expect_piece(v, 0, false, "", 0); /* <unk>: unknown, hidden unless special */
    expect_piece(v, 0, true, "<unk>", 5);
    expect_piece(v, 512, true, "", 0);
    expect_piece(v, -1, true, "", 0);
    char buf[2];
    assert_int_equal(tok_piece(v, 261, false, buf, sizeof buf), 4); /* needs 4, writes 2 */
    assert_memory_equal(buf, " t", 2);
    assert_true(tok_is_control(v, 1));
    assert_false(tok_is_control(v, 261));
    assert_true(tok_is_eog(v, 2));
    assert_false(tok_is_eog(v, 1));
    close_vocab(&o);
}

static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        if (k == 0 || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80) return false;
        i += k;
    }
    return true;
}

/* In llama.cpp's SPM semantics the pieces of tokenize(text) spell " " + text: the space
 * prefix, U+2581 back to ' ', byte tokens back to bytes. */
static void roundtrip(const char *rel_gguf, const char *rel_inp)
{
    opened o = open_shared(rel_gguf);
    char path[1024];
    size_t len;
    TU_SHARED_PATH(path, rel_inp);
    char *inp = tu_read_file(path, &len);
    const char *sep = "\n__ggml_vocab_test__\n";
    int checked = 0;
    for (char *p = inp; p < inp + len;) {
        char *e = strstr(p, sep);
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 0 && valid_utf8(p, n)) {
            tok_ids ids;
            encode(o.v, p, n, false, &ids);
            char *text = malloc(4 * n + 16);
            size_t k = 0;
            for (size_t i = 0; i < ids.n; i++)
                k += tok_piece(o.v, ids.v[i], false, text + k, 4 * n + 16 - k);
            if (k != n + 1 || text[0] != ' ' || memcmp(text + 1, p, n) != 0)
                fail_msg("%s: pieces of \"%.*s\" spell \"%.*s\"", rel_gguf, (int)n, p, (int)k,
                         text);
            free(text);
            tok_ids_free(&ids);
            checked++;
        }
        if (!e) break;
        p = e + strlen(sep);
    }
    assert_true(checked > 40);
    free(inp);
    close_vocab(&o);
}

static void test_roundtrip_spm(void **state)
{
    roundtrip("testdata/llamacpp/tokenizer/synthetic-spm-512.gguf",
              "testdata/llamacpp/tokenizer/synthetic-spm-512.gguf.inp");
    roundtrip("testdata/llamacpp/tokenizer/ggml-vocab-llama-spm.gguf",
              "testdata/llamacpp/tokenizer/ggml-vocab-llama-spm.gguf.inp");
    roundtrip("testdata/llamacpp/tokenizer/ggml-vocab-phi-3.gguf",
              "testdata/llamacpp/tokenizer/ggml-vocab-phi-3.gguf.inp");
}

/* ---- special tokens ------------------------------------------------------------------- */

static void test_parse_special(void **state)
{
    opened o = open_shared("testdata/llamacpp/tokenizer/synthetic-spm-512.gguf");
    const int32_t s[] = {1}, bos_s[] = {1, 1};
    /* the text after a special token gets the space prefix again: ▁a (263), ▁b (273) */
    const int32_t a_s_b[] = {263, 1, 273};
    expect_ids(o.v, "<s>", false, true, s, 1);
    expect_ids(o.v, "<s>", true, true, bos_s, 2);
    expect_ids(o.v, "a<s>b", false, true, a_s_b, 3);
    tok_ids ids;
    encode(o.v, "a<s>b", 5, false, &ids);
    assert_true(ids.n > 3);
    assert_int_equal(ids.v[0], 263);
    for (size_t i = 0; i < ids.n; i++) assert_int_not_equal(ids.v[i], 1);
    tok_ids_free(&ids);
    close_vocab(&o);
}

/* phi-3 (general.name "Phi3"): llama.cpp gives its special tokens RSTRIP, makes "</s>" (a
 * user-defined token there) control and EOG, and counts <|endoftext|> and <|end|> as EOG. */
static void test_phi3_rules(void **state)
{
    opened o = open_shared("testdata/llamacpp/tokenizer/ggml-vocab-phi-3.gguf");
    const tok_vocab *v = o.v;
    assert_true(tok_is_eog(v, 32000)); /* <|endoftext|>, the eos */
    assert_true(tok_is_eog(v, 32007)); /* <|end|> */
    assert_true(tok_is_eog(v, 2));     /* </s> */
    assert_false(tok_is_eog(v, 1));
    assert_true(tok_is_control(v, 2));
    tok_ids a, b;
    encode(v, "<|user|>\n Hi", 12, true, &a);
    encode(v, "<|user|>Hi", 10, true, &b);
    assert_true(a.n > 1);
    assert_int_equal(a.v[0], 32010);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.v, b.v, a.n * sizeof *a.v);
    tok_ids_free(&a);
    tok_ids_free(&b);
    encode(v, "</s>", 4, false, &a); /* control now, so plain text without parse_special */
    for (size_t i = 0; i < a.n; i++) assert_int_not_equal(a.v[i], 2);
    tok_ids_free(&a);
    close_vocab(&o);
}

/* stories260K README section 2: llama.cpp's ids for the prompt, with BOS. */
static void test_stories260k_prompt(void **state)
{
    opened o = open_shared("testdata/stories260K/models/stories260K.F32.gguf");
    const int32_t want[] = {1, 403, 407, 261, 378};
    expect_ids(o.v, "Once upon a time", true, false, want, 5);
    close_vocab(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_tokens),     cmocka_unit_test(test_unknown_model),
        cmocka_unit_test(test_bos_out_of_range),   cmocka_unit_test(test_duplicate_token),
        cmocka_unit_test(test_unknown_pre),        cmocka_unit_test(test_spm_defaults),
        cmocka_unit_test(test_piece_synthetic),    cmocka_unit_test(test_roundtrip_spm),
        cmocka_unit_test(test_parse_special),      cmocka_unit_test(test_phi3_rules),
        cmocka_unit_test(test_stories260k_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
