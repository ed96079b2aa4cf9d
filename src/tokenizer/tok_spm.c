/*
 * tok_spm.c - the SentencePiece (SPM, tokenizer.ggml.model = "llama") encoder for one raw-text
 * fragment, as llama.cpp's llm_tokenizer_spm_session does it: split the text into UTF-8
 * characters, then repeatedly merge the adjacent pair whose concatenation is the vocabulary
 * token with the highest score (ties: the leftmost pair), and finally emit each remaining
 * piece as its token, or as <0xXX> byte tokens when it is not a token. The caller (tok_encode)
 * has already added the space prefix and escaped ' ' as U+2581. Knows nothing of special
 * tokens, BOS/EOS or the other encoders.
 */
#include "tok_int.h"

#include <assert.h>
#include <stdlib.h>

/* A piece of the text: text[off .. off+n), in a doubly linked list of live pieces. A piece
 * merged into its left neighbour keeps n = 0. */
typedef struct tok_spm_sym {
    int32_t prev, next;
    uint32_t off, n;
} tok_spm_sym;

/* A candidate merge of two adjacent pieces. size is their byte length when it was made: if
 * either piece has changed since, the candidate is stale. */
typedef struct tok_spm_bigram {
    float score;
    int32_t left, right;
    uint32_t size;
} tok_spm_bigram;

typedef struct tok_spm_state {
    const tok_vocab *v;
    const char *text;
    tok_spm_sym *syms;
    int32_t n_syms;
    tok_spm_bigram *heap; /* max-heap on (score, -left) */
    size_t n_heap, cap_heap;
} tok_spm_state;

/* Fragments are capped so that piece offsets and counts fit in 32 bits. */
#define SPM_MAX_TEXT ((size_t)1 << 30)

/* llama.cpp's unicode_len_utf8: by the high nibble, so 0xF8..0xFF also count as 4-byte leads
 * (core_utf8_len would say 1). */
static uint32_t tok_spm_utf8_len(unsigned char c)
{
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

/* a comes out of the queue before b: higher score, then the leftmost pair. */
static bool tok_spm_before(const tok_spm_bigram *a, const tok_spm_bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void tok_spm_heap_push(tok_spm_state *s, tok_spm_bigram b)
{
    /* every merge adds at most two candidates, so the heap was sized for all of them */
    assert(s->n_heap < s->cap_heap);
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!tok_spm_before(&b, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = b;
}

static tok_spm_bigram tok_spm_heap_pop(tok_spm_state *s)
{
    tok_spm_bigram top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && tok_spm_before(&s->heap[c + 1], &s->heap[c])) c++;
        if (!tok_spm_before(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n > 0) s->heap[i] = last;
    return top;
}

/* Queues the merge of pieces left and right when their concatenation is a token. */
static void tok_spm_try_bigram(tok_spm_state *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    const tok_spm_sym *l = &s->syms[left], *r = &s->syms[right];
    uint32_t size = l->n + r->n; /* adjacent pieces are contiguous in the text */
    int32_t id = tok_find(s->v, s->text + l->off, size);
    if (id < 0) return;
    tok_spm_heap_push(s, (tok_spm_bigram){s->v->tokens[id].score, left, right, size});
}

static void tok_spm_split_chars(tok_spm_state *s, size_t n)
{
    size_t off = 0;
    s->n_syms = 0;
    while (off < n) {
        uint32_t len = tok_spm_utf8_len((unsigned char)s->text[off]);
        if (len > n - off) len = (uint32_t)(n - off);
        int32_t i = s->n_syms++;
        s->syms[i] = (tok_spm_sym){i - 1, off + len == n ? -1 : i + 1, (uint32_t)off, len};
        off += len;
    }
}

static void tok_spm_merge_all(tok_spm_state *s)
{
    for (int32_t i = 1; i < s->n_syms; i++) tok_spm_try_bigram(s, i - 1, i);
    while (s->n_heap > 0) {
        tok_spm_bigram b = tok_spm_heap_pop(s);
        tok_spm_sym *l = &s->syms[b.left], *r = &s->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = b.left;
        tok_spm_try_bigram(s, l->prev, b.left);
        tok_spm_try_bigram(s, b.left, l->next);
    }
}

/* A piece that is not a token goes out byte by byte. llama.cpp's byte_to_token would throw
 * when a byte has no token at all; mica falls back to the unknown token. */
static mica_status tok_spm_emit_bytes(const tok_spm_state *s, const tok_spm_sym *sym, tok_ids *out,
                                      mica_err *err)
{
    for (uint32_t j = 0; j < sym->n; j++) {
        unsigned char c = (unsigned char)s->text[sym->off + j];
        int32_t id = s->v->byte_ids[c] >= 0 ? s->v->byte_ids[c] : s->v->unk;
        if (id < 0)
            return core_fail(err, MICA_EFORMAT,
                             "SPM vocabulary has no token for byte 0x%02X and no unknown token", c);
        mica_status st = tok_emit(out, id, err);
        if (st) return st;
    }
    return MICA_OK;
}

/* Every merged piece is a token by construction, so only single characters can need the
 * byte fallback (llama.cpp's rev_merge re-split never applies). */
static mica_status tok_spm_emit(const tok_spm_state *s, tok_ids *out, mica_err *err)
{
    for (int32_t i = 0; i != -1; i = s->syms[i].next) {
        const tok_spm_sym *sym = &s->syms[i];
        int32_t id = tok_find(s->v, s->text + sym->off, sym->n);
        mica_status st = id >= 0 ? tok_emit(out, id, err) : tok_spm_emit_bytes(s, sym, out, err);
        if (st) return st;
    }
    return MICA_OK;
}

mica_status tok_spm_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out,
                           mica_err *err)
{
    mica_status st = MICA_OK;
    if (n == 0) return MICA_OK;
    if (n > SPM_MAX_TEXT)
        return core_fail(err, MICA_ENOMEM, "SPM fragment of %zu bytes exceeds the cap of %zu", n,
                         SPM_MAX_TEXT);
    tok_spm_state s = {.v = v, .text = text, .cap_heap = 3 * n};
    s.syms = malloc(n * sizeof *s.syms);
    s.heap = malloc(s.cap_heap * sizeof *s.heap);
    if (!s.syms || !s.heap) {
        st = core_fail(err, MICA_ENOMEM, "out of memory for an SPM fragment of %zu bytes", n);
        goto fail;
    }
    tok_spm_split_chars(&s, n);
    tok_spm_merge_all(&s);
    st = tok_spm_emit(&s, out, err);
fail:
    free(s.syms);
    free(s.heap);
    return st;
}
