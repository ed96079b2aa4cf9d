/*
 * tok_train.c - trains a byte-level BPE vocabulary the way GPT-2's was made, for the models
 * mica trains itself. The text is cut into pre-tokens by one of llama.cpp's pre-tokenizers
 * (tok_pre.c, the split the encoder uses later), equal pre-tokens are counted once as words,
 * each word is spelled with GPT-2's 256 byte symbols, and the most frequent adjacent pair of
 * symbols is merged into a new token, again and again, until the vocabulary is full. Pair
 * counts are kept up to date incrementally: each pair knows the words it occurs in, so a merge
 * only revisits those words, and the pairs sit in a heap ordered by count. Ties go to the pair
 * whose left, then right, token id is smallest (ids follow creation order), so a corpus
 * always gives the same vocabulary.
 *
 * The vocabulary: ids 0..255 are the byte symbols in GPT-2's order (by code point), then one
 * token per merge (a merge whose result already exists adds no token), then the control
 * tokens <|endoftext|> (BOS, EOS, padding), <|im_start|> and <|im_end|> (EOT) of ChatML.
 * Writes the tokenizer.* keys into a gguf_writer; does not write files. Called by
 * `mica tokenizer train` (src/cli/cmd_tokenizer.c).
 */
#include "tok_int.h"
#include "tok_pre.h"
#include "tok_unicode.h"

#include <stdlib.h>
#include <string.h>

#define TT_MAX_VOCAB (1 << 20)
/* Pre-tokenized at once: at least TT_CHUNK bytes, then up to a line break where every
 * pre-tokenizer cuts anyway; without one, at TT_CHUNK_MAX bytes (bounds the scratch). */
#define TT_CHUNK     ((size_t)64 << 10)
#define TT_CHUNK_MAX ((size_t)4 << 20)

static const char *const tt_special[TOK_TRAIN_N_SPECIAL] = {"<|endoftext|>", "<|im_start|>",
                                                            "<|im_end|>"};

typedef struct tt_word {
    const char *key; /* the pre-token's bytes, in the caller's text */
    uint32_t key_len;
    uint32_t n; /* symbols, at syms[off..off+n) */
    size_t off;
    uint64_t count; /* occurrences in the corpus */
    uint32_t stamp; /* the merge step that last visited it */
} tt_word;

typedef struct tt_pair {
    int32_t a, b;    /* token ids, left and right */
    int64_t count;   /* occurrences in the corpus: the sum of its words' counts */
    int32_t heap_at; /* position in the heap */
    bool merged;
    uint32_t *words; /* words it occurred in since its last merge (repeats, stale entries) */
    uint32_t n_words, cap_words;
} tt_pair;

/* (left, right) -> pair index; open addressing, grown at half load. */
typedef struct tt_pairmap {
    uint64_t *keys;
    int32_t *vals; /* -1 = empty */
    size_t n_slots, n_used;
} tt_pairmap;

typedef struct tt_token {
    char *text; /* GPT-2 symbol spelling, NUL-terminated */
    uint32_t len;
} tt_token;

typedef struct tt_state {
    const tok_train_params *p;
    int pre;
    tt_word *words;
    size_t n_words, cap_words;
    tok_map word_ids; /* key bytes -> word index */
    uint64_t word_ids_room;
    int32_t *syms; /* all words' symbols */

    tt_token *tokens;
    int32_t n_tokens;
    tok_map token_ids; /* text -> id, to find merges whose result exists */
    int32_t byte_id[256];
    char **merges; /* "left right", in merge order */
    int32_t n_merges, cap_merges;

    tt_pair *pairs;
    int32_t n_pairs, cap_pairs;
    tt_pairmap pair_ids;
    int32_t *heap; /* pair indices, best first */
    uint32_t step;
} tt_state;

/* ---- byte symbols ---------------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the 68 others take
 * the code points 256..323. Read back through tok_bpe_unmap, the one definition of the map. */
