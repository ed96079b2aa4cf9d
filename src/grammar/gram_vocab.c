/*
 * gram_vocab.c - which tokens may come next (see grammar.h). The vocabulary's pieces are
 * sorted into a byte trie stored in preorder, so one pass over the node array visits every
 * token: each node's stack set is its parent's advanced by one byte, and a node whose set
 * is empty is skipped with its whole subtree. A step therefore costs one advance per live
 * trie node instead of one per token byte. Masks are cached by state (stack words and
 * partial character): the inside of a string or the gap between array items looks the same
 * every time, so most steps cost a hash and a copy of the bits.
 */
#include "grammar.h"

#include <stdlib.h>
#include <string.h>

#define GRAM_MASK_CACHE 32
#define GRAM_MAX_PIECE  65535

typedef struct gram_node {
    int32_t end;                /* preorder index past this node's subtree */
    int32_t tok_begin, tok_end; /* v->toks[tok_begin..tok_end): tokens whose piece ends here */
    uint16_t depth;             /* bytes from the root */
    uint8_t byte;
} gram_node;

struct gram_vocab {
    int32_t n_tokens, n_words; /* n_words: 64-bit words of a mask */
    gram_node *nodes;          /* (n_nodes) preorder; nodes[0] is the root */
    int32_t n_nodes, max_depth;
    int32_t *toks; /* token ids sorted by piece */
    uint64_t *eog; /* (n_words) end-of-generation tokens */
};

typedef struct piece_ref {
    const char *p;
    size_t len;
    int32_t id;
} piece_ref;

