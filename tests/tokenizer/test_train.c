/*
 * test_train.c - tests src/tokenizer/tok_train.c: the merges and tokens equal those of a
 * brute-force BPE written here (every pair recounted at every step over every occurrence,
 * GPT-2's byte map rebuilt from its definition, the same tie rule); the GGUF it writes loads
 * with tok_load and has the keys; random UTF-8 (Chinese, English, digits, emoji, white space)
 * round-trips exactly through the trained vocabulary, and invalid bytes come back as U+FFFD;
 * training twice gives the same file; on the sensor corpus (src/data) the token count it
 * reports equals tok_encode's and is well below one token per byte; bad parameters are errors.
 */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "test_util.h"

#include "data/data.h"
#include "gguf/gguf.h"
#include "tokenizer/tok_int.h"
#include "tokenizer/tok_pre.h"
#include "tokenizer/tok_unicode.h"
#include "tokenizer/tokenizer.h"

#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------- */

typedef struct trained {
    char path[512];
    gguf_file *f;
    tok_vocab *v;
    tok_train_stats stats;
} trained;

static void train_pre(const char *text, size_t len, int32_t n_vocab, const char *pre,
                      const char *name, trained *t)
{
    snprintf(t->path, sizeof t->path, "%s/train_%d_%s.gguf", tu_tmpdir(), (int)getpid(), name);
    tok_train_params p = {.n_vocab = n_vocab, .pre = pre};
    mica_err err = {0};
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    if (tok_train(&p, text, len, w, &t->stats, &err)) fail_msg("tok_train: %s", err.msg);
    if (gguf_writer_write(w, t->path, &err)) fail_msg("write: %s", err.msg);
    gguf_writer_free(w);
    if (gguf_open(&t->f, t->path, &err)) fail_msg("gguf_open: %s", err.msg);
    if (tok_load(&t->v, t->f, &err)) fail_msg("tok_load: %s", err.msg);
}

static void train_to_file(const char *text, size_t len, int32_t n_vocab, const char *name,
                          trained *t)
{
    train_pre(text, len, n_vocab, NULL, name, t);
}

static void trained_free(trained *t)
{
    tok_free(t->v);
    gguf_close(t->f);
    unlink(t->path);
}

static void encode(const tok_vocab *v, const char *text, size_t len, bool special, tok_ids *ids)
{
    mica_err err = {0};
    tok_ids_init(ids, (size_t)1 << 26);
    if (tok_encode(v, text, len, false, special, ids, &err)) fail_msg("tok_encode: %s", err.msg);
}

/* The concatenated pieces of ids (control tokens rendered). */
static char *decode(const tok_vocab *v, const tok_ids *ids, size_t *len)
{
    size_t cap = 64 * ids->n + 1, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (size_t i = 0; i < ids->n; i++) {
        size_t k = tok_piece(v, ids->v[i], true, out + n, cap - n);
        assert_true(k <= cap - n);
        n += k;
    }
    *len = n;
    return out;
}

/* ---- the brute-force reference --------------------------------------------------------- */

/* GPT-2's bytes_to_unicode, from its definition: printable Latin-1 bytes ('!'..'~',
 * '¡'..'¬', '®'..'ÿ') keep their code point, the others take 256, 257, ... in byte order. */
static void ref_byte_map(uint32_t cp_of[256])
{
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        cp_of[b] = printable ? (uint32_t)b : next++;
    }
}

#define REF_MAX_VOCAB 512

typedef struct ref_bpe {
    char *tok[REF_MAX_VOCAB]; /* texts; ids 0..255 are bytes ordered by code point */
    int n_tok;
    char *merge[4 * REF_MAX_VOCAB];
    int n_merge;
    int **seq; /* one symbol sequence per pre-token occurrence */
    int *seq_n;
    size_t n_seq;
} ref_bpe;

static int ref_find(const ref_bpe *r, const char *s)
{
    for (int i = 0; i < r->n_tok; i++)
        if (!strcmp(r->tok[i], s)) return i;
    return -1;
}

