/*
 * tok_wpm.c - WordPiece (tokenizer.ggml.model "bert") as llama.cpp's llm_tokenizer_wpm_session:
 * the fragment is normalized (NFD base letter and accent marks dropped when strip_accents,
 * controls, U+0000 and U+FFFD dropped, lowercased when lowercase) and cut into words at white
 * space, with every punctuation character, ASCII symbol and CJK ideograph a word of its own.
 * Each word, prefixed with U+2581 (the GGUF vocabulary spells word starts "\u2581word" and
 * continuations without HF's "##"), is covered greedily by the longest vocabulary entries;
 * a word that cannot be covered becomes [UNK]. Does not add [CLS]/[SEP] (tok_encode.c).
 * Called by tok_encode.c.
 */
#include "tok_int.h"
#include "tok_unicode.h"

#include <stdlib.h>
#include <string.h>

#define TOK_WPM_MAX_TEXT ((size_t)1 << 28)

static const char tok_wpm_space_mark[] = "\xE2\x96\x81"; /* U+2581 */
#define TOK_WPM_MARK_LEN 3

/* The CJK ranges HF's BERT normalizer isolates (0x2B920, not 0x2B820, as HF writes it). */
static bool tok_wpm_is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Greedy longest-match-first cover of word[0..n) (which starts with U+2581). Appends the ids,
 * or [UNK] alone when some position has no match, as llama.cpp does. */
static mica_status tok_wpm_word(const tok_vocab *v, const char *word, size_t n, tok_ids *out,
                                mica_err *err)
{
    size_t mark = out->n;
    for (size_t i = 0; i < n; i++) {
        size_t j = i + (size_t)v->max_token_len + 1;
        if (j > n) j = n;
        int32_t id = -1;
        for (; j > i && id < 0; j--) id = tok_find(v, word + i, j - i);
        if (id < 0) {
            out->n = mark; /* discard the word's tokens */
            break;
        }
        mica_status st = tok_emit(out, id, err);
        if (st) return st;
        i = j; /* j is one short of the match's end, so the loop's i++ continues there */
    }
    if (out->n == mark && v->unk >= 0) return tok_emit(out, v->unk, err);
    return MICA_OK;
}

typedef struct tok_wpm_buf {
    char *word; /* U+2581 followed by the word's UTF-8 */
    size_t len; /* bytes after the mark */
} tok_wpm_buf;

/* Encodes the pending word (if any) and empties it. */
static mica_status tok_wpm_flush(const tok_vocab *v, tok_wpm_buf *b, tok_ids *out, mica_err *err)
{
    if (b->len == 0) return MICA_OK;
    mica_status st = tok_wpm_word(v, b->word, TOK_WPM_MARK_LEN + b->len, out, err);
    b->len = 0;
    return st;
}

static void tok_wpm_append(tok_wpm_buf *b, uint32_t cp)
{
    b->len += (size_t)core_utf8_encode(cp, b->word + TOK_WPM_MARK_LEN + b->len);
}

/* Handles one code point of the fragment. */
static mica_status tok_wpm_feed(const tok_vocab *v, tok_wpm_buf *b, uint32_t cpt, tok_ids *out,
                                mica_err *err)
{
    if (v->norm_strip_accents) cpt = tok_unfd_base(cpt);
    unsigned cat = tok_ucat(cpt);
    if (tok_uspace(cpt)) return tok_wpm_flush(v, b, out, err);
    if (cpt == 0 || cpt == 0xFFFD || cat == TOK_UCAT_CONTROL) return MICA_OK;
    if (v->norm_strip_accents && cat == TOK_UCAT_MARK) return MICA_OK;
    uint32_t c = v->norm_lowercase ? tok_ulower(cpt) : cpt;
    bool alone =
        cat == TOK_UCAT_PUNCT || (cpt < 0x7F && cat == TOK_UCAT_SYMBOL) || tok_wpm_is_cjk(cpt);
    if (!alone) {
        tok_wpm_append(b, c);
        return MICA_OK;
    }
    mica_status st = tok_wpm_flush(v, b, out, err);
    if (st) return st;
    tok_wpm_append(b, c);
    return tok_wpm_flush(v, b, out, err);
}

mica_status tok_wpm_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out,
                           mica_err *err)
{
    if (n > TOK_WPM_MAX_TEXT)
        return core_fail(err, MICA_ENOMEM, "WPM: fragment of %zu bytes is too long", n);
    /* a word holds at most all n code points, each at most 4 bytes once lowercased */
    tok_wpm_buf b = {malloc(TOK_WPM_MARK_LEN + 4 * n + 1), 0};
    if (!b.word) return core_fail(err, MICA_ENOMEM, "WPM: out of memory for %zu bytes", n);
    memcpy(b.word, tok_wpm_space_mark, TOK_WPM_MARK_LEN);
    mica_status st = MICA_OK;
    for (size_t off = 0; off < n && !st;) {
        size_t l;
        uint32_t cpt = tok_utf8_decode(text + off, n - off, &l);
        off += l;
        st = tok_wpm_feed(v, &b, cpt, out, err);
    }
    if (!st) st = tok_wpm_flush(v, &b, out, err);
    free(b.word);
    return st;
}
