/*
 * test_llamacpp_logits.c - the engine against llama.cpp: for every tiny model in
 * ../shared/testdata/llamacpp/models (8 architectures x F32/F16/Q8_0/Q4_0), the logits of the
 * 16-token prompt agree with llama.cpp's f32kv logits within the README's tolerances, both
 * from one batched pass and token by token; the 16 generation rows agree when llama.cpp's
 * greedy tokens are fed back (teacher forcing); and our greedy pick equals llama.cpp's
 * wherever its top-1/top-2 margin is well above the tolerance.
 */
#include "test_util.h"

#include "mica.h"

#include <math.h>

#define N_PROMPT 16
#define N_GEN    16
#define N_VOCAB  512

static const char *const models[] = {"llama-dense", "llama-moe", "qwen2-dense", "qwen2moe",
                                     "qwen3-dense", "qwen3moe",  "olmoe",       "granitemoe"};
static const char *const types[] = {"F32", "F16", "Q8_0", "Q4_0"};

/* ../shared/testdata/llamacpp/README.md section 5: F32 and (with Q8_0 activation
 * quantization emulated) Q8_0/Q4_0 about 1e-5; F16 about 5e-4. */
static double tolerance(const char *type)
{
    return strcmp(type, "F16") ? 1e-5 : 5e-4;
}

typedef struct ref_data {
    float *prompt_logits; /* (N_PROMPT, N_VOCAB) */
    float *gen_logits;    /* (N_GEN, N_VOCAB) */
    mica_token prompt[N_PROMPT];
    mica_token greedy[N_GEN];
    double margin[N_GEN];
} ref_data;

static void load_ref(const char *model, const char *type, ref_data *r)
{
    char path[1024], rel[256];
    size_t len;
    snprintf(rel, sizeof rel, "testdata/llamacpp/logits/%s.%s.f32kv.json", model, type);
    TU_SHARED_PATH(path, rel);
    char *json = tu_read_file(path, NULL);
    double v[64];
    assert_int_equal(tu_json_numbers(json, "token_ids", v, 64), N_PROMPT);
    for (int i = 0; i < N_PROMPT; i++) r->prompt[i] = (mica_token)v[i];
    assert_int_equal(tu_json_numbers(json, "tokens", v, 64), N_GEN);
    for (int i = 0; i < N_GEN; i++) r->greedy[i] = (mica_token)v[i];
    assert_int_equal(tu_json_numbers(json, "top1_minus_top2", r->margin, N_GEN), N_GEN);
    free(json);
    snprintf(rel, sizeof rel, "testdata/llamacpp/logits/%s.%s.f32kv.bin", model, type);
    TU_SHARED_PATH(path, rel);
    r->prompt_logits = (float *)tu_read_file(path, &len);
    assert_int_equal(len, sizeof(float) * N_PROMPT * N_VOCAB);
    snprintf(rel, sizeof rel, "testdata/llamacpp/logits/%s.%s.f32kv.gen.bin", model, type);
    TU_SHARED_PATH(path, rel);
    r->gen_logits = (float *)tu_read_file(path, &len);
    assert_int_equal(len, sizeof(float) * N_GEN * N_VOCAB);
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void check_model(const char *model, const char *type)
{
    char path[1024], rel[256], what[256];
    snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.%s.gguf", model, type);
    TU_SHARED_PATH(path, rel);
    ref_data r;
    load_ref(model, type, &r);
    const double tol = tolerance(type);

    mica_err err;
    mica_model *m;
    if (mica_model_load(&m, path, &err)) fail_msg("%s", err.msg);
    assert_int_equal(mica_model_n_vocab(m), N_VOCAB);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = N_PROMPT + N_GEN;
    cp.n_threads = 2;
    mica_context *batched, *incr;
    if (mica_context_new(&batched, m, cp, &err)) fail_msg("%s", err.msg);
    cp.n_threads = 1;
    if (mica_context_new(&incr, m, cp, &err)) fail_msg("%s", err.msg);

    float *logits = malloc(sizeof(float) * N_PROMPT * N_VOCAB);
    if (mica_decode(batched, 0, r.prompt, N_PROMPT, 0, true, logits, &err)) fail_msg("%s", err.msg);
    snprintf(what, sizeof what, "%s.%s batched prompt logits", model, type);
    double d_batch = tu_check_close(what, logits, r.prompt_logits, N_PROMPT * N_VOCAB, tol);

    double d_incr = 0;
    for (int i = 0; i < N_PROMPT; i++) {
        if (mica_decode(incr, 0, &r.prompt[i], 1, i, false, logits, &err)) fail_msg("%s", err.msg);
        snprintf(what, sizeof what, "%s.%s incremental prompt row %d", model, type, i);
        double d = tu_check_close(what, logits, r.prompt_logits + i * N_VOCAB, N_VOCAB, tol);
        d_incr = d > d_incr ? d : d_incr;
    }

    /* Teacher forcing: row 0 is the last prompt row, row k follows greedy token k-1. */
    double d_gen = 0;
    for (int k = 0; k < N_GEN; k++) {
        if (k > 0 &&
            mica_decode(batched, 0, &r.greedy[k - 1], 1, N_PROMPT + k - 1, false, logits, &err))
            fail_msg("%s", err.msg);
        if (k == 0) memcpy(logits, logits + (N_PROMPT - 1) * N_VOCAB, sizeof(float) * N_VOCAB);
        snprintf(what, sizeof what, "%s.%s generation row %d", model, type, k);
        double d = tu_check_close(what, logits, r.gen_logits + k * N_VOCAB, N_VOCAB, tol);
        d_gen = d > d_gen ? d : d_gen;
        if (r.margin[k] > 10 * tol && argmax(logits, N_VOCAB) != r.greedy[k])
            fail_msg("%s.%s: greedy token %d is %d, llama.cpp's is %d (margin %g)", model, type, k,
                     argmax(logits, N_VOCAB), r.greedy[k], r.margin[k]);
    }
    printf("%-12s %-5s max|diff| batched %.2e incremental %.2e generation %.2e (tol %.0e)\n", model,
           type, d_batch, d_incr, d_gen, tol);
    free(logits);
    free(r.prompt_logits);
    free(r.gen_logits);
    mica_context_free(batched);
    mica_context_free(incr);
    mica_model_free(m);
}

static void test_model(void **state)
{
    const int idx = (int)(intptr_t)*state;
    check_model(models[idx / 4], types[idx % 4]);
}

#define CASE(i) cmocka_unit_test_prestate(test_model, (void *)(intptr_t)(i))

int main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(0),  CASE(1),  CASE(2),  CASE(3),  CASE(4),  CASE(5),  CASE(6),  CASE(7),
        CASE(8),  CASE(9),  CASE(10), CASE(11), CASE(12), CASE(13), CASE(14), CASE(15),
        CASE(16), CASE(17), CASE(18), CASE(19), CASE(20), CASE(21), CASE(22), CASE(23),
        CASE(24), CASE(25), CASE(26), CASE(27), CASE(28), CASE(29), CASE(30), CASE(31),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