static void ref_init(ref_bpe *r, const char *text, size_t len)
{
    memset(r, 0, sizeof *r);
    uint32_t cp_of[256];
    int id_of[256];
    ref_byte_map(cp_of);
    for (uint32_t cp = 0; cp < 324; cp++)
        for (int b = 0; b < 256; b++)
            if (cp_of[b] == cp) {
                r->tok[r->n_tok] = calloc(1, 5);
                core_utf8_encode(cp, r->tok[r->n_tok]);
                id_of[b] = r->n_tok++;
            }
    /* pre-tokens of the whole text at once (no chunks) */
    uint32_t *cps = malloc((len + 1) * sizeof *cps);
    size_t *lens = malloc((len + 1) * sizeof *lens), n_pieces;
    size_t n_cps = tok_utf8_to_cps(text, len, cps);
    mica_err err = {0};
    assert_int_equal(
        tok_pre_split(tok_pre_from_name("qwen2", 5), cps, n_cps, lens, &n_pieces, &err), MICA_OK);
    r->seq = calloc(n_pieces, sizeof *r->seq);
    r->seq_n = calloc(n_pieces, sizeof *r->seq_n);
    for (size_t p = 0, at = 0; p < n_pieces; at += lens[p++]) {
        r->seq[p] = malloc(4 * lens[p] * sizeof(int));
        for (size_t i = 0; i < lens[p]; i++) {
            char u[4];
            int k = core_utf8_encode(cps[at + i], u);
            for (int j = 0; j < k; j++) r->seq[p][r->seq_n[p]++] = id_of[(unsigned char)u[j]];
        }
    }
    r->n_seq = n_pieces;
    free(cps);
    free(lens);
}

/* One step: the most frequent pair (ties: smaller left id, then smaller right id) over all
 * occurrences, merged left to right everywhere. False when no pair is left. */
static bool ref_step(ref_bpe *r)
{
    static long count[REF_MAX_VOCAB][REF_MAX_VOCAB];
    memset(count, 0, sizeof count);
    for (size_t s = 0; s < r->n_seq; s++)
        for (int i = 0; i + 1 < r->seq_n[s]; i++) count[r->seq[s][i]][r->seq[s][i + 1]]++;
    int a = -1, b = -1;
    for (int x = 0; x < r->n_tok; x++)
        for (int y = 0; y < r->n_tok; y++)
            if (count[x][y] > 0 && (a < 0 || count[x][y] > count[a][b])) a = x, b = y;
    if (a < 0) return false;
    char *text = malloc(strlen(r->tok[a]) + strlen(r->tok[b]) + 2);
    sprintf(text, "%s %s", r->tok[a], r->tok[b]);
    bool seen = false;
    for (int m = 0; m < r->n_merge; m++) seen |= !strcmp(r->merge[m], text);
    if (!seen) r->merge[r->n_merge++] = strdup(text);
    sprintf(text, "%s%s", r->tok[a], r->tok[b]);
    int c = ref_find(r, text);
    if (c < 0) {
        c = r->n_tok;
        r->tok[r->n_tok++] = text;
    } else {
        free(text);
    }
    for (size_t s = 0; s < r->n_seq; s++) {
        int n = 0, *q = r->seq[s];
        for (int i = 0; i < r->seq_n[s]; n++) {
            bool hit = i + 1 < r->seq_n[s] && q[i] == a && q[i + 1] == b;
            q[n] = hit ? c : q[i];
            i += hit ? 2 : 1;
        }
        r->seq_n[s] = n;
    }
    return true;
}

static void ref_free(ref_bpe *r)
{
    for (int i = 0; i < r->n_tok; i++) free(r->tok[i]);
    for (int i = 0; i < r->n_merge; i++) free(r->merge[i]);
    for (size_t s = 0; s < r->n_seq; s++) free(r->seq[s]);
    free(r->seq);
    free(r->seq_n);
}

/* A small corpus with repeats, ties, runs of one letter ("aaaa": overlapping pairs), CJK,
 * digits, punctuation, an emoji and white space runs. */
static const char small_corpus[] = "the cat sat on the mat. the cat ate the rat!\n"
                                   "aaaa aaa aa a aaaaa baaab\n"
                                   "温度28.5℃, 湿度62%。温度偏高, 湿度正常。\n"
                                   "Analyze sensor data: temperature 28.5°C, humidity 62%\n"
                                   "状态:警告。超出范围:温度28.5℃(高于26℃)。\n"
                                   "  indented   spaces\tand\ttabs 😀😀 done.\n"
                                   "Status: warning. Status: normal. Status: critical.\n"
                                   "the the the cat cat sat sat 1234567890 0987654321\n";

