/*
 * tok_bpe.c - byte-level BPE as llama.cpp's llm_tokenizer_bpe_session: the fragment is split
 * into pre-tokens (tok_pre.c), each pre-token's UTF-8 bytes are spelled with GPT-2's
 * bytes_to_unicode characters, adjacent symbols are merged lowest merge rank first (ties:
 * leftmost), and each final symbol becomes its token id, or, when the vocabulary lacks it, the
 * ids of its single bytes that are tokens (the others are dropped, as llama.cpp drops them).
 * Also the inverse byte mapping for token_to_piece. Does not handle special tokens or
 * BOS/EOS (tok_encode.c). Called by tok_encode.c (fragments) and tok_piece.c (unmap).
 */
#include "tok_int.h"
#include "tok_pre.h"
#include "tok_unicode.h"

#include <stdlib.h>
#include <string.h>

/* Fragments are capped by tok_encode.c; this bounds our own arrays independently. */
#define TOK_BPE_MAX_CPS ((size_t)1 << 28)

/* ---- GPT-2 bytes_to_unicode ------------------------------------------------------------ */

/* Printable Latin-1 bytes stand for themselves; the other 68 bytes, in increasing order, take
 * the code points 256, 257, ... (0x00-0x20 -> 256-288, 0x7F-0xA0 -> 289-322, 0xAD -> 323). */
static uint32_t tok_bpe_byte_cp(unsigned char b)
{
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return 289u + (b - 0x7Fu);
    if (b == 0xAD) return 323u;
    return b;
}

/* The byte a code point of a byte-level token stands for, or -1. */
static int tok_bpe_cp_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp >= 256 && cp <= 288) return (int)(cp - 256);
    if (cp >= 289 && cp <= 322) return (int)(cp - 289 + 0x7F);
    if (cp == 323) return 0xAD;
    return -1;
}

size_t tok_bpe_unmap(const char *text, size_t len, char *out)
{
    size_t n = 0;
    for (size_t off = 0; off < len;) {
        size_t l;
        int b = tok_bpe_cp_byte(tok_utf8_decode(text + off, len - off, &l));
        if (b >= 0) {
            out[n++] = (char)b;
        } else {
            /* not a mapped character (llama.cpp writes an [UNK_BYTE_0x..] marker here, which
             * can be longer than the text): keep its bytes as they are */
            memcpy(out + n, text + off, l);
            n += l;
        }
        off += l;
    }
    return n;
}

/* ---- merging --------------------------------------------------------------------------- */

typedef struct bpe_sym {
    uint32_t off, len;  /* bytes of the mapped word */
    int32_t prev, next; /* -1 at the ends */
} bpe_sym;

typedef struct bpe_pair {
    int32_t rank;
    int32_t left, right;
    uint32_t len; /* left.len + right.len when queued: stale once either side changed */
} bpe_pair;

/* Scratch shared by all pre-tokens of one fragment, sized for the longest. */
typedef struct bpe_work {
    const tok_vocab *v;
    char *word; /* the mapped pre-token */
    size_t word_len;
    bpe_sym *syms;
    bpe_pair *heap;
    size_t n_heap;
} bpe_work;