static void tt_byte_cps(uint32_t cp_of[256])
{
    for (int b = 0; b < 256; b++) cp_of[b] = (uint32_t)b;
    for (uint32_t cp = 256; cp < 324; cp++) {
        char text[4], raw[4];
        size_t n = tok_bpe_unmap(text, (size_t)core_utf8_encode(cp, text), raw);
        if (n == 1) cp_of[(unsigned char)raw[0]] = cp;
    }
}

static mica_status tt_add_token(tt_state *t, char *text, uint32_t len, mica_err *err)
{
    tt_token *tok = &t->tokens[t->n_tokens];
    tok->text = text;
    tok->len = len;
    if (!tok_map_put(&t->token_ids, text, len, t->n_tokens))
        return core_fail(err, MICA_ENOMEM, "tokenizer training: token map full");
    t->n_tokens++;
    return MICA_OK;
}

/* Token ids 0..255: the byte symbols ordered by code point, as in GPT-2's vocabulary. */
static mica_status tt_add_byte_tokens(tt_state *t, mica_err *err)
{
    uint32_t cp_of[256];
    tt_byte_cps(cp_of);
    for (uint32_t cp = 0; cp < 324; cp++) {
        for (int b = 0; b < 256; b++) {
            if (cp_of[b] != cp) continue;
            char *text = malloc(4);
            if (!text) return core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
            int n = core_utf8_encode(cp, text);
            text[n] = '\0';
            t->byte_id[b] = t->n_tokens;
            mica_status st = tt_add_token(t, text, (uint32_t)n, err);
            if (st) {
                free(text);
                return st;
            }
        }
    }
    return MICA_OK;
}

/* ---- counting words ------------------------------------------------------------------- */

/* Doubles the room of the word map, putting every word again (keys stay in the text). */
static mica_status tt_grow_word_ids(tt_state *t, mica_err *err)
{
    tok_map_free(&t->word_ids);
    t->word_ids_room = t->word_ids_room ? 2 * t->word_ids_room : 4096;
    if (tok_map_init(&t->word_ids, t->word_ids_room))
        return core_fail(err, MICA_ENOMEM, "tokenizer training: no room for %llu words",
                         (unsigned long long)t->word_ids_room);
    for (size_t i = 0; i < t->n_words; i++)
        (void)tok_map_put(&t->word_ids, t->words[i].key, t->words[i].key_len, (int32_t)i);
    return MICA_OK;
}

static mica_status tt_count_word(tt_state *t, const char *key, size_t len, mica_err *err)
{
    int32_t id = tok_map_get(&t->word_ids, key, len);
    if (id >= 0) {
        t->words[id].count++;
        return MICA_OK;
    }
    mica_status st;
    if (t->n_words == t->word_ids_room && (st = tt_grow_word_ids(t, err))) return st;
    if (t->n_words == t->cap_words) {
        size_t cap = t->cap_words ? 2 * t->cap_words : 4096;
        tt_word *words = realloc(t->words, cap * sizeof *words);
        if (!words) return core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
        t->words = words;
        t->cap_words = cap;
    }
    t->words[t->n_words] = (tt_word){.key = key, .key_len = (uint32_t)len, .count = 1};
    (void)tok_map_put(&t->word_ids, key, (uint32_t)len, (int32_t)t->n_words);
    t->n_words++;
    return MICA_OK;
}

/* Scratch for pre-tokenizing one chunk: code points, their byte offsets, piece lengths. */
typedef struct tt_chunk {
    uint32_t *cps;
    size_t *offs, *lens;
} tt_chunk;

