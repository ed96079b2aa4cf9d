/*
 * tok_encode.c - text -> token ids for every vocabulary kind, as llama.cpp's
 * llama_vocab::impl::tokenize: first the special-token partition (tokenizer_st_partition:
 * the text is cut at occurrences of special-token texts, longest token first; control and
 * unknown tokens only when parse_special, user-defined ones always; LSTRIP/RSTRIP tokens eat
 * the whitespace beside them), then each raw-text fragment goes to its kind's encoder and
 * BOS/EOS/SEP are added as the kind does. SPM fragments get the space prefix (the first
 * fragment and every fragment after a special token) and ' ' -> U+2581. Also the capped id
 * list (tok_ids_*). The encoders themselves live in tok_spm.c, tok_bpe.c and tok_wpm.c.
 * Called by engine/ (mica_tokenize) and the CLI.
 */
#include "tok_int.h"

#include <stdlib.h>
#include <string.h>

/* Inputs are capped so that fragment bookkeeping (at most 2 * len + 1 fragments) stays small. */
#define TOK_MAX_TEXT ((size_t)64 << 20)

/* ---- capped id list ------------------------------------------------------------------- */

void tok_ids_init(tok_ids *ids, size_t max)
{
    ids->v = NULL;
    ids->n = ids->cap = 0;
    ids->max = max;
}

bool tok_ids_push(tok_ids *ids, int32_t id)
{
    if (ids->n == ids->max) return false;
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? 2 * ids->cap : 16;
        if (cap > ids->max) cap = ids->max;
        int32_t *p = realloc(ids->v, cap * sizeof *p);
        if (!p) return false;
        ids->v = p;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return true;
}

void tok_ids_free(tok_ids *ids)
{
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

mica_status tok_emit(tok_ids *out, int32_t id, mica_err *err)
{
    if (tok_ids_push(out, id)) return MICA_OK;
    if (out->n == out->max)
        return core_fail(err, MICA_ENOMEM, "token list cap (%zu ids) reached", out->max);
    return core_fail(err, MICA_ENOMEM, "out of memory for %zu token ids", out->n + 1);
}

/* ---- special-token partition ---------------------------------------------------------- */

/* A piece of the input: a special token (id >= 0) or raw text[off .. off+len) (id = -1). */
typedef struct tok_frag {
    int32_t id;
    size_t off, len;
} tok_frag;

typedef struct tok_frags {
    tok_frag *v;
    size_t n, cap;
} tok_frags;

/* The C locale's isspace, which llama.cpp's strip uses. */
static bool tok_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* First occurrence of needle (nn > 0 bytes) in hay[0..hn), or NULL. */
static const char *tok_search(const char *hay, size_t hn, const char *needle, size_t nn)
{
    while (hn >= nn) {
        const char *p = memchr(hay, needle[0], hn - nn + 1);
        if (!p) return NULL;
        if (memcmp(p, needle, nn) == 0) return p;
        hn -= (size_t)(p - hay) + 1;
        hay = p + 1;
    }
    return NULL;
}

/* The list never needs more than 2 * len + 1 entries (every token covers at least one byte
 * and raw pieces lie between tokens), which the caller passes as max. */
static bool tok_frags_push(tok_frags *fr, tok_frag f, size_t max)
{
    if (fr->n == fr->cap) {
        size_t cap = fr->cap ? 2 * fr->cap : 16;
        if (cap > max) cap = max;
        if (fr->n == cap) return false;
        tok_frag *p = realloc(fr->v, cap * sizeof *p);
        if (!p) return false;
        fr->v = p;
        fr->cap = cap;
    }
    fr->v[fr->n++] = f;
    return true;
}

/* Cuts one raw fragment at every occurrence of special token id, appending the pieces. */
static bool tok_split_fragment(const tok_vocab *v, const char *text, tok_frag f, int32_t id,
                               tok_frags *dst, size_t max)
{
    const tok_token *t = &v->tokens[id];
    size_t off = f.off, len = f.len;
    for (;;) {
        const char *m = tok_search(text + off, len, t->text, t->len);
        if (!m) return len == 0 || tok_frags_push(dst, (tok_frag){-1, off, len}, max);
        size_t pos = (size_t)(m - text), left = pos - off, end = off + len;
        if (t->attr & TOK_ATTR_LSTRIP)
            while (left > 0 && tok_is_space(text[off + left - 1])) left--;
        if (left > 0 && !tok_frags_push(dst, (tok_frag){-1, off, left}, max)) return false;
        if (!tok_frags_push(dst, (tok_frag){id, 0, 0}, max)) return false;
        off = pos + t->len;
        if (off >= end) return true;
        len = end - off;
        if (t->attr & TOK_ATTR_RSTRIP)
            while (len > 0 && tok_is_space(text[off])) off++, len--;
    }
}

static bool tok_special_applies(const tok_vocab *v, int32_t id, bool parse_special)
{
    /* control and unknown texts stay plain text unless asked; user-defined ones never do */
    return parse_special || !(v->tokens[id].attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN));
}

