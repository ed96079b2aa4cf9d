/*
 * gram_match.c - following a document through a grammar (see grammar.h). The state is a set
 * of stacks of element positions, as in llama.cpp's llama_grammar: each stack's top is a
 * character class that may come next, the positions below it are where to resume when the
 * rules above finish, and an empty stack means the document is complete. A code point
 * advances every stack whose top takes it; the new tops are then expanded through rule
 * references and finished rules until each is a class again. Bytes of a multi-byte UTF-8
 * character only narrow the set (stacks whose class can take no character starting with those
 * bytes are dropped) until the character is whole; overlong forms, surrogates and bytes that
 * cannot start or continue a character are refused, so accepted text is always valid UTF-8.
 */
#include "grammar.h"

#include <stdlib.h>
#include <string.h>

#define GRAM_MAX_WORDS  (1u << 24) /* words of one stack set or work list */
#define GRAM_MAX_STACKS (1 << 16)  /* stacks in one set: beyond that a grammar is too ambiguous */

/* ---- stack sets ---------------------------------------------------------------------- */

static void stacks_clear(gram_stacks *s)
{
    s->n_w = 0;
    s->n = 0;
    s->n_empty = 0;
}

void gram_stacks_free(gram_stacks *s)
{
    free(s->w);
    free(s->off);
    free(s->hash);
    memset(s, 0, sizeof *s);
}

static uint64_t hash_words(const uint32_t *w, uint32_t n)
{
    uint64_t h = 1469598103934665603ull ^ n;
    for (uint32_t i = 0; i < n; i++) h = (h ^ w[i]) * 1099511628211ull;
    return h;
}

static bool grow_words(uint32_t **w, size_t *cap, size_t need)
{
    if (need <= *cap) return true;
    if (need > GRAM_MAX_WORDS) return false;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    uint32_t *p = realloc(*w, c * sizeof *p);
    if (!p) return false;
    *w = p;
    *cap = c;
    return true;
}

static bool grow_records(gram_stacks *s)
{
    if (s->n < s->cap) return true;
    if (s->n >= GRAM_MAX_STACKS) return false;
    const int32_t cap = s->cap ? s->cap * 2 : 16;
    uint32_t *off = realloc(s->off, (size_t)cap * sizeof *off);
    if (off) s->off = off;
    uint64_t *hash = realloc(s->hash, (size_t)cap * sizeof *hash);
    if (hash) s->hash = hash;
    if (!off || !hash) return false;
    s->cap = cap;
    return true;
}

/* Adds stack w[0..n) unless the set holds it already; false at a cap. w must not point into
 * s itself. */
static bool stacks_add(gram_stacks *s, const uint32_t *w, uint32_t n)
{
    const uint64_t h = hash_words(w, n);
    for (int32_t i = 0; i < s->n; i++) {
        const uint32_t *r = s->w + s->off[i];
        if (s->hash[i] == h && r[0] == n && !memcmp(r + 1, w, n * sizeof *w)) return true;
    }
    if (!grow_records(s) || !grow_words(&s->w, &s->cap_w, s->n_w + n + 1)) return false;
    s->off[s->n] = (uint32_t)s->n_w;
    s->hash[s->n] = h;
    s->w[s->n_w] = n;
    if (n) memcpy(s->w + s->n_w + 1, w, n * sizeof *w);
    s->n_w += n + 1;
    s->n++;
    s->n_empty += n == 0;
    return true;
}

bool gram_stacks_copy(gram_stacks *dst, const gram_stacks *src)
{
    stacks_clear(dst);
    while (dst->cap < src->n)
        if (!grow_records(dst)) return false;
    if (!grow_words(&dst->w, &dst->cap_w, src->n_w)) return false;
    if (src->n_w) memcpy(dst->w, src->w, src->n_w * sizeof *dst->w);
    if (src->n) {
        memcpy(dst->off, src->off, (size_t)src->n * sizeof *dst->off);
        memcpy(dst->hash, src->hash, (size_t)src->n * sizeof *dst->hash);
    }
    dst->n_w = src->n_w;
    dst->n = src->n;
    dst->n_empty = src->n_empty;
    return true;
}

/* ---- expansion ----------------------------------------------------------------------- */

void gram_work_free(gram_work *w)
{
    free(w->todo);
    free(w->tmp);
    memset(w, 0, sizeof *w);
}

static bool is_end(uint32_t t)
{
    return t == GRAM_END || t == GRAM_ALT;
}