static mica_status tt_count_chunk(tt_state *t, tt_chunk *c, const char *s, size_t n, mica_err *err)
{
    size_t n_cps = 0, n_pieces = 0;
    for (size_t off = 0; off < n; n_cps++) {
        size_t l;
        c->offs[n_cps] = off;
        c->cps[n_cps] = tok_utf8_decode(s + off, n - off, &l);
        off += l;
    }
    c->offs[n_cps] = n;
    mica_status st = tok_pre_split(t->pre, c->cps, n_cps, c->lens, &n_pieces, err);
    size_t first = 0; /* the piece's first code point */
    for (size_t p = 0; p < n_pieces && !st; p++) {
        const size_t b = c->offs[first], e = c->offs[first + c->lens[p]];
        st = tt_count_word(t, s + b, e - b, err);
        first += c->lens[p];
    }
    return st;
}

/* Whether the character that ends at byte `last` is white space. */
static bool tt_space_ending_at(const char *s, size_t last)
{
    size_t lead = last, l;
    while (lead > 0 && last - lead < 3 && ((unsigned char)s[lead] & 0xC0) == 0x80) lead--;
    uint32_t cp = tok_utf8_decode(s + lead, last + 1 - lead, &l);
    return l == last + 1 - lead && tok_uspace(cp);
}

/* A line break with a character that is not white space on either side ends a pre-token and
 * starts the next in every pattern of tok_pre.c, also where a pattern looks ahead (\s+(?!\S)
 * sees the same "no white space" at a chunk's end), so chunks cut after it split exactly as
 * the whole text would. */
static bool tt_line_cut(const char *s, size_t len, size_t at)
{
    if (at < 2 || at >= len || s[at - 1] != '\n' || tt_space_ending_at(s, at - 2)) return false;
    size_t l;
    return !tok_uspace(tok_utf8_decode(s + at, len - at, &l));
}

static size_t tt_chunk_end(const char *s, size_t len, size_t start)
{
    if (len - start <= TT_CHUNK) return len;
    const size_t cap = len - start > TT_CHUNK_MAX ? start + TT_CHUNK_MAX : len;
    size_t end = start + TT_CHUNK;
    while (end < cap && !tt_line_cut(s, len, end)) end++;
    if (end == len || tt_line_cut(s, len, end)) return end;
    /* no line break in reach: cut before a UTF-8 lead byte */
    while (end > start + 1 && ((unsigned char)s[end] & 0xC0) == 0x80) end--;
    return end;
}

static void tt_progress(const tt_state *t, const char *what, int64_t done, int64_t total)
{
    if (t->p->progress) t->p->progress(t->p->progress_ctx, what, NULL, done, total);
}

static mica_status tt_count_words(tt_state *t, const char *text, size_t len, mica_err *err)
{
    size_t room = len < TT_CHUNK_MAX ? len : TT_CHUNK_MAX;
    tt_chunk c = {malloc((room + 1) * sizeof *c.cps), malloc((room + 1) * sizeof *c.offs),
                  malloc((room + 1) * sizeof *c.lens)};
    mica_status st = tt_grow_word_ids(t, err);
    if (!st && (!c.cps || !c.offs || !c.lens))
        st = core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
    for (size_t start = 0; start < len && !st;) {
        size_t end = tt_chunk_end(text, len, start);
        st = tt_count_chunk(t, &c, text + start, end - start, err);
        start = end;
        tt_progress(t, "counting words", (int64_t)start, (int64_t)len);
    }
    free(c.cps);
    free(c.offs);
    free(c.lens);
    return st;
}

/* Spells every word with byte symbols: the UTF-8 of its code points (so an invalid byte
 * becomes U+FFFD's three bytes, as the encoder sees it), one symbol per byte. */
static mica_status tt_spell_words(tt_state *t, mica_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < t->n_words; i++) total += 3 * (size_t)t->words[i].key_len;
    t->syms = malloc((total ? total : 1) * sizeof *t->syms);
    if (!t->syms) return core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
    size_t at = 0;
    for (size_t i = 0; i < t->n_words; i++) {
        tt_word *w = &t->words[i];
        w->off = at;
        for (size_t off = 0, l; off < w->key_len; off += l) {
            char raw[4];
            int rn = core_utf8_encode(tok_utf8_decode(w->key + off, w->key_len - off, &l), raw);
            for (int k = 0; k < rn; k++) t->syms[at++] = t->byte_id[(unsigned char)raw[k]];
        }
        w->n = (uint32_t)(at - w->off);
    }
    return MICA_OK;
}