static void test_matches_brute_force(void **state)
{
    (void)state;
    const int32_t n_vocab = 256 + 120 + TOK_TRAIN_N_SPECIAL;
    trained t;
    train_to_file(small_corpus, sizeof small_corpus - 1, n_vocab, "small", &t);
    ref_bpe r;
    ref_init(&r, small_corpus, sizeof small_corpus - 1);
    while (r.n_tok < n_vocab - TOK_TRAIN_N_SPECIAL && ref_step(&r)) {
    }

    const gguf_kv *toks = gguf_find(t.f, "tokenizer.ggml.tokens");
    const gguf_kv *merges = gguf_find(t.f, "tokenizer.ggml.merges");
    assert_non_null(toks);
    assert_non_null(merges);
    assert_int_equal(toks->arr_n, (uint64_t)r.n_tok + TOK_TRAIN_N_SPECIAL);
    assert_int_equal(merges->arr_n, (uint64_t)r.n_merge);
    for (int i = 0; i < r.n_tok; i++) {
        gguf_str s = gguf_arr_str(t.f, toks, (uint64_t)i);
        if (s.len != strlen(r.tok[i]) || memcmp(s.ptr, r.tok[i], s.len))
            fail_msg("token %d: '%.*s', reference '%s'", i, (int)s.len, s.ptr, r.tok[i]);
    }
    for (int m = 0; m < r.n_merge; m++) {
        gguf_str s = gguf_arr_str(t.f, merges, (uint64_t)m);
        if (s.len != strlen(r.merge[m]) || memcmp(s.ptr, r.merge[m], s.len))
            fail_msg("merge %d: '%.*s', reference '%s'", m, (int)s.len, s.ptr, r.merge[m]);
    }
    /* the reference's final segmentation is what the trainer reports */
    uint64_t ref_tokens = 0;
    for (size_t s = 0; s < r.n_seq; s++) ref_tokens += (uint64_t)r.seq_n[s];
    assert_int_equal(t.stats.n_tokens, ref_tokens);
    assert_int_equal(t.stats.n_bytes, sizeof small_corpus - 1);
    printf("small corpus: %d tokens, %d merges, %.3f tokens/byte\n", t.stats.n_vocab,
           t.stats.n_merges, (double)t.stats.n_tokens / (double)t.stats.n_bytes);
    ref_free(&r);
    trained_free(&t);
}

static void test_gguf_keys(void **state)
{
    (void)state;
    const int32_t n_vocab = 300;
    trained t;
    train_to_file(small_corpus, sizeof small_corpus - 1, n_vocab, "keys", &t);
    const tok_vocab *v = t.v;
    assert_string_equal(tok_model_name(v), "gpt2");
    assert_string_equal(tok_pre_name(v), "qwen2");
    assert_int_equal(tok_n_vocab(v), n_vocab);
    assert_int_equal(t.stats.n_vocab, n_vocab);
    const int32_t eot = n_vocab - 3;
    assert_int_equal(tok_bos(v), eot);
    assert_int_equal(tok_eos(v), eot);
    assert_false(tok_add_bos(v));
    assert_false(tok_add_eos(v));
    static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; i++) {
        char piece[32];
        size_t n = tok_piece(v, eot + i, true, piece, sizeof piece);
        assert_int_equal(n, strlen(specials[i]));
        assert_memory_equal(piece, specials[i], n);
        assert_true(tok_is_control(v, eot + i));
        assert_int_equal(tok_piece(v, eot + i, false, piece, sizeof piece), 0);
    }
    assert_true(tok_is_eog(v, eot));     /* <|endoftext|> */
    assert_true(tok_is_eog(v, eot + 2)); /* <|im_end|> */
    assert_false(tok_is_eog(v, eot + 1));
    int64_t id;
    mica_err err = {0};
    assert_int_equal(gguf_get_int(t.f, "tokenizer.ggml.eot_token_id", &id, &err), MICA_OK);
    assert_int_equal(id, eot + 2);
    const gguf_kv *merges = gguf_find(t.f, "tokenizer.ggml.merges");
    assert_int_equal(merges->arr_n, (uint64_t)(n_vocab - 256 - 3)); /* no repeated results */
    assert_int_equal(t.stats.n_merges, (int32_t)merges->arr_n);
    assert_null(gguf_find(t.f, "general.architecture"));
    /* special-token text is text unless parse_special */
    tok_ids ids;
    encode(v, "<|im_start|>user", 16, true, &ids);
    assert_int_equal(ids.v[0], eot + 1);
    tok_ids_free(&ids);
    encode(v, "<|im_start|>", 12, false, &ids);
    assert_true(ids.n > 1);
    tok_ids_free(&ids);
    trained_free(&t);
}

