/*
 * test_train_loop.c - tests src/train as a whole: a tiny model's loss falls on a repeated tiny
 * dataset (dense and MoE, from scratch); gradients accumulated over two micro-batches equal
 * one batch's; results are bit-identical for 1 and 3 threads; LoRA dropout is reproducible
 * from its seed; bad adapter settings are errors; an adapter written by train_lora_write loads with
 * model/lora.c and the inference pass with it computes the training forward's logits. Prints
 * training tokens/s on a small model (measured, not asserted).
 */
#include "train_test_util.h"

#include "model/lora.h"
#include "model/model_synth.h"
#include "train/train.h"

#include <math.h>
#include <unistd.h>

/* Sequences of a fixed rule (next = 3 * cur + seq mod 16), targets the next token. */
static void rule_data(int n_seq, int n_tok, int32_t *tokens, int32_t *targets)
{
    for (int s = 0; s < n_seq; s++) {
        int32_t cur = (int32_t)(s * 5 % 16);
        for (int t = 0; t < n_tok; t++) {
            tokens[s * n_tok + t] = cur;
            cur = (3 * cur + s + 1) % 16;
            targets[s * n_tok + t] = cur;
        }
    }
}

static float train_steps(train_model *tm, tensor_pool *pool, int n_steps, float *first)
{
    mica_err err;
    enum { NS = 4, NT = 12 };
    int32_t tokens[NS * NT], targets[NS * NT];
    rule_data(NS, NT, tokens, targets);
    train_work *w;
    if (train_work_new(&w, tm, NS, NT, &err)) fail_msg("%s", err.msg);
    train_opt_cfg c = train_opt_default();
    c.lr = 1e-2f;
    c.warmup = 5;
    c.total = n_steps;
    float loss = 0.0f;
    for (int step = 0; step < n_steps; step++) {
        train_model_zero_grad(tm);
        if (train_forward(tm, w, pool, tokens, targets, true, (uint64_t)step, &loss, &err))
            fail_msg("%s", err.msg);
        if (step == 0 && first) *first = loss;
        if (train_backward(tm, w, pool, 1.0f, &err)) fail_msg("%s", err.msg);
        if (train_adamw_step(tm, &c, step, NULL, &err)) fail_msg("%s", err.msg);
    }
    train_work_free(w);
    return loss;
}

static void check_learns(int n_expert)
{
    train_model *tm = train_test_model(16, n_expert, 1);
    tm->moe_aux_coef = n_expert ? 0.01f : 0.0f;
    float first = 0.0f;
    const float last = train_steps(tm, NULL, 80, &first);
    printf("loss %.4f -> %.4f after 80 steps (%s)\n", (double)first, (double)last,
           n_expert ? "moe" : "dense");
    assert_true(first > 2.0f); /* about log(16) at the start */
    assert_true(last < 0.25f * first);
    train_model_free(tm);
}

static void test_loss_falls_dense(void **state)
{
    (void)state;
    check_learns(0);
}

static void test_loss_falls_moe(void **state)
{
    (void)state;
    check_learns(4);
}