/* ---- pairs: map and heap --------------------------------------------------------------- */

static uint64_t tt_pair_key(int32_t a, int32_t b)
{
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static size_t tt_pairmap_slot(const tt_pairmap *m, uint64_t key)
{
    size_t mask = m->n_slots - 1, i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    while (m->vals[i] >= 0 && m->keys[i] != key) i = (i + 1) & mask;
    return i;
}

static bool tt_pairmap_grow(tt_pairmap *m)
{
    tt_pairmap g = {.n_slots = m->n_slots ? 2 * m->n_slots : 1024, .n_used = m->n_used};
    g.keys = malloc(g.n_slots * sizeof *g.keys);
    g.vals = malloc(g.n_slots * sizeof *g.vals);
    if (!g.keys || !g.vals) {
        free(g.keys);
        free(g.vals);
        return false;
    }
    memset(g.vals, 0xFF, g.n_slots * sizeof *g.vals);
    for (size_t i = 0; i < m->n_slots; i++) {
        if (m->vals[i] < 0) continue;
        size_t j = tt_pairmap_slot(&g, m->keys[i]);
        g.keys[j] = m->keys[i];
        g.vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    *m = g;
    return true;
}

/* Heap order: higher count first, then smaller left id, then smaller right id. */
static bool tt_better(const tt_state *t, int32_t x, int32_t y)
{
    const tt_pair *p = &t->pairs[x], *q = &t->pairs[y];
    if (p->count != q->count) return p->count > q->count;
    return p->a != q->a ? p->a < q->a : p->b < q->b;
}

static void tt_heap_set(tt_state *t, int32_t at, int32_t pair)
{
    t->heap[at] = pair;
    t->pairs[pair].heap_at = at;
}

/* Restores the heap after the count of the pair at `at` changed. */
static void tt_heap_fix(tt_state *t, int32_t at)
{
    int32_t pair = t->heap[at];
    while (at > 0 && tt_better(t, pair, t->heap[(at - 1) / 2])) {
        tt_heap_set(t, at, t->heap[(at - 1) / 2]);
        at = (at - 1) / 2;
    }
    for (;;) {
        int32_t kid = 2 * at + 1;
        if (kid >= t->n_pairs) break;
        if (kid + 1 < t->n_pairs && tt_better(t, t->heap[kid + 1], t->heap[kid])) kid++;
        if (!tt_better(t, t->heap[kid], pair)) break;
        tt_heap_set(t, at, t->heap[kid]);
        at = kid;
    }
    tt_heap_set(t, at, pair);
}

/* The index of pair (a, b), created (count 0, at the heap's end) when new; -1 when out of
 * memory. */
static int32_t tt_pair_get(tt_state *t, int32_t a, int32_t b)
{
    uint64_t key = tt_pair_key(a, b);
    if (2 * (t->pair_ids.n_used + 1) > t->pair_ids.n_slots && !tt_pairmap_grow(&t->pair_ids))
        return -1;
    size_t slot = tt_pairmap_slot(&t->pair_ids, key);
    if (t->pair_ids.vals[slot] >= 0) return t->pair_ids.vals[slot];
    if (t->n_pairs == t->cap_pairs) {
        int32_t cap = t->cap_pairs ? 2 * t->cap_pairs : 4096;
        tt_pair *pairs = realloc(t->pairs, (size_t)cap * sizeof *pairs);
        int32_t *heap = pairs ? realloc(t->heap, (size_t)cap * sizeof *heap) : NULL;
        if (pairs) t->pairs = pairs;
        if (!heap) return -1;
        t->heap = heap;
        t->cap_pairs = cap;
    }
    int32_t id = t->n_pairs++;
    t->pairs[id] = (tt_pair){.a = a, .b = b};
    tt_heap_set(t, id, id);
    t->pair_ids.keys[slot] = key;
    t->pair_ids.vals[slot] = id;
    t->pair_ids.n_used++;
    return id;
}

static bool tt_pair_note_word(tt_pair *p, uint32_t word)
{
    if (p->n_words > 0 && p->words[p->n_words - 1] == word) return true;
    if (p->n_words == p->cap_words) {
        uint32_t cap = p->cap_words ? 2 * p->cap_words : 4;
        uint32_t *words = realloc(p->words, cap * sizeof *words);
        if (!words) return false;
        p->words = words;
        p->cap_words = cap;
    }
    p->words[p->n_words++] = word;
    return true;
}

/* Adds delta x the word's count to each adjacent pair of its symbols; the word is noted in
 * the lists of the pairs that hold `track` (all pairs when track < 0). */
static mica_status tt_count_pairs(tt_state *t, uint32_t word, int64_t delta, int32_t track,
                                  mica_err *err)
{
    const tt_word *w = &t->words[word];
    const int32_t *s = t->syms + w->off;
    for (uint32_t i = 0; i + 1 < w->n; i++) {
        int32_t id = tt_pair_get(t, s[i], s[i + 1]);
        if (id < 0) return core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
        tt_pair *p = &t->pairs[id];
        p->count += delta * (int64_t)w->count;
        tt_heap_fix(t, p->heap_at);
        bool tracked = track < 0 || s[i] == track || s[i + 1] == track;
        if (delta > 0 && tracked && !tt_pair_note_word(p, word))
            return core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
    }
    return MICA_OK;
}

/* ---- merging --------------------------------------------------------------------------- */

/* Replaces every (a, b) of the word, left to right, by c, and updates the pair counts. */
static mica_status tt_merge_word(tt_state *t, uint32_t word, int32_t a, int32_t b, int32_t c,
                                 mica_err *err)
{
    tt_word *w = &t->words[word];
    int32_t *s = t->syms + w->off;
    uint32_t i = 0;
    while (i + 1 < w->n && !(s[i] == a && s[i + 1] == b)) i++;
    if (i + 1 >= w->n) return MICA_OK; /* a stale entry: merged away already */
    mica_status st = tt_count_pairs(t, word, -1, c, err);
    if (st) return st;
    uint32_t n = 0;
    for (i = 0; i < w->n; n++) {
        bool hit = i + 1 < w->n && s[i] == a && s[i + 1] == b;
        s[n] = hit ? c : s[i];
        i += hit ? 2 : 1;
    }
    w->n = n;
    return tt_count_pairs(t, word, +1, c, err);
}

/* The id of the token that merging pair `pi` makes, added when new. */
static mica_status tt_merged_token(tt_state *t, int32_t pi, int32_t *id, mica_err *err)
{
    const tt_token *l = &t->tokens[t->pairs[pi].a], *r = &t->tokens[t->pairs[pi].b];
    size_t len = (size_t)l->len + r->len;
    char *text = malloc(len + 2);
    if (!text) return core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
    memcpy(text, l->text, l->len);
    memcpy(text + l->len, r->text, r->len);
    text[len] = '\0';
    *id = tok_map_get(&t->token_ids, text, len);
    if (*id >= 0) {
        free(text);
        return MICA_OK;
    }
    *id = t->n_tokens;
    mica_status st = tt_add_token(t, text, (uint32_t)len, err);
    if (st) free(text);
    return st;
}

/* Records "left right" (GPT-2 symbol spelling), once per pair. */
static mica_status tt_record_merge(tt_state *t, int32_t pi, mica_err *err)
{
    tt_pair *p = &t->pairs[pi];
    if (p->merged) return MICA_OK;
    p->merged = true;
    const tt_token *l = &t->tokens[p->a], *r = &t->tokens[p->b];
    char *m = malloc((size_t)l->len + r->len + 2);
    if (!m) return core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
    memcpy(m, l->text, l->len);
    m[l->len] = ' ';
    memcpy(m + l->len + 1, r->text, r->len + 1);
    if (t->n_merges == t->cap_merges) {
        /* more merges than tokens when some merges make a token that exists already */
        int32_t cap = t->cap_merges ? 2 * t->cap_merges : 1024;
        char **merges = realloc(t->merges, (size_t)cap * sizeof *merges);
        if (!merges) {
            free(m);
            return core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
        }
        t->merges = merges;
        t->cap_merges = cap;
    }
    t->merges[t->n_merges++] = m;
    return MICA_OK;
}

static mica_status tt_merge_best(tt_state *t, mica_err *err)
{
    int32_t pi = t->heap[0], c = -1;
    mica_status st;
    if ((st = tt_merged_token(t, pi, &c, err)) || (st = tt_record_merge(t, pi, err))) return st;
    /* The list is detached first: updates may add pairs and move t->pairs. */
    tt_pair *p = &t->pairs[pi];
    int32_t a = p->a, b = p->b;
    uint32_t *words = p->words, n_words = p->n_words;
    p->words = NULL;
    p->n_words = p->cap_words = 0;
    t->step++;
    for (uint32_t k = 0; k < n_words && !st; k++) {
        tt_word *w = &t->words[words[k]];
        if (w->stamp == t->step) continue;
        w->stamp = t->step;
        st = tt_merge_word(t, words[k], a, b, c, err);
    }
    free(words);
    return st;
}

static mica_status tt_merge_all(tt_state *t, mica_err *err)
{
    mica_status st = MICA_OK;
    for (uint32_t i = 0; i < t->n_words && !st; i++) st = tt_count_pairs(t, i, +1, -1, err);
    const int32_t target = t->p->n_vocab - TOK_TRAIN_N_SPECIAL;
    while (!st && t->n_tokens < target && t->n_pairs > 0 && t->pairs[t->heap[0]].count > 0) {
        st = tt_merge_best(t, err);
        tt_progress(t, "merging", t->n_tokens, target);
    }
    return st;
}

/* ---- output ---------------------------------------------------------------------------- */

/* ChatML, as the control tokens are ChatML's (Qwen2's template without its default system
 * message), so chat requests and training render prompts alike. */
static const char tt_chat_template[] =
    "{%- for message in messages -%}"
    "<|im_start|>{{ message.role }}{{ '\\n' }}{{ message.content }}<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}";

/* The keys besides the token and merge lists. */
static mica_status tt_write_ids(const tt_state *t, gguf_writer *w)
{
    const uint32_t eot = (uint32_t)t->n_tokens; /* <|endoftext|>, the first special token */
    mica_status st;
    if ((st = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", eot)) ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", eot)) ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", eot)) ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", eot + 2))) /* <|im_end|> */
        return st;
    /* ChatML prompts begin with <|im_start|>, not BOS (as Qwen2's vocabulary says) */
    if ((st = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false)) ||
        (st = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false)))
        return st;
    return gguf_writer_set_str(w, "tokenizer.chat_template", tt_chat_template);
}

