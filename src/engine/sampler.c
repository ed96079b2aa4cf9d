/*
 * sampler.c - picking the next token from a row of logits: repetition, frequency and presence
 * penalties over recent tokens, then greedy (temperature <= 0) or top-k -> top-p -> min-p ->
 * temperature -> a seeded random draw, in llama.cpp's default chain order. The random
 * generator is our own (splitmix64-seeded xoshiro256**): the same seed gives the same tokens.
 */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct sampler_cand {
    int32_t id;
    float logit;
    float p;
} sampler_cand;

struct mica_sampler {
    mica_sampler_params p;
    int32_t n_vocab;
    sampler_cand *cand; /* (n_vocab) */
    int32_t *recent;    /* ring of the last penalty_last_n tokens */
    int32_t n_recent, recent_head;
    int32_t *counts; /* (n_vocab) occurrences of each token in the ring */
    core_rng rng;
};

mica_sampler_params mica_sampler_default_params(void)
{
    mica_sampler_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0,
    };
    return p;
}

mica_status mica_sampler_new(mica_sampler **out, mica_sampler_params p, int32_t n_vocab,
                             mica_err *err)
{
    *out = NULL;
    if (n_vocab < 1) return core_fail(err, MICA_EINVAL, "sampler: vocabulary is empty");
    if (p.penalty_last_n < 0) p.penalty_last_n = 0;
    mica_sampler *s = core_calloc(1, sizeof *s);
    if (!s) return core_fail(err, MICA_ENOMEM, "out of memory");
    s->p = p;
    s->n_vocab = n_vocab;
    s->cand = core_calloc((size_t)n_vocab, sizeof *s->cand);
    s->counts = core_calloc((size_t)n_vocab, sizeof *s->counts);
    s->recent = core_calloc((size_t)p.penalty_last_n + 1, sizeof *s->recent);
    if (!s->cand || !s->counts || !s->recent) {
        mica_sampler_free(s);
        return core_fail(err, MICA_ENOMEM, "out of memory");
    }
    core_rng_seed(&s->rng, p.seed);
    *out = s;
    return MICA_OK;
}

void mica_sampler_free(mica_sampler *s)
{
    if (!s) return;
    free(s->cand);
    free(s->counts);
    free(s->recent);
    free(s);
}

void mica_sampler_accept(mica_sampler *s, mica_token t)
{
    const int32_t cap = s->p.penalty_last_n;
    if (cap == 0 || t < 0 || t >= s->n_vocab) return;
    if (s->n_recent == cap) {
        s->counts[s->recent[s->recent_head]]--;
        s->n_recent--;
    }
    s->recent[s->recent_head] = t;
    s->recent_head = (s->recent_head + 1) % cap;
    s->n_recent++;
    s->counts[t]++;
}

/* llama.cpp's penalties: repeat divides positive / multiplies negative logits, frequency
 * subtracts count * f, presence subtracts p once. */
static void apply_penalties(const mica_sampler *s, float *logits)
{
    const mica_sampler_params *p = &s->p;
    if (!s->n_recent ||
        (p->repeat_penalty == 1.0f && p->frequency_penalty == 0.0f && p->presence_penalty == 0.0f))
        return;
    for (int32_t i = 0; i < s->n_recent; i++) {
        int32_t t = s->recent[i];
        int32_t c = s->counts[t];
        if (c <= 0) continue;
        /* The ring may hold t several times: penalise it once, then mark it done. */
        float *l = &logits[t];
        *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        *l -= (float)c * p->frequency_penalty + p->presence_penalty;
        s->counts[t] = -c;
    }
    for (int32_t i = 0; i < s->n_recent; i++)
        if (s->counts[s->recent[i]] < 0) s->counts[s->recent[i]] = -s->counts[s->recent[i]];
}

static int32_t argmax(const float *logits, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int cand_cmp_desc(const void *a, const void *b)
{
    const sampler_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Sifts c[i] down a min-heap (ordered by cand_cmp_desc: the heap top is the smallest). */
static void heap_sift(sampler_cand *c, int32_t n, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_cmp_desc(&c[l], &c[m]) > 0) m = l;
        if (r < n && cand_cmp_desc(&c[r], &c[m]) > 0) m = r;
        if (m == i) return;
        sampler_cand t = c[i];
        c[i] = c[m];
        c[m] = t;
        i = m;
    }
}

/* Moves the k largest candidates to the front, sorted, in O(n log k). */
static void sort_top(sampler_cand *c, int32_t n, int32_t k)
{
    if (k < n) {
        for (int32_t i = k / 2 - 1; i >= 0; i--) heap_sift(c, k, i);
        for (int32_t i = k; i < n; i++) {
            if (cand_cmp_desc(&c[i], &c[0]) >= 0) continue;
            c[0] = c[i];
            heap_sift(c, k, 0);
        }
    }
    qsort(c, (size_t)k, sizeof *c, cand_cmp_desc);
}

/* Probabilities of the first n (sorted) candidates at temperature t. */
static void cand_softmax(sampler_cand *c, int32_t n, float t)
{
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        c[i].p = expf((c[i].logit - c[0].logit) / t);
        sum += c[i].p;
    }
    for (int32_t i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
}

/* Keeps the smallest prefix whose probability mass reaches top_p (at least one). */
static int32_t cut_top_p(const sampler_cand *c, int32_t n, float top_p)
{
    if (top_p >= 1.0f) return n;
    double cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += c[i].p;
        if (cum >= top_p) return i + 1;
    }
    return n;
}

/* Keeps candidates with p >= min_p * p_max (at least one). */
static int32_t cut_min_p(const sampler_cand *c, int32_t n, float min_p)
{
    if (min_p <= 0.0f) return n;
    int32_t k = 1;
    while (k < n && c[k].p >= min_p * c[0].p) k++;
    return k;
}

static int32_t draw(mica_sampler *s, const sampler_cand *c, int32_t n)
{
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += c[i].p;
    double r = core_rng_uniform(&s->rng) * sum, acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += c[i].p;
        if (r < acc) return c[i].id;
    }
    return c[n - 1].id;
}

mica_token mica_sampler_sample(mica_sampler *s, float *logits)
{
    const mica_sampler_params *p = &s->p;
    const int32_t n_vocab = s->n_vocab;
    apply_penalties(s, logits);
    mica_token t;
    if (p->temperature <= 0.0f) {
        t = argmax(logits, n_vocab);
    } else {
        sampler_cand *c = s->cand;
        for (int32_t i = 0; i < n_vocab; i++) c[i] = (sampler_cand){i, logits[i], 0.0f};
        int32_t n = p->top_k > 0 && p->top_k < n_vocab ? p->top_k : n_vocab;
        sort_top(c, n_vocab, n);
        cand_softmax(c, n, 1.0f);
        n = cut_top_p(c, n, p->top_p);
        n = cut_min_p(c, n, p->min_p);
        cand_softmax(c, n, p->temperature);
        t = draw(s, c, n);
    }
    mica_sampler_accept(s, t);
    return t;
}
