/*
 * test_train_forward.c - tests that the training forward (src/train) computes the inference
 * forward's logits (src/model/forward.c, the reference: it matches llama.cpp) on random F32
 * models from model_synth: dense llama (untied, GQA), qwen2 (tied, q/k/v biases, NEOX RoPE),
 * Mixtral-style MoE, several sequences in one batch; and that a model written back by
 * train_model_write loads and gives the same logits again.
 */
#include "test_util.h"

#include "model/model.h"
#include "model/model_synth.h"
#include "train/train.h"

#include <math.h>
#include <unistd.h>

#define N_TOK 11

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/test_train_forward_%ld_%s", tu_tmpdir(), (long)getpid(), name);
}

static model *synth_load(const model_synth_params *p, const char *name, char *path, size_t cap)
{
    mica_err err;
    tmp_path(path, cap, name);
    if (model_synth_write(path, p, &err)) fail_msg("model_synth_write: %s", err.msg);
    model *m;
    if (model_load(&m, path, &err)) fail_msg("model_load: %s", err.msg);
    return m;
}

/* Inference logits of one sequence, all positions in one batch. */
static void infer_logits(const model *m, tensor_pool *pool, const int32_t *tokens, int32_t n,
                         float *logits)
{
    mica_err err;
    const size_t nkv = (size_t)m->hp.n_head_kv * m->hp.head_dim;
    model_kv kv = {calloc((size_t)m->hp.n_layer * n * nkv, 4),
                   calloc((size_t)m->hp.n_layer * n * nkv, 4), 1, n};
    model_work *w;
    if (model_work_new(&w, m, n, n, 2, &err)) fail_msg("%s", err.msg);
    model_batch_tok batch[N_TOK];
    for (int32_t t = 0; t < n; t++) batch[t] = (model_batch_tok){tokens[t], t, 0, true};
    if (model_forward(m, w, &kv, pool, batch, n, logits, &err)) fail_msg("%s", err.msg);
    model_work_free(w);
    free(kv.k);
    free(kv.v);
}

static void expect_close(const float *got, const float *want, int64_t n, double tol,
                         const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= tol * (1.0 + fabs((double)want[i]))))
            fail_msg("%s: logit %lld: training %.9g, inference %.9g", what, (long long)i,
                     (double)got[i], (double)want[i]);
}

static void tokens_for(int32_t n_vocab, int seq, int32_t *tokens)
{
    for (int t = 0; t < N_TOK; t++) tokens[t] = (int32_t)((7 + 37 * t + 101 * seq) % n_vocab);
}

/* Two sequences through the training forward; each must equal its own inference pass. */
static void check_model(const model *m, const char *what)
{
    mica_err err;
    tensor_pool *pool;
    if (tensor_pool_new(&pool, 2, &err)) fail_msg("%s", err.msg);
    train_model *tm;
    if (train_model_from_model(&tm, m, &err)) fail_msg("%s", err.msg);
    train_work *w;
    if (train_work_new(&w, tm, 2, N_TOK, &err)) fail_msg("%s", err.msg);
    const int32_t nv = m->hp.n_vocab;
    int32_t tokens[2 * N_TOK], targets[2 * N_TOK];
    tokens_for(nv, 0, tokens);
    tokens_for(nv, 1, tokens + N_TOK);
    for (int i = 0; i < 2 * N_TOK; i++) targets[i] = i % 3 ? tokens[(i + 1) % (2 * N_TOK)] : -1;
    float loss;
    if (train_forward(tm, w, pool, tokens, targets, false, 0, &loss, &err)) fail_msg("%s", err.msg);
    assert_true(isfinite(loss) && loss > 0.0f);
    float *want = malloc((size_t)N_TOK * nv * sizeof(float));
    for (int s = 0; s < 2; s++) {
        infer_logits(m, pool, tokens + s * N_TOK, N_TOK, want);
        expect_close(train_work_logits(w) + (size_t)s * N_TOK * nv, want, (int64_t)N_TOK * nv, 1e-5,
                     what);
    }
    free(want);
    train_work_free(w);
    train_model_free(tm);
    tensor_pool_free(pool);
}

static model_synth_params f32_params(void)
{
    model_synth_params p = model_synth_default_params();
    p.type = GGUF_T_F32;
    p.n_head_kv = 2;
    return p;
}

static void test_llama_dense(void **state)
{
    (void)state;
    char path[512];
    model_synth_params p = f32_params();
    model *m = synth_load(&p, "llama.gguf", path, sizeof path);
    check_model(m, "llama");
    model_free(m);
    unlink(path);
}

static void test_qwen2(void **state)
{
    (void)state;
    char path[512];
    mica_err err;
    model_synth_params p = f32_params();
    if (model_synth_arch_from_name(&p, "qwen2", &err)) fail_msg("%s", err.msg);
    model *m = synth_load(&p, "qwen2.gguf", path, sizeof path);
    assert_ptr_equal(m->output.data, m->tok_embd.data);
    assert_non_null(m->layers[0].bq);
    check_model(m, "qwen2");
    model_free(m);
    unlink(path);
}

static void test_moe(void **state)
{
    (void)state;
    char path[512];
    model_synth_params p = f32_params();
    p.n_expert = 4;
    p.n_expert_used = 2;
    model *m = synth_load(&p, "moe.gguf", path, sizeof path);
    check_model(m, "moe");
    model_free(m);
    unlink(path);
}

/* Written back as F32 GGUF (keys copied from the source), the model loads and its inference
 * logits equal the training forward's. */
static void test_write_roundtrip(void **state)
{
    (void)state;
    char path[512], out[512];
    mica_err err;
    model_synth_params p = f32_params();
    p.n_expert = 4;
    p.n_expert_used = 2;
    model *m = synth_load(&p, "rt.gguf", path, sizeof path);
    train_model *tm;
    if (train_model_from_model(&tm, m, &err)) fail_msg("%s", err.msg);
    for (int64_t i = 0; i < tm->layers[1].wq->n; i++) tm->layers[1].wq->w[i] *= 1.5f;
    tmp_path(out, sizeof out, "rt_out.gguf");
    if (train_model_write(tm, out, m->gguf, &err)) fail_msg("%s", err.msg);
    model *m2;
    if (model_load(&m2, out, &err)) fail_msg("%s", err.msg);
    assert_int_equal(m2->hp.n_expert, 4);
    assert_int_equal(m2->layers[1].wq.type, GGUF_T_F32);
    assert_true(((const float *)m2->layers[1].wq.data)[5] == tm->layers[1].wq->w[5]);
    check_model(m2, "written back");
    model_free(m2);
    train_model_free(tm);
    model_free(m);
    unlink(path);
    unlink(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_dense),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_moe),
        cmocka_unit_test(test_write_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