static mica_status tt_write(const tt_state *t, const char *pre_name, gguf_writer *w, mica_err *err)
{
    const int32_t n = t->n_tokens + TOK_TRAIN_N_SPECIAL;
    const char **texts = malloc((size_t)n * sizeof *texts);
    int32_t *types = malloc((size_t)n * sizeof *types);
    mica_status st = MICA_ENOMEM;
    if (texts && types) {
        for (int32_t i = 0; i < n; i++) {
            bool special = i >= t->n_tokens;
            texts[i] = special ? tt_special[i - t->n_tokens] : t->tokens[i].text;
            types[i] = special ? TOK_TYPE_CONTROL : TOK_TYPE_NORMAL;
        }
        const char *const *merges = (const char *const *)t->merges;
        if (!(st = gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2")) &&
            !(st = gguf_writer_set_str(w, "tokenizer.ggml.pre", pre_name)) &&
            !(st = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", texts, (uint64_t)n)) &&
            !(st = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_I32, types,
                                       (uint64_t)n)) &&
            !(st = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges,
                                           (uint64_t)t->n_merges)))
            st = tt_write_ids(t, w);
    }
    free(texts);
    free(types);
    return st ? core_fail(err, st, "tokenizer training: cannot add the vocabulary to the GGUF")
              : MICA_OK;
}

