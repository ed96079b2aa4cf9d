/*
 * grammar.c - the public mica_grammar_* API (structured output): a parsed GBNF grammar, the
 * sequence's matcher state and its mask cache, over the model's vocabulary trie (built once
 * per model, under the model's lock, from the pieces mica_token_to_piece writes — the text
 * the sequence's output is made of). The grammar module (src/grammar) does the work; the
 * scheduler (sched.c) and `mica run` call this per sequence.
 */
#include "engine.h"
#include "grammar/grammar.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct mica_grammar {
    mica_model *m;
    gram *g;
    gram_state st;
    gram_masker *masker;
    const gram_vocab *v;
};

/* Every token's piece (special tokens render empty: they are never text). */
static mica_status build_vocab(mica_model *m, gram_vocab **out, mica_err *err)
{
    const int32_t n = mica_model_n_vocab(m);
    char **pieces = core_calloc((size_t)n, sizeof *pieces);
    size_t *lens = core_calloc((size_t)n, sizeof *lens);
    bool *eog = core_calloc((size_t)n, sizeof *eog);
    mica_status st = MICA_OK;
    if (!pieces || !lens || !eog) st = core_fail(err, MICA_ENOMEM, "grammar: out of memory");
    for (int32_t t = 0; t < n && !st; t++) {
        char buf[256];
        lens[t] = mica_token_to_piece(m, t, false, buf, sizeof buf);
        eog[t] = mica_model_is_eog(m, t);
        if (!(pieces[t] = malloc(lens[t] + 1))) {
            st = core_fail(err, MICA_ENOMEM, "grammar: out of memory");
            break;
        }
        if (lens[t] <= sizeof buf)
            memcpy(pieces[t], buf, lens[t]);
        else
            mica_token_to_piece(m, t, false, pieces[t], lens[t]);
    }
    if (!st) st = gram_vocab_new(out, n, (const char *const *)pieces, lens, eog, err);
    for (int32_t t = 0; pieces && t < n; t++) free(pieces[t]);
    free(pieces);
    free(lens);
    free(eog);
    return st;
}

static mica_status model_vocab(mica_model *m, const gram_vocab **out, mica_err *err)
{
    pthread_mutex_lock(&m->gram_mu);
    mica_status st = MICA_OK;
    if (!m->gram_vocab) st = build_vocab(m, &m->gram_vocab, err);
    *out = m->gram_vocab;
    pthread_mutex_unlock(&m->gram_mu);
    return st;
}

mica_status mica_grammar_new(mica_grammar **out, mica_model *m, const char *gbnf, size_t len,
                             mica_err *err)
{
    *out = NULL;
    mica_grammar *g = core_calloc(1, sizeof *g);
    if (!g) return core_fail(err, MICA_ENOMEM, "grammar: out of memory");
    g->m = m;
    mica_status st = gram_parse(&g->g, gbnf, len, NULL, err);
    if (!st) st = model_vocab(m, &g->v, err);
    if (!st) st = gram_state_init(&g->st, g->g, err);
    if (!st) st = gram_masker_new(&g->masker, g->v, err);
    if (st) {
        mica_grammar_free(g);
        return st;
    }
    *out = g;
    return MICA_OK;
}

void mica_grammar_free(mica_grammar *g)
{
    if (!g) return;
    gram_masker_free(g->masker);
    if (g->st.g) gram_state_free(&g->st);
    gram_free(g->g);
    free(g);
}

mica_status mica_grammar_apply(mica_grammar *g, float *logits, mica_err *err)
{
    const uint64_t *bits;
    mica_status st = gram_masker_mask(g->masker, &g->st, &bits, err);
    if (st) return st;
    const int32_t n = gram_vocab_n_tokens(g->v);
    bool any = false;
    for (int32_t t = 0; t < n; t++) {
        const bool ok = (bits[t >> 6] >> (t & 63)) & 1;
        if (!ok) logits[t] = -INFINITY;
        any |= ok && logits[t] > -INFINITY; /* earlier masks (ignore_eos, biases) count too */
    }
    if (!any) return core_fail(err, MICA_EINVAL, "grammar: no token can continue the document");
    return MICA_OK;
}

mica_status mica_grammar_accept(mica_grammar *g, mica_token t, mica_err *err)
{
    if (t < 0 || t >= gram_vocab_n_tokens(g->v))
        return core_fail(err, MICA_ERANGE, "grammar: token %d out of range", t);
    if (gram_vocab_is_eog(g->v, t))
        return gram_state_can_end(&g->st)
                   ? MICA_OK
                   : core_fail(err, MICA_EINVAL, "grammar: the document is not complete");
    char buf[256];
    size_t len = mica_token_to_piece(g->m, t, false, buf, sizeof buf);
    char *piece = buf;
    if (len > sizeof buf) {
        if (!(piece = malloc(len))) return core_fail(err, MICA_ENOMEM, "grammar: out of memory");
        mica_token_to_piece(g->m, t, false, piece, len);
    }
    mica_status st = len ? gram_state_accept(&g->st, piece, len, err)
                         : core_fail(err, MICA_EINVAL, "grammar: token %d has no text", t);
    if (piece != buf) free(piece);
    return st;
}

bool mica_grammar_done(const mica_grammar *g)
{
    return gram_state_done(&g->st);
}