/* ---- round trip ------------------------------------------------------------------------ */

static void append_cp(core_buf *b, uint32_t cp)
{
    char u[4];
    assert_true(core_buf_append(b, u, (size_t)core_utf8_encode(cp, u)));
}

/* Random valid UTF-8: words, digits, Chinese, emoji, punctuation, white space. */
static void random_text(core_rng *g, core_buf *b)
{
    static const char *const words[] = {"the",  " cat", "Status", ":",   " warning",
                                        ".",    "°C",   "℃",      "，",  "。",
                                        "温度", "湿度", "'s",     "I'm", "<|im_end|>"};
    static const uint32_t spaces[] = {' ', '\n', '\t', '\r', 0x3000, 0xA0};
    b->len = 0;
    int n = 1 + (int)core_rng_below(g, 40);
    for (int i = 0; i < n; i++) {
        switch (core_rng_below(g, 6)) {
        case 0: {
            const char *w = words[core_rng_below(g, sizeof words / sizeof words[0])];
            assert_true(core_buf_append(b, w, strlen(w)));
            break;
        }
        case 1:
            append_cp(b, '0' + (uint32_t)core_rng_below(g, 10));
            break;
        case 2:
            append_cp(b, 0x4E00 + (uint32_t)core_rng_below(g, 0x5000)); /* CJK */
            break;
        case 3:
            append_cp(b, 0x1F600 + (uint32_t)core_rng_below(g, 0x50)); /* emoji */
            break;
        case 4:
            append_cp(b, spaces[core_rng_below(g, sizeof spaces / sizeof spaces[0])]);
            break;
        default:
            append_cp(b, 0x21 + (uint32_t)core_rng_below(g, 0x5E)); /* ASCII */
            break;
        }
    }
}

static void expect_decodes_to(const tok_vocab *v, const char *in, size_t n, const char *want,
                              size_t want_n)
{
    tok_ids ids;
    encode(v, in, n, false, &ids);
    size_t len;
    char *out = decode(v, &ids, &len);
    if (len != want_n || memcmp(out, want, len))
        fail_msg("'%.*s' decodes to '%.*s' (%zu bytes), want %zu bytes", (int)n, in, (int)len, out,
                 len, want_n);
    free(out);
    tok_ids_free(&ids);
}

static void test_round_trip(void **state)
{
    (void)state;
    trained t;
    train_to_file(small_corpus, sizeof small_corpus - 1, 400, "rt", &t);
    core_rng g;
    core_rng_seed(&g, 7);
    core_buf b;
    core_buf_init(&b, 1 << 20);
    for (int i = 0; i < 500; i++) {
        random_text(&g, &b);
        expect_decodes_to(t.v, b.data, b.len, b.data, b.len);
    }
    expect_decodes_to(t.v, small_corpus, sizeof small_corpus - 1, small_corpus,
                      sizeof small_corpus - 1);
    /* invalid UTF-8: each bad byte becomes U+FFFD (the pre-tokenizer decodes as llama.cpp) */
    expect_decodes_to(t.v,
                      "a\xFF"
                      "b",
                      3,
                      "a\xEF\xBF\xBD"
                      "b",
                      5);
    expect_decodes_to(t.v, "\xE4\xB8", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 6);
    core_buf_free(&b);
    trained_free(&t);
}

static void test_deterministic(void **state)
{
    (void)state;
    trained a, b;
    train_to_file(small_corpus, sizeof small_corpus - 1, 350, "det_a", &a);
    train_to_file(small_corpus, sizeof small_corpus - 1, 350, "det_b", &b);
    assert_int_equal(a.f->size, b.f->size);
    assert_memory_equal(a.f->base, b.f->base, a.f->size);
    trained_free(&a);
    trained_free(&b);
}