static mica_status tok_partition(const tok_vocab *v, const char *text, size_t len,
                                 bool parse_special, tok_frags *out, mica_err *err)
{
    size_t max = 2 * len + 1;
    tok_frags other = {0};
    if (len > 0 && !tok_frags_push(out, (tok_frag){-1, 0, len}, max)) goto oom;
    for (size_t s = 0; s < v->n_special && out->n > 0; s++) {
        int32_t id = v->special[s];
        if (!tok_special_applies(v, id, parse_special) || v->tokens[id].len == 0) continue;
        other.n = 0;
        for (size_t i = 0; i < out->n; i++) {
            bool ok = out->v[i].id >= 0 ? tok_frags_push(&other, out->v[i], max)
                                        : tok_split_fragment(v, text, out->v[i], id, &other, max);
            if (!ok) goto oom;
        }
        tok_frags tmp = *out;
        *out = other;
        other = tmp;
    }
    free(other.v);
    return MICA_OK;
oom:
    free(other.v);
    return core_fail(err, MICA_ENOMEM, "out of memory splitting %zu bytes at special tokens", len);
}

/* ---- per-kind assembly ---------------------------------------------------------------- */

/* SPM: " " before the first fragment and after each special token (add_space_prefix), then
 * every ' ' becomes U+2581. buf holds at least 3 * (len + 1) bytes. */
static size_t tok_spm_escape(const tok_vocab *v, const char *s, size_t n, bool prefix, char *buf)
{
    static const char lower_8[3] = {'\xE2', '\x96', '\x81'};
    size_t k = 0;
    if (v->add_space_prefix && prefix) {
        memcpy(buf, lower_8, 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + k, lower_8, 3);
            k += 3;
        } else {
            buf[k++] = s[i];
        }
    }
    return k;
}

static mica_status tok_encode_spm(const tok_vocab *v, const char *text, size_t len,
                                  const tok_frags *fr, bool add_special, tok_ids *out,
                                  mica_err *err)
{
    mica_status st = MICA_OK;
    bool prev_special = true; /* the first fragment gets the space prefix too */
    char *buf = malloc(3 * (len + 1));
    if (!buf) return core_fail(err, MICA_ENOMEM, "out of memory for %zu bytes of text", len);
    if (add_special && v->add_bos && (st = tok_emit(out, v->bos, err))) goto fail;
    for (size_t i = 0; i < fr->n && !st; i++) {
        const tok_frag *f = &fr->v[i];
        if (f->id >= 0) {
            st = tok_emit(out, f->id, err);
            prev_special = true;
            continue;
        }
        size_t k = tok_spm_escape(v, text + f->off, f->len, prev_special, buf);
        st = tok_spm_encode(v, buf, k, out, err);
        prev_special = false;
    }
    if (!st && add_special && v->add_eos) st = tok_emit(out, v->eos, err);
fail:
    free(buf);
    return st;
}

static mica_status tok_encode_fragments(const tok_vocab *v, const char *text, const tok_frags *fr,
                                        tok_ids *out, mica_err *err)
{
    for (size_t i = 0; i < fr->n; i++) {
        const tok_frag *f = &fr->v[i];
        mica_status st;
        if (f->id >= 0)
            st = tok_emit(out, f->id, err);
        else if (v->kind == TOK_KIND_BPE)
            st = tok_bpe_encode(v, text + f->off, f->len, out, err);
        else
            st = tok_wpm_encode(v, text + f->off, f->len, out, err);
        if (st) return st;
    }
    return MICA_OK;
}

/* BPE: BOS/EOS as add_bos/add_eos say (llama.cpp's append_bos/append_eos). */
static mica_status tok_encode_bpe(const tok_vocab *v, const char *text, const tok_frags *fr,
                                  bool add_special, tok_ids *out, mica_err *err)
{
    mica_status st;
    if (add_special && v->add_bos && (st = tok_emit(out, v->bos, err))) return st;
    if ((st = tok_encode_fragments(v, text, fr, out, err))) return st;
    if (add_special && v->add_eos) return tok_emit(out, v->eos, err);
    return MICA_OK;
}

/* WPM: [CLS] ... [SEP] whenever add_special (llama.cpp does not consult add_bos here). */
static mica_status tok_encode_wpm(const tok_vocab *v, const char *text, const tok_frags *fr,
                                  bool add_special, tok_ids *out, mica_err *err)
{
    mica_status st;
    if (add_special && (v->bos < 0 || v->sep < 0))
        return core_fail(err, MICA_EINVAL, "WordPiece vocabulary lacks a %s token to add",
                         v->bos < 0 ? "BOS/CLS" : "SEP");
    if (add_special && (st = tok_emit(out, v->bos, err))) return st;
    if ((st = tok_encode_fragments(v, text, fr, out, err))) return st;
    if (add_special) return tok_emit(out, v->sep, err);
    return MICA_OK;
}

mica_status tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special,
                       bool parse_special, tok_ids *out, mica_err *err)
{
    mica_status st;
    tok_frags fr = {0};
    if (len > TOK_MAX_TEXT)
        return core_fail(err, MICA_ENOMEM, "text of %zu bytes exceeds the tokenizer cap of %zu",
                         len, TOK_MAX_TEXT);
    if ((st = tok_partition(v, text, len, parse_special, &fr, err))) goto fail;
    switch (v->kind) {
    case TOK_KIND_SPM:
        st = tok_encode_spm(v, text, len, &fr, add_special, out, err);
        break;
    case TOK_KIND_BPE:
        st = tok_encode_bpe(v, text, &fr, add_special, out, err);
        break;
    case TOK_KIND_WPM:
        st = tok_encode_wpm(v, text, &fr, add_special, out, err);
        break;
    }
fail:
    free(fr.v);
    return st;
}
