/*
 * test_sampler.c - tests src/engine/sampler.c against the definitions of each sampler:
 * greedy is the argmax; a seed fixes the draws; the empirical distribution of draws matches
 * softmax(logits / T); top-k, top-p and min-p never draw outside their sets; the penalties
 * change logits exactly as their formulas say.
 */
#include "test_util.h"

#include "mica.h"

#include <math.h>

static mica_sampler *make(mica_sampler_params p, int n_vocab)
{
    mica_sampler *s;
    mica_err err;
    if (mica_sampler_new(&s, p, n_vocab, &err)) fail_msg("%s", err.msg);
    return s;
}

static mica_sampler_params plain(float temp)
{
    mica_sampler_params p = mica_sampler_default_params();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

static void test_greedy_is_argmax(void **state)
{
    mica_sampler *s = make(plain(0), 5);
    float l[5] = {0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
    assert_int_equal(mica_sampler_sample(s, l), 1); /* first of equal maxima */
    mica_sampler_free(s);
}

static void draw_many(mica_sampler_params p, const float *logits, int n_vocab, int n, int *counts)
{
    mica_sampler *s = make(p, n_vocab);
    float l[16];
    memset(counts, 0, sizeof(int) * (size_t)n_vocab);
    for (int i = 0; i < n; i++) {
        memcpy(l, logits, sizeof(float) * (size_t)n_vocab);
        counts[mica_sampler_sample(s, l)]++;
    }
    mica_sampler_free(s);
}

static void test_seed_reproducible(void **state)
{
    const float logits[4] = {0.0f, 0.1f, 0.2f, 0.3f};
    mica_sampler_params p = plain(1.0f);
    p.seed = 42;
    mica_token a[64], b[64], c[64];
    mica_sampler *s1 = make(p, 4), *s2 = make(p, 4);
    p.seed = 43;
    mica_sampler *s3 = make(p, 4);
    for (int i = 0; i < 64; i++) {
        float l[4];
        memcpy(l, logits, sizeof l);
        a[i] = mica_sampler_sample(s1, l);
        memcpy(l, logits, sizeof l);
        b[i] = mica_sampler_sample(s2, l);
        memcpy(l, logits, sizeof l);
        c[i] = mica_sampler_sample(s3, l);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    mica_sampler_free(s1);
    mica_sampler_free(s2);
    mica_sampler_free(s3);
}

static void test_distribution_matches_softmax(void **state)
{
    const float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    const int n = 40000;
    int counts[3];
    /* At T = 2 the probabilities are proportional to sqrt(p). */
    draw_many(plain(2.0f), logits, 3, n, counts);
    double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.2);
    const double want[3] = {sqrt(0.5) / z, sqrt(0.3) / z, sqrt(0.2) / z};
    for (int i = 0; i < 3; i++) {
        double got = (double)counts[i] / n;
        if (fabs(got - want[i]) > 0.01)
            fail_msg("token %d drawn with frequency %.4f, softmax says %.4f", i, got, want[i]);
    }
}

static void test_truncations(void **state)
{
    const float logits[5] = {logf(0.4f), logf(0.3f), logf(0.15f), logf(0.1f), logf(0.05f)};
    int counts[5];
    mica_sampler_params p = plain(1.0f);
    p.top_k = 2;
    draw_many(p, logits, 5, 4000, counts);
    assert_true(counts[0] > 0 && counts[1] > 0);
    assert_int_equal(counts[2] + counts[3] + counts[4], 0);

    p = plain(1.0f);
    p.top_p = 0.8f; /* 0.4 + 0.3 < 0.8 <= 0.4 + 0.3 + 0.15 */
    draw_many(p, logits, 5, 4000, counts);
    assert_true(counts[2] > 0);
    assert_int_equal(counts[3] + counts[4], 0);

    p = plain(1.0f);
    p.min_p = 0.5f; /* keeps p >= 0.2 */
    draw_many(p, logits, 5, 4000, counts);
    assert_true(counts[0] > 0 && counts[1] > 0);
    assert_int_equal(counts[2] + counts[3] + counts[4], 0);

    p = plain(1.0f);
    p.top_k = 1;
    draw_many(p, logits, 5, 100, counts);
    assert_int_equal(counts[0], 100);
}

static void test_penalties(void **state)
{
    mica_sampler_params p = plain(0);
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    p.penalty_last_n = 3;
    mica_sampler *s = make(p, 4);
    mica_sampler_accept(s, 0);
    mica_sampler_accept(s, 1);
    mica_sampler_accept(s, 1);
    float l[4] = {3.0f, -1.0f, 0.5f, 0.25f};
    mica_sampler_sample(s, l);
    /* token 0: 3/2 - 1*0.5 - 0.25; token 1: -1*2 - 2*0.5 - 0.25; others untouched */
    assert_float_equal(l[0], 0.75f, 1e-6);
    assert_float_equal(l[1], -3.25f, 1e-6);
    assert_float_equal(l[2], 0.5f, 0);
    assert_float_equal(l[3], 0.25f, 0);
    /* The sampled token (0) joined the ring {1, 1, 0}; three more push 0 and the 1s out. */
    mica_sampler_accept(s, 3);
    mica_sampler_accept(s, 2);
    mica_sampler_accept(s, 2);
    float l2[4] = {3.0f, -1.0f, 0.5f, 0.25f};
    mica_sampler_sample(s, l2);
    assert_float_equal(l2[0], 3.0f, 0);
    assert_float_equal(l2[1], -1.0f, 0);
    assert_float_equal(l2[2], 0.5f / 2 - 2 * 0.5f - 0.25f, 1e-6);
    assert_float_equal(l2[3], 0.25f / 2 - 0.5f - 0.25f, 1e-6);
    mica_sampler_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_distribution_matches_softmax),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_penalties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