/* Lines of random text (trailing and leading white space included) make a corpus larger
 * than the trainer's chunks; for each pre-tokenizer the tokens it reports equal those of
 * encoding the whole text, so cutting the text into chunks changed no pre-token. */
static void test_chunks_split_as_whole(void **state)
{
    (void)state;
    core_rng g;
    core_rng_seed(&g, 3);
    core_buf line, text;
    core_buf_init(&line, 1 << 20);
    core_buf_init(&text, 1 << 22);
    while (text.len < 300000) {
        random_text(&g, &line);
        assert_true(core_buf_append(&text, line.data, line.len) && core_buf_append(&text, "\n", 1));
    }
    static const char *const pres[] = {"qwen2", "gpt-2", "default", "llama3", "deepseek-llm"};
    for (size_t i = 0; i < sizeof pres / sizeof pres[0]; i++) {
        trained t;
        train_pre(text.data, text.len, 1024, pres[i], "chunks", &t);
        tok_ids ids;
        encode(t.v, text.data, text.len, false, &ids);
        if (ids.n != t.stats.n_tokens)
            fail_msg("%s: trainer counts %llu tokens, the encoder %zu", pres[i],
                     (unsigned long long)t.stats.n_tokens, ids.n);
        tok_ids_free(&ids);
        trained_free(&t);
    }
    core_buf_free(&line);
    core_buf_free(&text);
}

/* ---- the sensor corpus ------------------------------------------------------------------ */

static void test_sensor_corpus(void **state)
{
    (void)state;
    const data_sensors_opts o = {.seed = 11, .zh = true, .en = true};
    core_buf text;
    core_buf_init(&text, 64 << 20);
    for (uint64_t i = 0; i < 3000; i++) {
        data_record r;
        mica_err err;
        if (data_sensors_record(&o, i, &r, &err)) fail_msg("%s", err.msg);
        assert_true(core_buf_append(&text, r.prompt.data, r.prompt.len) &&
                    core_buf_append(&text, "\n", 1) &&
                    core_buf_append(&text, r.answer.data, r.answer.len) &&
                    core_buf_append(&text, "\n", 1));
        data_record_free(&r);
    }
    const double t0 = core_now();
    trained t;
    train_to_file(text.data, text.len, 2048, "sensors", &t);
    const double secs = core_now() - t0;
    tok_ids ids;
    encode(t.v, text.data, text.len, false, &ids);
    const double per_byte = (double)ids.n / (double)text.len;
    printf("sensor corpus: %zu bytes, %llu distinct pre-tokens, %d tokens (%d merges), "
           "%.3f tokens/byte, %.2f s\n",
           text.len, (unsigned long long)t.stats.n_words, t.stats.n_vocab, t.stats.n_merges,
           per_byte, secs);
    /* the split in chunks and the incremental counts agree with encoding the whole text */
    assert_int_equal(t.stats.n_tokens, ids.n);
    assert_true(per_byte < 0.4);
    size_t len;
    char *back = decode(t.v, &ids, &len);
    assert_int_equal(len, text.len);
    assert_memory_equal(back, text.data, len);
    free(back);
    tok_ids_free(&ids);
    trained_free(&t);
    core_buf_free(&text);
}

static void expect_train_error(const char *text, size_t len, int32_t n_vocab, const char *pre,
                               const char *needle)
{
    tok_train_params p = {.n_vocab = n_vocab, .pre = pre};
    gguf_writer *w = gguf_writer_new();
    mica_err err = {0};
    assert_int_equal(tok_train(&p, text, len, w, NULL, &err), MICA_EINVAL);
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
    gguf_writer_free(w);
}

static void test_errors(void **state)
{
    (void)state;
    expect_train_error("abc", 3, 258, NULL, "vocabulary size 258");
    expect_train_error("abc", 3, (1 << 20) + 1, NULL, "vocabulary size");
    expect_train_error("", 0, 300, NULL, "empty corpus");
    expect_train_error("abc", 3, 300, "nope", "unknown pre-tokenizer 'nope'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_brute_force),
        cmocka_unit_test(test_gguf_keys),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_chunks_split_as_whole),
        cmocka_unit_test(test_sensor_corpus),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