/* Two micro-batches of one sequence with scale 1/2 = one batch of both (same target counts). */
static void test_accumulation(void **state)
{
    (void)state;
    mica_err err;
    enum { NT = 10 };
    int32_t tokens[2 * NT], targets[2 * NT];
    rule_data(2, NT, tokens, targets);
    train_model *a = train_test_model(16, 0, 2), *b = train_test_model(16, 0, 2);
    train_work *w1 = NULL, *w2 = NULL;
    if (train_work_new(&w1, a, 1, NT, &err) || train_work_new(&w2, b, 2, NT, &err))
        fail_msg("%s", err.msg);
    float loss;
    train_model_zero_grad(a);
    train_model_zero_grad(b);
    for (int s = 0; s < 2; s++) {
        if (train_forward(a, w1, NULL, tokens + s * NT, targets + s * NT, true, 0, &loss, &err))
            fail_msg("%s", err.msg);
        if (train_backward(a, w1, NULL, 0.5f, &err)) fail_msg("%s", err.msg);
    }
    if (train_forward(b, w2, NULL, tokens, targets, true, 0, &loss, &err)) fail_msg("%s", err.msg);
    if (train_backward(b, w2, NULL, 1.0f, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < a->n_tensors; i++) {
        const train_tensor *ta = a->tensors[i], *tb = b->tensors[i];
        for (int64_t j = 0; j < ta->n; j++)
            if (fabsf(ta->g[j] - tb->g[j]) > 1e-6f + 1e-4f * fabsf(tb->g[j]))
                fail_msg("%s[%lld]: accumulated %.9g, one batch %.9g", ta->name, (long long)j,
                         (double)ta->g[j], (double)tb->g[j]);
    }
    train_work_free(w1);
    train_work_free(w2);
    train_model_free(a);
    train_model_free(b);
}

/* The same steps on 1 and 3 threads leave the same bits (MoE, with LoRA dropout). */
static void test_threads_deterministic(void **state)
{
    (void)state;
    mica_err err;
    tensor_pool *p3;
    if (tensor_pool_new(&p3, 3, &err)) fail_msg("%s", err.msg);
    train_model *a = train_test_model(16, 4, 3), *b = train_test_model(16, 4, 3);
    train_lora_cfg lc = {"q,v,o", 4, 8.0f, 0.1f, 9};
    if (train_lora_add(a, &lc, &err) || train_lora_add(b, &lc, &err)) fail_msg("%s", err.msg);
    const float la = train_steps(a, NULL, 6, NULL), lb = train_steps(b, p3, 6, NULL);
    assert_true(la == lb);
    for (int i = 0; i < a->n_tensors; i++)
        assert_memory_equal(a->tensors[i]->w, b->tensors[i]->w,
                            (size_t)a->tensors[i]->n * sizeof(float));
    train_model_free(a);
    train_model_free(b);
    tensor_pool_free(p3);
}

/* Dropout: the same seed gives the same loss, another seed another; evaluation has none. */
static void test_dropout_seeded(void **state)
{
    (void)state;
    mica_err err;
    train_model *tm = train_test_model(16, 0, 4);
    train_lora_cfg lc = {"q,k,v,o,gate,up,down", 4, 8.0f, 0.5f, 9};
    if (train_lora_add(tm, &lc, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < tm->n_tensors; i++) /* B nonzero, so that A's input matters */
        if (strstr(tm->tensors[i]->name, ".lora_b"))
            for (int64_t j = 0; j < tm->tensors[i]->n; j++) tm->tensors[i]->w[j] = 0.05f;
    enum { NT = 8 };
    int32_t tokens[NT], targets[NT];
    rule_data(1, NT, tokens, targets);
    train_work *w;
    if (train_work_new(&w, tm, 1, NT, &err)) fail_msg("%s", err.msg);
    float l1, l2, l3, e1, e2;
    assert_int_equal(train_forward(tm, w, NULL, tokens, targets, true, 11, &l1, &err), MICA_OK);
    assert_int_equal(train_forward(tm, w, NULL, tokens, targets, true, 11, &l2, &err), MICA_OK);
    assert_int_equal(train_forward(tm, w, NULL, tokens, targets, true, 12, &l3, &err), MICA_OK);
    assert_int_equal(train_forward(tm, w, NULL, tokens, targets, false, 11, &e1, &err), MICA_OK);
    assert_int_equal(train_forward(tm, w, NULL, tokens, targets, false, 12, &e2, &err), MICA_OK);
    assert_true(l1 == l2);
    assert_true(l1 != l3);
    assert_true(e1 == e2 && e1 != l1);
    train_work_free(w);
    train_model_free(tm);
}

/* Bad adapter settings are errors naming the problem, and leave the model trainable. */
static void test_lora_bad_config(void **state)
{
    (void)state;
    mica_err err;
    train_model *tm = train_test_model(16, 0, 1), *moe = train_test_model(16, 4, 1);
    const struct {
        train_model *m;
        train_lora_cfg c;
        const char *msg;
    } bad[] = {
        {tm, {"q,attn", 4, 8.0f, 0.0f, 1}, "LoRA target 'attn'"},
        {tm, {"", 4, 8.0f, 0.0f, 1}, "no LoRA targets"},
        {tm, {"q", 33, 8.0f, 0.0f, 1}, "LoRA rank 33"},
        {tm, {"q", 4, 8.0f, 1.0f, 1}, "dropout"},
        {tm, {"q", 4, 0.0f, 0.0f, 1}, "alpha"},
        {moe, {"q,gate", 40, 8.0f, 0.0f, 1}, "LoRA rank 40"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_not_equal(train_lora_add(bad[i].m, &bad[i].c, &err), MICA_OK);
        if (!strstr(err.msg, bad[i].msg)) fail_msg("case %zu: '%s'", i, err.msg);
        assert_non_null(bad[i].m->tok_embd->g);
    }
    const train_lora_cfg ok = {"query_key_value", 4, 8.0f, 0.0f, 1};
    assert_int_equal(train_lora_add(tm, &ok, &err), MICA_OK);
    assert_non_null(tm->layers[1].lora[TRAIN_LORA_V].a);
    assert_null(tm->layers[1].lora[TRAIN_LORA_O].a);
    assert_int_not_equal(train_lora_add(tm, &ok, &err), MICA_OK);
    assert_non_null(strstr(err.msg, "already"));
    const train_lora_cfg experts = {"gate,up,down", 4, 8.0f, 0.0f, 1};
    assert_int_equal(train_lora_add(moe, &experts, &err), MICA_OK);
    assert_int_equal(moe->layers[0].lora[TRAIN_LORA_DOWN].a->ne[2], 4); /* one pair per expert */
    train_model_free(tm);
    train_model_free(moe);
}

/* An adapter trained here, written and loaded by model/lora.c, gives the inference pass the
 * training forward's logits: a dense model, or a MoE one (per-expert adapters). */
static void check_adapter_roundtrip(int n_expert)
{
    mica_err err;
    char base[512], ad[512];
    snprintf(base, sizeof base, "%s/test_train_loop_%ld_base.gguf", tu_tmpdir(), (long)getpid());
    snprintf(ad, sizeof ad, "%s/test_train_loop_%ld_lora.gguf", tu_tmpdir(), (long)getpid());
    model_synth_params p = model_synth_default_params();
    p.type = GGUF_T_F32;
    p.n_expert = n_expert;
    p.n_expert_used = n_expert ? 2 : 0;
    if (model_synth_write(base, &p, &err)) fail_msg("%s", err.msg);
    model *m;
    if (model_load(&m, base, &err)) fail_msg("%s", err.msg);
    train_model *tm;
    if (train_model_from_model(&tm, m, &err)) fail_msg("%s", err.msg);
    train_lora_cfg lc = {"q,k,v,o,gate,up,down,output", 4, 8.0f, 0.0f, 1};
    if (train_lora_add(tm, &lc, &err)) fail_msg("%s", err.msg);
    core_rng r;
    core_rng_seed(&r, 5);
    for (int i = 0; i < tm->n_tensors; i++)
        if (strstr(tm->tensors[i]->name, ".lora_b"))
            for (int64_t j = 0; j < tm->tensors[i]->n; j++)
                tm->tensors[i]->w[j] = (float)(0.2 * (core_rng_uniform(&r) - 0.5));
    if (train_lora_write(tm, ad, 8.0f, &err)) fail_msg("%s", err.msg);
    enum { NT = 9 };
    int32_t tokens[NT], targets[NT];
    for (int t = 0; t < NT; t++) tokens[t] = targets[t] = (int32_t)(1 + 29 * t % 300);
    train_work *tw;
    float loss;
    if (train_work_new(&tw, tm, 1, NT, &err)) fail_msg("%s", err.msg);
    if (train_forward(tm, tw, NULL, tokens, targets, false, 0, &loss, &err))
        fail_msg("%s", err.msg);

    lora_adapter *a;
    if (lora_load(&a, m, ad, &err)) fail_msg("%s", err.msg);
    lora_work *lw = NULL;
    model_work *mw = NULL;
    if (lora_work_new(&lw, m, 1, NT, &err) || model_work_new(&mw, m, NT, NT, 1, &err))
        fail_msg("%s", err.msg);
    const float one = 1.0f;
    const lora_adapter *list[1] = {a};
    if (lora_work_set(lw, 0, list, &one, 1, &err)) fail_msg("%s", err.msg);
    model_work_set_lora(mw, lw);
    const size_t nkv = (size_t)m->hp.n_head_kv * m->hp.head_dim;
    model_kv kv = {calloc((size_t)m->hp.n_layer * NT * nkv, 4),
                   calloc((size_t)m->hp.n_layer * NT * nkv, 4), 1, NT};
    model_batch_tok batch[NT];
    for (int t = 0; t < NT; t++) batch[t] = (model_batch_tok){tokens[t], t, 0, true};
    float *logits = malloc((size_t)NT * m->hp.n_vocab * sizeof(float));
    if (model_forward(m, mw, &kv, NULL, batch, NT, logits, &err)) fail_msg("%s", err.msg);
    const float *want = train_work_logits(tw);
    double max_diff = 0.0, max_delta = 0.0;
    for (int64_t i = 0; i < (int64_t)NT * m->hp.n_vocab; i++)
        if (fabs((double)logits[i] - want[i]) > 1e-4 * (1 + fabs((double)want[i])))
            fail_msg("logit %lld: inference with the adapter %.9g, training %.9g", (long long)i,
                     (double)logits[i], (double)want[i]);
        else if (fabs((double)logits[i] - want[i]) > max_diff)
            max_diff = fabs((double)logits[i] - want[i]);
    /* The adapter must matter: without it the logits differ. */
    model_work_set_lora(mw, NULL);
    float *plain = malloc((size_t)NT * m->hp.n_vocab * sizeof(float));
    if (model_forward(m, mw, &kv, NULL, batch, NT, plain, &err)) fail_msg("%s", err.msg);
    for (int64_t i = 0; i < (int64_t)NT * m->hp.n_vocab; i++)
        max_delta = fmax(max_delta, fabs((double)plain[i] - logits[i]));
    assert_true(max_delta > 100 * max_diff && max_delta > 1e-3);
    free(plain);
    free(logits);
    free(kv.k);
    free(kv.v);
    model_work_free(mw);
    lora_work_free(lw);
    lora_free(a);
    train_work_free(tw);
    train_model_free(tm);
    model_free(m);
    unlink(base);
    unlink(ad);
}

static void test_adapter_roundtrip(void **state)
{
    (void)state;
    check_adapter_roundtrip(0);
}

static void test_adapter_roundtrip_moe(void **state)
{
    (void)state;
    check_adapter_roundtrip(4);
}

/* Training throughput of a small model (model_synth's default shape, F32): printed. */
static void test_tokens_per_second(void **state)
{
    (void)state;
    mica_err err;
    train_shape s = {"llama", 320, 128, 64, 2, 4, 2, 128, 0, 0, false, false, 1e4f, 1e-5f};
    train_model *tm;
    if (train_model_init(&tm, &s, 1, &err)) fail_msg("%s", err.msg);
    tensor_pool *pool;
    if (tensor_pool_new(&pool, 2, &err)) fail_msg("%s", err.msg);
    enum { NS = 4, NT = 64 };
    int32_t *tokens = malloc(NS * NT * sizeof(int32_t)), *targets = malloc(NS * NT * 4);
    for (int i = 0; i < NS * NT; i++) tokens[i] = targets[i] = (int32_t)((i * 7 + 3) % 320);
    train_work *w;
    if (train_work_new(&w, tm, NS, NT, &err)) fail_msg("%s", err.msg);
    train_opt_cfg c = train_opt_default();
    c.total = 4;
    float loss;
    const double t0 = core_now();
    for (int step = 0; step < 4; step++) {
        train_model_zero_grad(tm);
        if (train_forward(tm, w, pool, tokens, targets, true, 0, &loss, &err))
            fail_msg("%s", err.msg);
        if (train_backward(tm, w, pool, 1.0f, &err)) fail_msg("%s", err.msg);
        if (train_adamw_step(tm, &c, step, NULL, &err)) fail_msg("%s", err.msg);
    }
    const double dt = core_now() - t0;
    printf("training: %.0f tokens/s (n_embd 64, 2 layers, vocab 320, batch 4 x 64, 2 threads)\n",
           4.0 * NS * NT / dt);
    free(tokens);
    free(targets);
    train_work_free(w);
    tensor_pool_free(pool);
    train_model_free(tm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_falls_dense),  cmocka_unit_test(test_loss_falls_moe),
        cmocka_unit_test(test_accumulation),      cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_dropout_seeded),    cmocka_unit_test(test_lora_bad_config),
        cmocka_unit_test(test_adapter_roundtrip), cmocka_unit_test(test_adapter_roundtrip_moe),
        cmocka_unit_test(test_tokens_per_second),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
