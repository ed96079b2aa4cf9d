/*
 * test_model_repack.c - tests src/model/model_repack.c on random Q4_0 models from
 * model_synth (a dense llama whose output has 328 rows, not whole tiles; a Mixtral-style
 * MoE with an untied output; a tied qwen2): after model_repack every Q4_0 matrix the
 * kernels can read interleaved is in that layout (the embedding, a tied output and matrices
 * of partial tiles are not), the model owns the copy, and the logits of a prompt and of the
 * next decoded token are bit for bit those of the model as loaded; MICA_NO_REPACK=1 keeps
 * the file's layout. SKIP on CPUs whose kernels read no interleaved layout.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "test_util.h"

#include "model/model.h"
#include "model/model_synth.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_TOK 9

static model *synth_load(const model_synth_params *p, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/test_model_repack_%ld_%s", tu_tmpdir(), (long)getpid(), name);
    mica_err err;
    if (model_synth_write(path, p, &err)) fail_msg("model_synth_write: %s", err.msg);
    model *m;
    if (model_load(&m, path, &err)) fail_msg("model_load: %s", err.msg);
    unlink(path); /* the mapping stays */
    return m;
}

/* Logits of N_TOK prompt tokens in one batch, then of one more token decoded alone. */
static float *run_logits(const model *m, tensor_pool *pool)
{
    mica_err err;
    const int32_t nv = m->hp.n_vocab, n = N_TOK + 1;
    const size_t nkv = (size_t)m->hp.n_head_kv * m->hp.head_dim;
    model_kv kv = {calloc((size_t)m->hp.n_layer * n * nkv, 4),
                   calloc((size_t)m->hp.n_layer * n * nkv, 4), 1, n};
    float *logits = malloc((size_t)n * nv * sizeof *logits);
    model_work *w;
    assert_non_null(kv.k && kv.v && logits);
    if (model_work_new(&w, m, n, n, 2, &err)) fail_msg("%s", err.msg);
    model_batch_tok batch[N_TOK + 1];
    for (int32_t t = 0; t < n; t++) batch[t] = (model_batch_tok){(t * 37 + 5) % nv, t, 0, true};
    if (model_forward(m, w, &kv, pool, batch, N_TOK, logits, &err)) fail_msg("%s", err.msg);
    if (model_forward(m, w, &kv, pool, batch + N_TOK, 1, logits + (size_t)N_TOK * nv, &err))
        fail_msg("%s", err.msg);
    model_work_free(w);
    free(kv.k);
    free(kv.v);
    return logits;
}

static int count_interleaved(const model *m)
{
    int n = m->output.layout == TENSOR_LAYOUT_Q4_0_X16;
    for (int32_t il = 0; il < m->hp.n_layer; il++)
        for (size_t k = 0; k < model_n_layer_matrices; k++) {
            const tensor_view *v =
                (const tensor_view *)((const char *)&m->layers[il] + model_layer_matrices[k]);
            n += v->layout == TENSOR_LAYOUT_Q4_0_X16;
        }
    return n;
}

static void check_model(const model_synth_params *p, const char *name, int want_interleaved)
{
    const tensor_view probe = {.data = "", .type = GGUF_T_Q4_0, .ne = {32, 16, 1, 1}};
    if (!tensor_view_repackable(&probe)) {
        printf("SKIP: the %s kernels read no interleaved layout\n", tensor_simd_name());
        skip();
    }
    mica_err err;
    tensor_pool *pool;
    if (tensor_pool_new(&pool, 2, &err)) fail_msg("%s", err.msg);
    model *plain = synth_load(p, name), *packed = synth_load(p, name);
    if (model_repack(packed, &err)) fail_msg("model_repack: %s", err.msg);
    const int n = count_interleaved(packed);
    printf("%s: %d matrices interleaved\n", name, n);
    assert_int_equal(n, want_interleaved);
    assert_true(packed->repacked != NULL);
    assert_int_equal(packed->tok_embd.layout, TENSOR_LAYOUT_GGUF);
    float *want = run_logits(plain, pool), *got = run_logits(packed, pool);
    const int64_t total = (int64_t)(N_TOK + 1) * plain->hp.n_vocab;
    for (int64_t i = 0; i < total; i++)
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
            fail_msg("%s: logit %lld: %.9g interleaved, %.9g as loaded", name, (long long)i,
                     (double)got[i], (double)want[i]);
    free(want);
    free(got);
    model_free(plain);
    model_free(packed);
    tensor_pool_free(pool);
}

static void test_dense_llama(void **state)
{
    (void)state;
    model_synth_params p = model_synth_default_params();
    p.type = GGUF_T_Q4_0;
    p.n_vocab = 328; /* the output's last 8 rows are no whole tile: it stays as it is */
    check_model(&p, "dense", 2 * 7);
}

static void test_moe(void **state)
{
    (void)state;
    model_synth_params p = model_synth_default_params();
    p.type = GGUF_T_Q4_0;
    p.n_expert = 4;
    p.n_expert_used = 2;
    p.n_ff = 96;
    /* q, k, v, o and the three expert stacks (the router is F32), and the output */
    check_model(&p, "moe", 2 * 7 + 1);
}

static void test_tied_qwen2(void **state)
{
    (void)state;
    mica_err err;
    model_synth_params p = model_synth_default_params();
    if (model_synth_arch_from_name(&p, "qwen2", &err)) fail_msg("%s", err.msg);
    p.type = GGUF_T_Q4_0;
    p.n_head_kv = 2; /* the tied output is the embedding: never interleaved */
    check_model(&p, "qwen2", 2 * 7);
}

static void test_no_repack_variable(void **state)
{
    (void)state;
    mica_err err;
    model_synth_params p = model_synth_default_params();
    p.type = GGUF_T_Q4_0;
    model *m = synth_load(&p, "env");
    setenv("MICA_NO_REPACK", "1", 1);
    const mica_status st = model_repack(m, &err);
    unsetenv("MICA_NO_REPACK");
    assert_int_equal(st, MICA_OK);
    assert_null(m->repacked);
    assert_int_equal(count_interleaved(m), 0);
    model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_llama),
        cmocka_unit_test(test_moe),
        cmocka_unit_test(test_tied_qwen2),
        cmocka_unit_test(test_no_repack_variable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