/* Queues the stack prefix[0..n) + [extra] (extra < 0: nothing) on the work list. */
static bool todo_push(gram_work *wk, const uint32_t *prefix, uint32_t n, int64_t extra)
{
    const uint32_t len = n + (extra >= 0);
    if (!grow_words(&wk->todo, &wk->cap_todo, wk->n_todo + len + 1)) return false;
    if (n) memcpy(wk->todo + wk->n_todo, prefix, n * sizeof *prefix);
    if (extra >= 0) wk->todo[wk->n_todo + n] = (uint32_t)extra;
    wk->todo[wk->n_todo + len] = len;
    wk->n_todo += len + 1;
    return true;
}

/* Takes the last queued stack into wk->tmp; returns its length. */
static uint32_t todo_pop(gram_work *wk)
{
    const uint32_t n = wk->todo[--wk->n_todo];
    wk->n_todo -= n;
    memcpy(wk->tmp, wk->todo + wk->n_todo, n * sizeof *wk->tmp);
    return n;
}

/* Expands the queued stacks until every top is a class (or the stack is empty) into out.
 * Terminates because gram_parse refuses left recursion. */
static bool expand(const gram *g, gram_work *wk, gram_stacks *out)
{
    while (wk->n_todo) {
        if (!grow_words(&wk->tmp, &wk->cap_tmp, wk->n_todo + 1)) return false;
        const uint32_t n = todo_pop(wk);
        const gram_elem *top = n ? &g->elems[wk->tmp[n - 1]] : NULL;
        if (!top || top->type != GRAM_RULE) {
            if (!stacks_add(out, wk->tmp, n)) return false;
            continue;
        }
        /* A reference: resume after it (unless it ends its alternative), under each
         * alternative of the rule it names. */
        const uint32_t pos = wk->tmp[n - 1];
        uint32_t base = n - 1;
        if (!is_end(g->elems[pos + 1].type)) wk->tmp[base++] = pos + 1;
        const int32_t r = (int32_t)top->value;
        for (int32_t a = g->alt_first[r + 1] - 1; a >= g->alt_first[r]; a--) {
            const int32_t start = g->alt_pos[a];
            if (!todo_push(wk, wk->tmp, base, is_end(g->elems[start].type) ? -1 : start))
                return false;
        }
    }
    return true;
}

/* Every stack whose top takes code point c, moved past it and expanded. */
static bool advance_cp(const gram *g, const gram_stacks *in, uint32_t c, gram_stacks *out,
                       gram_work *wk)
{
    for (int32_t i = 0; i < in->n; i++) {
        const uint32_t *r = in->w + in->off[i];
        const uint32_t n = r[0];
        if (!n || !gram_class_match(g, (int32_t)r[n], c)) continue;
        const int32_t next = g->after[r[n]];
        wk->n_todo = 0;
        if (!todo_push(wk, r + 1, n - 1, is_end(g->elems[next].type) ? -1 : next) ||
            !expand(g, wk, out))
            return false;
    }
    return true;
}

/* ---- UTF-8 --------------------------------------------------------------------------- */

typedef enum utf8_result { UTF8_BAD, UTF8_PARTIAL, UTF8_DONE } utf8_result;

static const uint32_t utf8_min[5] = {0, 0, 0x80, 0x800, 0x10000}; /* below: overlong */

/* Adds byte b to p. DONE: *lo is the code point. PARTIAL: [*lo, *hi] are the code points
 * the character may still become. */
static utf8_result utf8_step(gram_utf8 *p, uint8_t b, uint32_t *lo, uint32_t *hi)
{
    if (p->n_left == 0) {
        if (b < 0x80) {
            *lo = b;
            return UTF8_DONE;
        }
        if (b >= 0xC2 && b <= 0xDF)
            *p = (gram_utf8){b & 0x1Fu, 1, 2};
        else if (b >= 0xE0 && b <= 0xEF)
            *p = (gram_utf8){b & 0x0Fu, 2, 3};
        else if (b >= 0xF0 && b <= 0xF4)
            *p = (gram_utf8){b & 0x07u, 3, 4};
        else
            return UTF8_BAD;
    } else {
        if ((b & 0xC0) != 0x80) return UTF8_BAD;
        p->value = p->value << 6 | (b & 0x3Fu);
        p->n_left--;
    }
    const unsigned shift = 6u * p->n_left;
    uint32_t a = p->value << shift, z = a | ((1u << shift) - 1);
    if (a < utf8_min[p->n_total]) a = utf8_min[p->n_total];
    if (z > 0x10FFFF) z = 0x10FFFF;
    if (a > z || (a >= 0xD800 && z <= 0xDFFF)) return UTF8_BAD;
    *lo = a;
    *hi = z;
    if (p->n_left) return UTF8_PARTIAL;
    *p = (gram_utf8){0, 0, 0};
    return UTF8_DONE;
}