static bool bpe_before(const bpe_pair *a, const bpe_pair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void bpe_heap_push(bpe_work *w, bpe_pair p)
{
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bpe_before(&p, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = p;
}

static bpe_pair bpe_heap_pop(bpe_work *w)
{
    bpe_pair top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0;
    for (;;) {
        size_t kid = 2 * i + 1;
        if (kid >= w->n_heap) break;
        if (kid + 1 < w->n_heap && bpe_before(&w->heap[kid + 1], &w->heap[kid])) kid++;
        if (!bpe_before(&w->heap[kid], &last)) break;
        w->heap[i] = w->heap[kid];
        i = kid;
    }
    if (w->n_heap > 0) w->heap[i] = last;
    return top;
}

/* Queues the pair (left, right) when the vocabulary has that merge. */
static void bpe_try_pair(bpe_work *w, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    const bpe_sym *l = &w->syms[left], *r = &w->syms[right];
    int32_t rank = tok_merge_rank(w->v, w->word + l->off, l->len, w->word + r->off, r->len);
    if (rank < 0) return;
    bpe_heap_push(w, (bpe_pair){rank, left, right, l->len + r->len});
}

/* One symbol per UTF-8 character of the mapped word (llama.cpp's unicode_len_utf8 lengths). */
static int32_t bpe_split_chars(bpe_work *w)
{
    int32_t n = 0;
    for (size_t off = 0; off < w->word_len; n++) {
        size_t l = (size_t)core_utf8_len((unsigned char)w->word[off]);
        if (l > w->word_len - off) l = w->word_len - off;
        w->syms[n] = (bpe_sym){(uint32_t)off, (uint32_t)l, n - 1, -1};
        if (n > 0) w->syms[n - 1].next = n;
        off += l;
    }
    return n;
}

/* Merges the word's symbols in place (symbol 0 stays the first). A right symbol only ever
 * disappears into its left neighbour and a left one only grows by absorbing its right one, so
 * a queued pair is current exactly when both are alive with their queued total length. */
static void bpe_merge(bpe_work *w, int32_t n_syms)
{
    w->n_heap = 0;
    for (int32_t i = 1; i < n_syms; i++) bpe_try_pair(w, i - 1, i);
    while (w->n_heap > 0) {
        bpe_pair p = bpe_heap_pop(w);
        bpe_sym *l = &w->syms[p.left], *r = &w->syms[p.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != p.len) continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) w->syms[r->next].prev = p.left;
        bpe_try_pair(w, l->prev, p.left);
        bpe_try_pair(w, p.left, l->next);
    }
}

/* A final symbol: its id, or the ids of those of its single bytes that are tokens. */
static mica_status bpe_emit_symbol(const bpe_work *w, const bpe_sym *s, tok_ids *out, mica_err *err)
{
    const char *text = w->word + s->off;
    int32_t id = tok_find(w->v, text, s->len);
    if (id >= 0) return tok_emit(out, id, err);
    for (uint32_t k = 0; k < s->len; k++) {
        int32_t b = tok_find(w->v, text + k, 1);
        mica_status st = b >= 0 ? tok_emit(out, b, err) : MICA_OK;
        if (st) return st;
    }
    return MICA_OK;
}

/* Spells cps[0..n) as UTF-8 bytes, each byte written as its bytes_to_unicode character. */
static void bpe_map_word(bpe_work *w, const uint32_t *cps, size_t n)
{
    w->word_len = 0;
    for (size_t i = 0; i < n; i++) {
        char raw[4];
        int rn = core_utf8_encode(cps[i], raw);
        for (int k = 0; k < rn; k++)
            w->word_len += (size_t)core_utf8_encode(tok_bpe_byte_cp((unsigned char)raw[k]),
                                                    w->word + w->word_len);
    }
}

static mica_status bpe_encode_word(bpe_work *w, const uint32_t *cps, size_t n, tok_ids *out,
                                   mica_err *err)
{
    bpe_map_word(w, cps, n);
    if (w->v->ignore_merges && tok_find(w->v, w->word, w->word_len) >= 0) {
        w->syms[0] = (bpe_sym){0, (uint32_t)w->word_len, -1, -1};
    } else {
        bpe_merge(w, bpe_split_chars(w));
    }
    for (int32_t i = 0; i >= 0; i = w->syms[i].next) {
        mica_status st = bpe_emit_symbol(w, &w->syms[i], out, err);
        if (st) return st;
    }
    return MICA_OK;
}

mica_status tok_bpe_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out,
                           mica_err *err)
{
    if (n == 0) return MICA_OK;
    if (n > TOK_BPE_MAX_CPS)
        return core_fail(err, MICA_ENOMEM, "BPE: fragment of %zu bytes is too long", n);
    mica_status st = MICA_ENOMEM;
    bpe_work w = {.v = v};
    uint32_t *cps = malloc(n * sizeof *cps);
    size_t *lens = malloc(n * sizeof *lens);
    if (!cps || !lens) goto fail_nomem;
    size_t n_cps = tok_utf8_to_cps(text, n, cps), n_pieces = 0;
    if ((st = tok_pre_split(v->pre, cps, n_cps, lens, &n_pieces, err))) goto done;

    size_t longest = 0;
    for (size_t p = 0; p < n_pieces; p++) longest = lens[p] > longest ? lens[p] : longest;
    /* a code point is at most 4 UTF-8 bytes, each mapped to at most 2 bytes (and 1 symbol) */
    w.word = malloc(8 * longest + 1);
    w.syms = malloc((4 * longest + 1) * sizeof *w.syms);
    /* queued pairs: n - 1 at first, at most 2 more per merge (n - 1 merges) */
    w.heap = malloc((3 * 4 * longest + 1) * sizeof *w.heap);
    if (!w.word || !w.syms || !w.heap) goto fail_nomem;

    size_t start = 0;
    for (size_t p = 0; p < n_pieces && !st; p++) {
        st = bpe_encode_word(&w, cps + start, lens[p], out, err);
        start += lens[p];
    }
    goto done;

fail_nomem:
    st = core_fail(err, MICA_ENOMEM, "BPE: out of memory for a %zu-byte fragment", n);
done:
    free(cps);
    free(lens);
    free(w.word);
    free(w.syms);
    free(w.heap);
    return st;
}