static int piece_cmp(const void *a, const void *b)
{
    const piece_ref *x = a, *y = b;
    const size_t n = x->len < y->len ? x->len : y->len;
    const int c = memcmp(x->p, y->p, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The pieces that can be text, sorted; *n_out of them. */
static piece_ref *sorted_pieces(int32_t n_tokens, const char *const *pieces, const size_t *lens,
                                const bool *eog, int32_t *n_out)
{
    piece_ref *refs = malloc((size_t)(n_tokens ? n_tokens : 1) * sizeof *refs);
    if (!refs) return NULL;
    int32_t n = 0;
    for (int32_t t = 0; t < n_tokens; t++)
        if (!eog[t] && lens[t] > 0 && lens[t] <= GRAM_MAX_PIECE)
            refs[n++] = (piece_ref){pieces[t], lens[t], t};
    qsort(refs, (size_t)n, sizeof *refs, piece_cmp);
    *n_out = n;
    return refs;
}

/* Sorted pieces share their prefix with the previous one: only the rest needs new nodes,
 * and nodes come out in preorder. */
static void build_trie(gram_vocab *v, const piece_ref *refs, int32_t n, int32_t *path)
{
    v->nodes[0] = (gram_node){0};
    v->n_nodes = 1;
    path[0] = 0;
    for (int32_t k = 0; k < n; k++) {
        size_t lcp = 0;
        if (k > 0)
            while (lcp < refs[k].len && lcp < refs[k - 1].len &&
                   refs[k].p[lcp] == refs[k - 1].p[lcp])
                lcp++;
        for (size_t d = lcp; d < refs[k].len; d++) {
            const int32_t i = v->n_nodes++;
            v->nodes[i] = (gram_node){0, 0, 0, (uint16_t)(d + 1), (uint8_t)refs[k].p[d]};
            path[d + 1] = i;
        }
        gram_node *node = &v->nodes[path[refs[k].len]];
        if (node->tok_begin == node->tok_end) node->tok_begin = k;
        node->tok_end = k + 1;
        v->toks[k] = refs[k].id;
        if ((int32_t)refs[k].len > v->max_depth) v->max_depth = (int32_t)refs[k].len;
    }
    /* A node's subtree ends at the next node no deeper than it. */
    int32_t *open = path, n_open = 0;
    for (int32_t i = 0; i < v->n_nodes; i++) {
        while (n_open && v->nodes[open[n_open - 1]].depth >= v->nodes[i].depth)
            v->nodes[open[--n_open]].end = i;
        open[n_open++] = i;
    }
    while (n_open) v->nodes[open[--n_open]].end = v->n_nodes;
}

mica_status gram_vocab_new(gram_vocab **out, int32_t n_tokens, const char *const *pieces,
                           const size_t *lens, const bool *eog, mica_err *err)
{
    *out = NULL;
    gram_vocab *v = core_calloc(1, sizeof *v);
    int32_t n = 0;
    piece_ref *refs = v ? sorted_pieces(n_tokens, pieces, lens, eog, &n) : NULL;
    size_t n_nodes = 1, max_len = 0;
    for (int32_t k = 0; k < n; k++) {
        n_nodes += refs[k].len;
        max_len = refs[k].len > max_len ? refs[k].len : max_len;
    }
    int32_t *path = malloc((max_len + 1) * sizeof *path); /* a root-to-node path */
    if (v) {
        v->n_tokens = n_tokens;
        v->n_words = (n_tokens + 63) / 64;
        v->nodes = malloc(n_nodes * sizeof *v->nodes);
        v->toks = malloc((size_t)(n ? n : 1) * sizeof *v->toks);
        v->eog = core_calloc((size_t)(v->n_words ? v->n_words : 1), sizeof *v->eog);
    }
    if (!v || !refs || !path || !v->nodes || !v->toks || !v->eog) {
        free(refs);
        free(path);
        gram_vocab_free(v);
        return core_fail(err, MICA_ENOMEM, "grammar: out of memory for the vocabulary trie");
    }
    build_trie(v, refs, n, path);
    for (int32_t t = 0; t < n_tokens; t++)
        if (eog[t]) v->eog[t >> 6] |= 1ull << (t & 63);
    free(refs);
    free(path);
    *out = v;
    return MICA_OK;
}

void gram_vocab_free(gram_vocab *v)
{
    if (!v) return;
    free(v->nodes);
    free(v->toks);
    free(v->eog);
    free(v);
}

int32_t gram_vocab_n_tokens(const gram_vocab *v)
{
    return v->n_tokens;
}

bool gram_vocab_is_eog(const gram_vocab *v, int32_t t)
{
    return t >= 0 && t < v->n_tokens && ((v->eog[t >> 6] >> (t & 63)) & 1);
}

/* ---- masks --------------------------------------------------------------------------- */

typedef struct mask_entry {
    uint64_t hash, stamp; /* stamp 0: unused */
    uint32_t *key;
    size_t n_key, cap_key;
    uint64_t *bits;
} mask_entry;

typedef struct trie_level {
    gram_stacks stacks;
    gram_utf8 partial;
} trie_level;

struct gram_masker {
    const gram_vocab *v;
    trie_level *levels; /* (max_depth + 1); level d: the stacks after d bytes of a piece */
    gram_work work;
    mask_entry cache[GRAM_MASK_CACHE];
    uint64_t clock;
    uint32_t *key; /* the current state as words */
    size_t cap_key;
};

mica_status gram_masker_new(gram_masker **out, const gram_vocab *v, mica_err *err)
{
    *out = NULL;
    gram_masker *m = core_calloc(1, sizeof *m);
    if (m) m->levels = core_calloc((size_t)v->max_depth + 1, sizeof *m->levels);
    bool ok = m && m->levels;
    for (int i = 0; ok && i < GRAM_MASK_CACHE; i++)
        ok = (m->cache[i].bits = core_calloc((size_t)v->n_words + 1, sizeof(uint64_t))) != NULL;
    if (!ok) {
        gram_masker_free(m);
        return core_fail(err, MICA_ENOMEM, "grammar: out of memory for token masks");
    }
    m->v = v;
    *out = m;
    return MICA_OK;
}

void gram_masker_free(gram_masker *m)
{
    if (!m) return;
    for (int32_t d = 0; m->levels && d <= m->v->max_depth; d++)
        gram_stacks_free(&m->levels[d].stacks);
    free(m->levels);
    for (int i = 0; i < GRAM_MASK_CACHE; i++) {
        free(m->cache[i].key);
        free(m->cache[i].bits);
    }
    gram_work_free(&m->work);
    free(m->key);
    free(m);
}

/* The state as words: the partial character, then the stack records. */
static bool state_key(gram_masker *m, const gram_state *st, size_t *n)
{
    *n = st->stacks.n_w + 2;
    if (*n > m->cap_key) {
        uint32_t *k = realloc(m->key, *n * 2 * sizeof *k);
        if (!k) return false;
        m->key = k;
        m->cap_key = *n * 2;
    }
    m->key[0] = st->partial.value;
    m->key[1] = (uint32_t)st->partial.n_left | (uint32_t)st->partial.n_total << 8;
    if (st->stacks.n_w) memcpy(m->key + 2, st->stacks.w, st->stacks.n_w * sizeof *m->key);
    return true;
}

static uint64_t key_hash(const uint32_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 1099511628211ull;
    return h;
}

static mask_entry *cache_find(gram_masker *m, uint64_t h, size_t n)
{
    for (int i = 0; i < GRAM_MASK_CACHE; i++) {
        mask_entry *e = &m->cache[i];
        if (e->stamp && e->hash == h && e->n_key == n && !memcmp(e->key, m->key, n * 4)) return e;
    }
    return NULL;
}

static mask_entry *cache_victim(gram_masker *m)
{
    mask_entry *lru = &m->cache[0];
    for (int i = 1; i < GRAM_MASK_CACHE; i++)
        if (m->cache[i].stamp < lru->stamp) lru = &m->cache[i];
    return lru;
}

/* One preorder pass over the trie with the state's stacks: sets the bit of every token
 * whose bytes the grammar takes. */
static mica_status walk_trie(gram_masker *m, const gram_state *st, uint64_t *bits)
{
    const gram_vocab *v = m->v;
    memset(bits, 0, (size_t)v->n_words * sizeof *bits);
    for (int32_t i = 1; i < v->n_nodes;) {
        const gram_node *node = &v->nodes[i];
        const int32_t d = node->depth;
        const gram_stacks *in = d == 1 ? &st->stacks : &m->levels[d - 1].stacks;
        const gram_utf8 partial = d == 1 ? st->partial : m->levels[d - 1].partial;
        trie_level *lv = &m->levels[d];
        if (gram_step_byte(st->g, in, partial, node->byte, &lv->stacks, &lv->partial, &m->work))
            return MICA_ENOMEM;
        if (lv->stacks.n == 0) {
            i = node->end;
            continue;
        }
        for (int32_t k = node->tok_begin; k < node->tok_end; k++) {
            const int32_t t = v->toks[k];
            bits[t >> 6] |= 1ull << (t & 63);
        }
        /* Only finished stacks: nothing can extend this piece. */
        i = lv->stacks.n == lv->stacks.n_empty ? node->end : i + 1;
    }
    if (gram_state_can_end(st))
        for (int32_t w = 0; w < v->n_words; w++) bits[w] |= v->eog[w];
    return MICA_OK;
}

mica_status gram_masker_mask(gram_masker *m, const gram_state *st, const uint64_t **bits,
                             mica_err *err)
{
    size_t n;
    if (!state_key(m, st, &n)) return core_fail(err, MICA_ENOMEM, "grammar: out of memory");
    const uint64_t h = key_hash(m->key, n);
    mask_entry *e = cache_find(m, h, n);
    if (!e) {
        e = cache_victim(m);
        e->stamp = 0;
        if (walk_trie(m, st, e->bits))
            return core_fail(err, MICA_ENOMEM, "grammar: too many parse stacks");
        if (n > e->cap_key) {
            uint32_t *k = realloc(e->key, n * sizeof *k);
            if (!k) return core_fail(err, MICA_ENOMEM, "grammar: out of memory");
            e->key = k;
            e->cap_key = n;
        }
        memcpy(e->key, m->key, n * sizeof *e->key);
        e->n_key = n;
        e->hash = h;
    }
    e->stamp = ++m->clock;
    *bits = e->bits;
    return MICA_OK;
}
