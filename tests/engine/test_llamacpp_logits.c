/*
 * test_llamacpp_logits.c - the engine against llama.cpp: for every tiny model in
 * ../shared/testdata/llamacpp/models (8 architectures x F32/F16/Q8_0/Q4_0), the logits of the
 * 16-token prompt agree with llama.cpp's f32kv logits within the README's tolerances, both
 * from one batched pass and token by token; the 16 generation rows agree when llama.cpp's
 * greedy tokens are fed back (teacher forcing); and our greedy pick equals llama.cpp's
 * wherever its top-1/top-2 margin is well above the tolerance.
 */
#include "llamacpp_ref.h"

static const char *const models[] = {"llama-dense", "llama-moe", "qwen2-dense", "qwen2moe",
                                     "qwen3-dense", "qwen3moe",  "olmoe",       "granitemoe"};
static const char *const types[] = {"F32", "F16", "Q8_0", "Q4_0"};

/* ../shared/testdata/llamacpp/README.md section 5: F32 and (with Q8_0 activation
 * quantization emulated) Q8_0/Q4_0 about 1e-5; F16 about 5e-4. */
static double tolerance(const char *type)
{
    return strcmp(type, "F16") ? 1e-5 : 5e-4;
}

static void check_model(const char *model, const char *type)
{
    char path[1024], rel[256], what[256];
    snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.%s.gguf", model, type);
    TU_SHARED_PATH(path, rel);
    lr_ref r;
    snprintf(rel, sizeof rel, "testdata/llamacpp/logits/%s.%s.f32kv", model, type);
    lr_load(rel, &r);
    const double tol = tolerance(type);

    mica_err err;
    mica_model *m;
    if (mica_model_load(&m, path, &err)) fail_msg("%s", err.msg);
    assert_int_equal(mica_model_n_vocab(m), LR_N_VOCAB);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = LR_N_PROMPT + LR_N_GEN;
    cp.n_threads = 2;
    mica_context *batched, *incr;
    if (mica_context_new(&batched, m, cp, &err)) fail_msg("%s", err.msg);
    cp.n_threads = 1;
    if (mica_context_new(&incr, m, cp, &err)) fail_msg("%s", err.msg);

    float *logits = malloc(sizeof(float) * LR_N_PROMPT * LR_N_VOCAB);
    snprintf(what, sizeof what, "%s.%s", model, type);
    const double d_batch = lr_check_prompt(what, batched, 0, &r, tol, logits);
    const double d_incr = lr_check_incremental(what, incr, 0, &r, tol);
    const double d_gen = lr_check_generation(what, batched, 0, &r, tol, logits);
    printf("%-12s %-5s max|diff| batched %.2e incremental %.2e generation %.2e (tol %.0e)\n", model,
           type, d_batch, d_incr, d_gen, tol);
    free(logits);
    lr_free(&r);
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
