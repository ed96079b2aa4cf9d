/*
 * test_embed.c - mica_embed against llama.cpp's logits: in a model whose output matrix is its
 * token embedding (tied) with no bias or logit scale, the logits of a position are W·h with
 * h that position's normed hidden state, so W·e for our embedding e (the normalised mean of
 * the h) must be proportional to the mean of llama.cpp's logit rows. Also: unit length,
 * independence from the batch size, and bad input.
 */
#include "test_util.h"

#include "gguf/gguf.h"
#include "mica.h"

#include <math.h>

#define N_PROMPT 16
#define N_VOCAB  512

static const mica_token prompt[N_PROMPT] = {1,   300, 301, 302, 259, 261, 400, 450,
                                            511, 3,   13,  100, 258, 262, 350, 499};

/* Cosine of the angle between a and b, and the scale s minimising |s·a - b|. */
static double cosine(const double *a, const double *b, int n, double *scale)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += a[i] * b[i];
        aa += a[i] * a[i];
        bb += b[i] * b[i];
    }
    *scale = ab / aa;
    return ab / sqrt(aa * bb);
}

static void check_against_logits(const char *name, int n_tokens)
{
    char path[1024], ref[1024], rel[256];
    snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.F32.gguf", name);
    TU_SHARED_PATH(path, rel);
    snprintf(rel, sizeof rel, "testdata/llamacpp/logits/%s.F32.f32kv.bin", name);
    TU_SHARED_PATH(ref, rel);
    mica_model *m;
    mica_err err;
    if (mica_model_load(&m, path, &err)) fail_msg("%s", err.msg);
    const int32_t ne = mica_model_n_embd(m);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = 64;
    mica_context *c;
    if (mica_context_new(&c, m, cp, &err)) fail_msg("%s", err.msg);
    float *e = malloc(sizeof(float) * (size_t)ne);
    assert_int_equal(mica_embed(c, 0, prompt, n_tokens, e, &err), MICA_OK);
    double norm = 0;
    for (int i = 0; i < ne; i++) norm += (double)e[i] * e[i];
    assert_true(fabs(norm - 1.0) < 1e-5);
    assert_int_equal(mica_seq_len(c, 0), 0);

    /* W·e with W the tied token embedding, read straight from the file. */
    gguf_file *f;
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    const gguf_tensor *w = gguf_find_tensor(f, "token_embd.weight");
    assert_non_null(w);
    assert_null(gguf_find_tensor(f, "output.weight"));
    const float *wd = w->data;
    double we[N_VOCAB], mean_ref[N_VOCAB] = {0};
    for (int v = 0; v < N_VOCAB; v++) {
        we[v] = 0;
        for (int k = 0; k < ne; k++) we[v] += (double)wd[(size_t)v * (size_t)ne + k] * e[k];
    }
    size_t len;
    float *logits = (float *)tu_read_file(ref, &len);
    for (int t = 0; t < n_tokens; t++)
        for (int v = 0; v < N_VOCAB; v++) mean_ref[v] += logits[t * N_VOCAB + v] / n_tokens;
    double scale;
    const double cos = cosine(we, mean_ref, N_VOCAB, &scale);
    double worst = 0;
    for (int v = 0; v < N_VOCAB; v++) worst = fmax(worst, fabs(scale * we[v] - mean_ref[v]));
    printf("%s, %d tokens: cos(W e, mean llama.cpp logits) = %.9f, max |diff| %.2e\n", name,
           n_tokens, cos, worst);
    assert_true(cos > 1 - 1e-9);
    assert_true(worst < 1e-4);
    free(logits);
    gguf_close(f);
    free(e);
    mica_context_free(c);
    mica_model_free(m);
}

static void test_embedding_matches_llamacpp(void **state)
{
    (void)state;
    check_against_logits("qwen2-dense", 1);
    check_against_logits("qwen2-dense", N_PROMPT);
    check_against_logits("qwen3-dense", N_PROMPT);
}

static void test_batch_size_and_errors(void **state)
{
    (void)state;
    char path[1024];
    TU_SHARED_PATH(path, "testdata/llamacpp/models/llama-moe.F32.gguf");
    mica_model *m;
    mica_err err;
    if (mica_model_load(&m, path, &err)) fail_msg("%s", err.msg);
    const int32_t ne = mica_model_n_embd(m);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = 5; /* batches of 5: the 16 tokens go in 4 passes */
    mica_context *small, *big;
    if (mica_context_new(&small, m, cp, &err)) fail_msg("%s", err.msg);
    cp.n_ctx = 64;
    if (mica_context_new(&big, m, cp, &err)) fail_msg("%s", err.msg);
    float a[256], b[256];
    assert_true(ne <= 256);
    assert_int_equal(mica_embed(small, 0, prompt, 5, a, &err), MICA_OK);
    assert_int_equal(mica_embed(big, 0, prompt, 5, b, &err), MICA_OK);
    tu_check_close("embedding, context 5 vs 64", a, b, (size_t)ne, 1e-6);
    assert_int_equal(mica_embed(small, 0, prompt, 6, a, &err), MICA_ERANGE);
    assert_int_equal(mica_embed(big, 0, prompt, 0, a, &err), MICA_EINVAL);
    const mica_token bad[2] = {1, N_VOCAB};
    assert_int_equal(mica_embed(big, 0, bad, 2, a, &err), MICA_ERANGE);
    mica_context_free(small);
    mica_context_free(big);
    mica_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding_matches_llamacpp),
        cmocka_unit_test(test_batch_size_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