static void tt_stats(const tt_state *t, size_t len, tok_train_stats *s)
{
    s->n_vocab = t->n_tokens + TOK_TRAIN_N_SPECIAL;
    s->n_merges = t->n_merges;
    s->n_words = t->n_words;
    s->n_bytes = len;
    s->n_tokens = 0;
    for (size_t i = 0; i < t->n_words; i++) s->n_tokens += t->words[i].count * t->words[i].n;
}

static void tt_free(tt_state *t)
{
    for (int32_t i = 0; i < t->n_tokens; i++) free(t->tokens[i].text);
    for (int32_t i = 0; i < t->n_merges; i++) free(t->merges[i]);
    for (int32_t i = 0; i < t->n_pairs; i++) free(t->pairs[i].words);
    free(t->tokens);
    free(t->merges);
    free(t->pairs);
    free(t->heap);
    free(t->pair_ids.keys);
    free(t->pair_ids.vals);
    free(t->words);
    free(t->syms);
    tok_map_free(&t->word_ids);
    tok_map_free(&t->token_ids);
}

static mica_status tt_check(const tok_train_params *p, const char *pre_name, size_t len,
                            mica_err *err)
{
    if (p->n_vocab < 256 + TOK_TRAIN_N_SPECIAL || p->n_vocab > TT_MAX_VOCAB)
        return core_fail(err, MICA_EINVAL,
                         "tokenizer training: vocabulary size %d is outside %d..%d (256 bytes + "
                         "merges + %d special tokens)",
                         p->n_vocab, 256 + TOK_TRAIN_N_SPECIAL, TT_MAX_VOCAB, TOK_TRAIN_N_SPECIAL);
    if (tok_pre_from_name(pre_name, strlen(pre_name)) < 0)
        return core_fail(err, MICA_EINVAL, "tokenizer training: unknown pre-tokenizer '%s'",
                         pre_name);
    if (len == 0) return core_fail(err, MICA_EINVAL, "tokenizer training: empty corpus");
    return MICA_OK;
}

mica_status tok_train(const tok_train_params *p, const char *text, size_t len, gguf_writer *w,
                      tok_train_stats *stats, mica_err *err)
{
    const char *pre_name = p->pre ? p->pre : TOK_TRAIN_DEFAULT_PRE;
    mica_status st = tt_check(p, pre_name, len, err);
    if (st) return st;
    tt_state t = {.p = p, .pre = tok_pre_from_name(pre_name, strlen(pre_name))};
    const int32_t max_tokens = p->n_vocab - TOK_TRAIN_N_SPECIAL;
    t.tokens = core_calloc((size_t)max_tokens, sizeof *t.tokens);
    if (!t.tokens || tok_map_init(&t.token_ids, (uint64_t)max_tokens)) {
        st = core_fail(err, MICA_ENOMEM, "tokenizer training: out of memory");
        goto done;
    }
    if ((st = tt_add_byte_tokens(&t, err)) || (st = tt_count_words(&t, text, len, err)) ||
        (st = tt_spell_words(&t, err)) || (st = tt_merge_all(&t, err)) ||
        (st = tt_write(&t, pre_name, w, err)))
        goto done;
    if (stats) tt_stats(&t, len, stats);
done:
    tt_free(&t);
    return st;
}