/* Whether the class at p takes some code point in [lo, hi]. */
static bool class_may_take(const gram *g, int32_t p, uint32_t lo, uint32_t hi)
{
    const gram_elem *e = g->elems;
    if (e[p].type == GRAM_CHAR_ANY) return true;
    const bool negated = e[p].type == GRAM_CHAR_NOT;
    /* Positive: some item meets [lo, hi]. Negated: some x in [lo, hi] is in no item; x
     * jumps past each item that holds it. */
    for (uint32_t x = lo;;) {
        bool moved = false;
        int32_t q = p;
        do {
            const uint32_t a = e[q].value;
            uint32_t z = a;
            if (e[q + 1].type == GRAM_CHAR_RNG) z = e[++q].value;
            q++;
            if (!negated && a <= hi && z >= lo) return true;
            if (negated && a <= x && x <= z) {
                if (z >= hi) return false;
                x = z + 1;
                moved = true;
            }
        } while (e[q].type == GRAM_CHAR_ALT);
        if (!negated) return false;
        if (!moved) return true;
    }
}

/* The stacks that could take some character in [lo, hi]. */
static bool filter_partial(const gram *g, const gram_stacks *in, uint32_t lo, uint32_t hi,
                           gram_stacks *out)
{
    for (int32_t i = 0; i < in->n; i++) {
        const uint32_t *r = in->w + in->off[i];
        if (r[0] && class_may_take(g, (int32_t)r[r[0]], lo, hi) && !stacks_add(out, r + 1, r[0]))
            return false;
    }
    return true;
}

mica_status gram_step_byte(const gram *g, const gram_stacks *in, gram_utf8 partial, uint8_t b,
                           gram_stacks *out, gram_utf8 *out_partial, gram_work *w)
{
    stacks_clear(out);
    uint32_t lo = 0, hi = 0;
    const utf8_result r = utf8_step(&partial, b, &lo, &hi);
    *out_partial = partial;
    bool ok = true;
    if (r == UTF8_DONE) ok = advance_cp(g, in, lo, out, w);
    if (r == UTF8_PARTIAL) ok = filter_partial(g, in, lo, hi, out);
    return ok ? MICA_OK : MICA_ENOMEM;
}

/* ---- the matcher --------------------------------------------------------------------- */

mica_status gram_state_init(gram_state *st, const gram *g, mica_err *err)
{
    memset(st, 0, sizeof *st);
    st->g = g;
    const int32_t r = g->root;
    bool ok = true;
    for (int32_t a = g->alt_first[r]; a < g->alt_first[r + 1] && ok; a++) {
        const int32_t start = g->alt_pos[a];
        ok = todo_push(&st->work, NULL, 0, is_end(g->elems[start].type) ? -1 : start);
    }
    if (!ok || !expand(g, &st->work, &st->stacks)) {
        gram_state_free(st);
        return core_fail(err, MICA_ENOMEM, "grammar: too many parse stacks");
    }
    return MICA_OK;
}

void gram_state_free(gram_state *st)
{
    gram_stacks_free(&st->stacks);
    gram_stacks_free(&st->spare[0]);
    gram_stacks_free(&st->spare[1]);
    gram_work_free(&st->work);
}

mica_status gram_state_accept(gram_state *st, const char *bytes, size_t n, mica_err *err)
{
    const gram_stacks *in = &st->stacks;
    gram_utf8 partial = st->partial;
    int cur = 0;
    for (size_t i = 0; i < n; i++, cur ^= 1) {
        gram_stacks *out = &st->spare[cur];
        if (gram_step_byte(st->g, in, partial, (uint8_t)bytes[i], out, &partial, &st->work))
            return core_fail(err, MICA_ENOMEM, "grammar: too many parse stacks");
        if (out->n == 0)
            return core_fail(err, MICA_EINVAL, "grammar: byte %zu of the text is not allowed", i);
        in = out;
    }
    if (n) {
        /* The last set written becomes the state; the old one becomes a spare. */
        const gram_stacks done = st->spare[cur ^ 1];
        st->spare[cur ^ 1] = st->stacks;
        st->stacks = done;
    }
    st->partial = partial;
    return MICA_OK;
}

bool gram_state_can_end(const gram_state *st)
{
    return st->partial.n_left == 0 && st->stacks.n_empty > 0;
}

bool gram_state_done(const gram_state *st)
{
    return gram_state_can_end(st) && st->stacks.n == st->stacks.n_empty;
}
