/*
 * tok_piece.c - one token id -> its bytes, as llama.cpp's token_to_piece(lstrip = 0): unknown
 * and control tokens render their text only when `special`; user-defined tokens render their
 * text; normal tokens render as SPM/WPM text with U+2581 turned back into ' ', or as the raw
 * bytes behind a byte-level BPE text (tok_bpe_unmap, in tok_bpe.c); byte tokens (<0xXX>)
 * render as that one byte; unused and undefined tokens render as nothing.
 * No detokenizer clean-up (leading-space removal, clean_up_tokenization_spaces) happens here.
 * Called by engine/ (mica_token_to_piece) and the CLI.
 */
#include "tok_int.h"

#include <stdlib.h>
#include <string.h>

/* Copies the n-byte piece p into buf (at most cap bytes); returns n. */
static size_t tok_piece_copy(const char *p, size_t n, char *buf, size_t cap)
{
    if (cap > 0) memcpy(buf, p, n < cap ? n : cap);
    return n;
}

/* SPM and WPM normal tokens: text with every U+2581 replaced by ' '. */
static size_t tok_piece_unescape(const tok_token *t, char *buf, size_t cap)
{
    size_t n = 0;
    for (uint32_t i = 0; i < t->len; n++) {
        char c = t->text[i];
        if (t->len - i >= 3 && memcmp(t->text + i, "\xE2\x96\x81", 3) == 0) {
            c = ' ';
            i += 3;
        } else {
            i++;
        }
        if (n < cap) buf[n] = c;
    }
    return n;
}

static int tok_hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Byte tokens: the hex digits at text[3..5), read like llama.cpp's strtol (stops early on a
 * non-digit; none gives 0). */
static size_t tok_piece_byte(const tok_token *t, char *buf, size_t cap)
{
    if (t->len < 3) return 0;
    int val = 0;
    for (uint32_t i = 3; i < 5 && i < t->len && tok_hex_digit(t->text[i]) >= 0; i++)
        val = val * 16 + tok_hex_digit(t->text[i]);
    char c = (char)val;
    return tok_piece_copy(&c, 1, buf, cap);
}

/* Byte-level BPE: the text's characters map back to raw bytes (never more bytes than the
 * text has). */
static size_t tok_piece_bpe(const tok_token *t, char *buf, size_t cap)
{
    char small[256];
    char *tmp = t->len <= sizeof small ? small : malloc(t->len);
    if (!tmp) return 0;
    size_t n = tok_bpe_unmap(t->text, t->len, tmp);
    tok_piece_copy(tmp, n, buf, cap);
    if (tmp != small) free(tmp);
    return n;
}

size_t tok_piece(const tok_vocab *v, int32_t id, bool special, char *buf, size_t cap)
{
    const uint32_t hidden = TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL;
    if (id < 0 || id >= v->n_tokens) return 0;
    const tok_token *t = &v->tokens[id];
    if (!special && (t->attr & hidden)) return 0;
    if (t->attr & (hidden | TOK_ATTR_USER_DEFINED))
        return tok_piece_copy(t->text, t->len, buf, cap);
    if (t->attr & TOK_ATTR_NORMAL)
        return v->kind == TOK_KIND_BPE ? tok_piece_bpe(t, buf, cap)
                                       : tok_piece_unescape(t, buf, cap);
    if (t->attr & TOK_ATTR_BYTE) return tok_piece_byte(t, buf, cap);
    return 0;
}
