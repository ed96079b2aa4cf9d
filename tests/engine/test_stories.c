/*
 * test_stories.c - the engine end to end on a real pretrained model, karpathy's stories260K
 * (../shared/testdata/stories260K): the prompt's token ids, greedy generation reproducing
 * llama.cpp's text byte for byte (200 tokens for F32, 64 for the Q8_0/Q4_0 files, whose
 * longer texts drift with tiny rounding differences, see that README section 6), and the
 * logits of the prompt and of every teacher-forced generation step.
 */
#include "test_util.h"

#include "mica.h"

#define N_VOCAB   512
#define N_GEN_MAX 200

static const mica_token prompt_ids[] = {1, 403, 407, 261, 378};

static mica_model *load(const char *type)
{
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "testdata/stories260K/models/stories260K.%s.gguf", type);
    TU_SHARED_PATH(path, rel);
    mica_err err;
    mica_model *m;
    if (mica_model_load(&m, path, &err)) fail_msg("%s", err.msg);
    return m;
}

static mica_context *context(mica_model *m)
{
    mica_err err;
    mica_context *c;
    mica_context_params cp = mica_context_default_params();
    cp.n_threads = 2;
    if (mica_context_new(&c, m, cp, &err)) fail_msg("%s", err.msg);
    return c;
}

static void test_prompt_tokens(void **state)
{
    mica_model *m = load("F32");
    mica_token ids[32];
    size_t n;
    mica_err err;
    const char *p = "Once upon a time";
    if (mica_tokenize(m, p, strlen(p), true, false, ids, 32, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], prompt_ids[i]);
    mica_model_free(m);
}

/* Greedy generation of n tokens through the sampler; returns the text of the pieces. */
static char *generate(const char *type, int n_gen)
{
    mica_model *m = load(type);
    mica_context *c = context(m);
    mica_sampler_params sp = mica_sampler_default_params();
    sp.temperature = 0;
    mica_sampler *s;
    mica_err err;
    if (mica_sampler_new(&s, sp, N_VOCAB, &err)) fail_msg("%s", err.msg);
    float logits[N_VOCAB];
    if (mica_decode(c, 0, prompt_ids, 5, 0, false, logits, &err)) fail_msg("%s", err.msg);
    char *text = calloc(1, 16 * (size_t)n_gen + 1);
    size_t len = 0;
    for (int i = 0; i < n_gen; i++) {
        mica_token t = mica_sampler_sample(s, logits);
        len += mica_token_to_piece(m, t, false, text + len, 16);
        if (mica_decode(c, 0, &t, 1, 5 + i, false, logits, &err)) fail_msg("%s", err.msg);
    }
    mica_sampler_free(s);
    mica_context_free(c);
    mica_model_free(m);
    return text;
}

static void check_text(const char *type, int n_gen)
{
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "testdata/stories260K/text/stories260K.%s.n%d.f32kv.gen.txt", type,
             n_gen);
    TU_SHARED_PATH(path, rel);
    char *want = tu_read_file(path, NULL);
    char *got = generate(type, n_gen);
    if (strcmp(got, want)) {
        size_t i = 0;
        while (got[i] && got[i] == want[i]) i++;
        fail_msg("stories260K.%s: text differs from llama.cpp's at byte %zu:\n got: %s\nwant: %s",
                 type, i, got, want);
    }
    free(got);
    free(want);
}

static void test_greedy_f32_200(void **state)
{
    check_text("F32", 200);
}
static void test_greedy_q8_0_64(void **state)
{
    check_text("Q8_0", 64);
}
static void test_greedy_q4_0_64(void **state)
{
    check_text("Q4_0", 64);
}

/* Prompt rows within 1e-5; teacher-forced generation rows within gen_tol (README section 6:
 * 5e-5 for F32 over 200 positions; the quantized files flip a Q8_0 activation rounding
 * somewhere in 200 steps, after which about 0.4 is what agreement means). */
static void check_logits(const char *type, double gen_tol)
{
    char path[1024], rel[256];
    size_t len;
    snprintf(rel, sizeof rel, "testdata/stories260K/logits/stories260K.%s.f32kv.bin", type);
    TU_SHARED_PATH(path, rel);
    float *want_prompt = (float *)tu_read_file(path, &len);
    assert_int_equal(len, sizeof(float) * 5 * N_VOCAB);
    snprintf(rel, sizeof rel, "testdata/stories260K/logits/stories260K.%s.f32kv.gen.bin", type);
    TU_SHARED_PATH(path, rel);
    float *want_gen = (float *)tu_read_file(path, &len);
    assert_int_equal(len, sizeof(float) * N_GEN_MAX * N_VOCAB);
    snprintf(rel, sizeof rel, "testdata/stories260K/logits/stories260K.%s.f32kv.json", type);
    TU_SHARED_PATH(path, rel);
    char *json = tu_read_file(path, NULL);
    static double gen_ids[N_GEN_MAX];
    assert_int_equal(tu_json_numbers(json, "tokens", gen_ids, N_GEN_MAX), N_GEN_MAX);

    mica_model *m = load(type);
    mica_context *c = context(m);
    mica_err err;
    float *logits = malloc(sizeof(float) * 5 * N_VOCAB);
    if (mica_decode(c, 0, prompt_ids, 5, 0, true, logits, &err)) fail_msg("%s", err.msg);
    char what[128];
    snprintf(what, sizeof what, "stories260K.%s prompt", type);
    tu_check_close(what, logits, want_prompt, 5 * N_VOCAB, 1e-5);
    double maxd = 0;
    for (int k = 1; k < N_GEN_MAX; k++) {
        mica_token t = (mica_token)gen_ids[k - 1];
        if (mica_decode(c, 0, &t, 1, 5 + k - 1, false, logits, &err)) fail_msg("%s", err.msg);
        snprintf(what, sizeof what, "stories260K.%s generation row %d", type, k);
        double d = tu_check_close(what, logits, want_gen + k * N_VOCAB, N_VOCAB, gen_tol);
        maxd = d > maxd ? d : maxd;
    }
    printf("stories260K.%s: generation rows max|diff| %.2e (tol %.0e)\n", type, maxd, gen_tol);
    free(logits);
    free(json);
    free(want_prompt);
    free(want_gen);
    mica_context_free(c);
    mica_model_free(m);
}

static void test_logits_f32(void **state)
{
    check_logits("F32", 5e-5);
}
static void test_logits_q8_0(void **state)
{
    check_logits("Q8_0", 0.4);
}
static void test_logits_q4_0(void **state)
{
    check_logits("Q4_0", 0.4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_tokens),  cmocka_unit_test(test_greedy_f32_200),
        cmocka_unit_test(test_greedy_q8_0_64), cmocka_unit_test(test_greedy_q4_0_64),
        cmocka_unit_test(test_logits_f32),     cmocka_unit_test(test_logits_q8_0),
        cmocka_unit_test(test_logits_q4_0),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
