/*
 * test_moe.c - Mixture-of-Experts work and bookkeeping, on the tiny MoE models of
 * ../shared/testdata/llamacpp (their logits are checked against llama.cpp's by
 * test_llamacpp_logits.c):
 *   - the matmuls a token costs, counted by the thread pool: exactly n_layer x
 *     expert_used_count expert FFNs (plus the shared expert), checked against a formula of
 *     the model's shapes, token by token and for a batch;
 *   - in a batch each chosen expert's weights are read once, not once per token;
 *   - the routing statistics of the C API add up (k choices per token and layer, weights that
 *     sum to 1 where the architecture renormalises);
 *   - merged gate/up expert tensors (`ffn_gate_up_exps`) give llama.cpp's logits;
 *   - expert metadata that disagrees with the tensors is an error naming key and tensor.
 */
#include "test_util.h"

#include "engine/engine.h"
#include "gguf/gguf.h"

#include <math.h>
#include <unistd.h>

#define N_TOK   16
#define N_VOCAB 512

static const char *const moe_models[] = {"llama-moe", "qwen2moe", "qwen3moe", "olmoe",
                                         "granitemoe"};
#define N_MOE_MODELS (sizeof moe_models / sizeof moe_models[0])

static const mica_token tokens[N_TOK] = {1,   300, 301, 302, 259, 261, 400, 450,
                                         511, 3,   13,  100, 258, 262, 350, 499};

typedef struct loaded {
    mica_model *m;
    mica_context *c;
    float *logits; /* (N_TOK, N_VOCAB) */
} loaded;

static void load_path(loaded *l, const char *path)
{
    mica_err err;
    if (mica_model_load(&l->m, path, &err)) fail_msg("%s", err.msg);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 2;
    if (mica_context_new(&l->c, l->m, cp, &err)) fail_msg("%s", err.msg);
    l->logits = malloc(sizeof(float) * N_TOK * N_VOCAB);
    assert_non_null(l->logits);
}

static void load_shared(loaded *l, const char *name, const char *type)
{
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.%s.gguf", name, type);
    TU_SHARED_PATH(path, rel);
    load_path(l, path);
}

static void unload(loaded *l)
{
    free(l->logits);
    mica_context_free(l->c);
    mica_model_free(l->m);
}

/* ---- what one token must cost --------------------------------------------------------- */

/* Matmuls of one layer for r rows, given how many experts' weights the batch reads. */
typedef struct cost {
    uint64_t calls, rows, macs, weight_bytes;
} cost;

static uint64_t matrix_bytes(uint32_t type, int64_t in, int64_t out)
{
    return (uint64_t)out * tensor_row_size(type, in);
}

/* The pool counts every tensor_matmul; this is what a layer has to do: q, k, v, o, the
 * router, three matrices per chosen (token, expert) pair, and the shared expert. */
static cost layer_cost(const model *m, int il, uint64_t r, uint64_t n_experts_read)
{
    const model_hparams *hp = &m->hp;
    const model_layer *l = &m->layers[il];
    const uint64_t e = (uint64_t)hp->n_embd, nq = (uint64_t)hp->n_head * (uint64_t)hp->head_dim;
    const uint64_t nkv = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim;
    const uint64_t k = (uint64_t)hp->n_expert_used, ff = (uint64_t)hp->n_ff_exp;
    const uint64_t sh = (uint64_t)hp->n_ff_shexp;
    cost c = {0};
    c.calls = 5 + 3 * n_experts_read + (sh ? 3 : 0);
    c.rows = 5 * r + 3 * k * r + (sh ? 3 * r : 0);
    c.macs = r * (e * nq + 2 * e * nkv + nq * e + e * (uint64_t)hp->n_expert + k * 3 * e * ff +
                  3 * e * sh);
    /* Quantized files keep some matrices in another type, so each has its own. */
    const uint64_t expert = matrix_bytes(l->gate_exps.type, (int64_t)e, (int64_t)ff) +
                            matrix_bytes(l->up_exps.type, (int64_t)e, (int64_t)ff) +
                            matrix_bytes(l->down_exps.type, (int64_t)ff, (int64_t)e);
    c.weight_bytes = matrix_bytes(l->wq.type, (int64_t)e, (int64_t)nq) +
                     matrix_bytes(l->wk.type, (int64_t)e, (int64_t)nkv) +
                     matrix_bytes(l->wv.type, (int64_t)e, (int64_t)nkv) +
                     matrix_bytes(l->wo.type, (int64_t)nq, (int64_t)e) +
                     matrix_bytes(l->gate_inp.type, (int64_t)e, hp->n_expert) +
                     n_experts_read * expert;
    if (sh)
        c.weight_bytes += matrix_bytes(l->gate_shexp.type, (int64_t)e, (int64_t)sh) +
                          matrix_bytes(l->up_shexp.type, (int64_t)e, (int64_t)sh) +
                          matrix_bytes(l->down_shexp.type, (int64_t)sh, (int64_t)e);
    return c;
}

/* The experts of layer il that the routing statistics say were chosen at least once. */
static uint64_t experts_used(const mica_context *c, int il)
{
    uint64_t n = 0;
    for (int32_t e = 0; e < mica_model_n_expert(c->model); e++) {
        mica_expert_stat st;
        mica_err err;
        if (mica_context_expert_stat(c, il, e, &st, &err)) fail_msg("%s", err.msg);
        n += st.n_tokens > 0;
    }
    return n;
}

/* Adds the output projection (one logits row) and compares with the pool's counters. */
static void check_cost(const char *what, const mica_context *c, cost want)
{
    const model *m = c->model->m;
    want.calls += 1;
    want.rows += 1;
    want.macs += (uint64_t)m->hp.n_embd * (uint64_t)m->hp.n_vocab;
    want.weight_bytes += matrix_bytes(m->output.type, m->hp.n_embd, m->hp.n_vocab);
    const tensor_matmul_stats got = tensor_pool_matmul_stats(c->pool);
    if (got.calls != want.calls || got.rows != want.rows || got.macs != want.macs ||
        got.weight_bytes != want.weight_bytes)
        fail_msg("%s: matmuls %llu rows %llu macs %llu bytes %llu, expected %llu %llu %llu %llu",
                 what, (unsigned long long)got.calls, (unsigned long long)got.rows,
                 (unsigned long long)got.macs, (unsigned long long)got.weight_bytes,
                 (unsigned long long)want.calls, (unsigned long long)want.rows,
                 (unsigned long long)want.macs, (unsigned long long)want.weight_bytes);
}

static cost cost_add(cost a, cost b)
{
    return (cost){a.calls + b.calls, a.rows + b.rows, a.macs + b.macs,
                  a.weight_bytes + b.weight_bytes};
}

/* Token by token: each token runs exactly expert_used_count experts per layer. */
static void check_incremental_cost(const char *name, const char *type)
{
    loaded l = {0};
    load_shared(&l, name, type);
    const model *m = l.c->model->m;
    const int k = m->hp.n_expert_used;
    for (int i = 0; i < N_TOK; i++) {
        tensor_pool_reset_matmul_stats(l.c->pool);
        mica_err err;
        if (mica_decode(l.c, 0, &tokens[i], 1, i, false, l.logits, &err)) fail_msg("%s", err.msg);
        cost want = {0};
        for (int il = 0; il < m->hp.n_layer; il++)
            want = cost_add(want, layer_cost(m, il, 1, (uint64_t)k));
        char what[128];
        snprintf(what, sizeof what, "%s.%s token %d", name, type, i);
        check_cost(what, l.c, want);
    }
    unload(&l);
}

/* One batch: every expert FFN row is still one (token, chosen expert) pair, and each chosen
 * expert's weights are read once for the whole batch. */
static void check_batch_cost(const char *name, const char *type)
{
    loaded l = {0};
    load_shared(&l, name, type);
    const model *m = l.c->model->m;
    tensor_pool_reset_matmul_stats(l.c->pool);
    mica_err err;
    if (mica_decode(l.c, 0, tokens, N_TOK, 0, false, l.logits, &err)) fail_msg("%s", err.msg);
    cost want = {0};
    uint64_t read = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const uint64_t used = experts_used(l.c, il);
        assert_true(used >= (uint64_t)m->hp.n_expert_used && used <= (uint64_t)m->hp.n_expert);
        read += used;
        want = cost_add(want, layer_cost(m, il, N_TOK, used));
    }
    char what[128];
    snprintf(what, sizeof what, "%s.%s batch of %d", name, type, N_TOK);
    check_cost(what, l.c, want);
    printf("%-10s %-4s batch of %d: %llu expert weight reads for %d (token, expert) pairs\n", name,
           type, N_TOK, (unsigned long long)read, N_TOK * m->hp.n_expert_used * m->hp.n_layer);
    unload(&l);
}

static void test_expert_matmuls_per_token(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_MOE_MODELS; i++) {
        check_incremental_cost(moe_models[i], "F32");
        check_incremental_cost(moe_models[i], "Q4_0");
        check_batch_cost(moe_models[i], "F32");
        check_batch_cost(moe_models[i], "Q8_0");
    }
}

/* ---- routing statistics -------------------------------------------------------------- */

static void check_routing_stats(const char *name)
{
    loaded l = {0};
    load_shared(&l, name, "F32");
    mica_err err;
    if (mica_decode(l.c, 0, tokens, N_TOK, 0, false, l.logits, &err)) fail_msg("%s", err.msg);
    if (mica_decode(l.c, 0, &tokens[3], 1, N_TOK, false, l.logits, &err)) fail_msg("%s", err.msg);
    const int n_tok = N_TOK + 1, k = mica_model_n_expert_used(l.m);
    const bool renorm = l.c->model->m->arch->moe_renorm;
    for (int il = 0; il < mica_model_n_layer(l.m); il++) {
        uint64_t total = 0;
        double weight = 0;
        for (int e = 0; e < mica_model_n_expert(l.m); e++) {
            mica_expert_stat st;
            if (mica_context_expert_stat(l.c, il, e, &st, &err)) fail_msg("%s", err.msg);
            total += st.n_tokens;
            weight += st.mean_weight * (double)st.n_tokens;
            if (st.n_tokens) assert_true(st.mean_weight > 0 && st.mean_weight <= 1.0 + 1e-6);
            assert_true(st.n_tokens <= (uint64_t)n_tok); /* an expert at most once per token */
        }
        if (total != (uint64_t)(n_tok * k))
            fail_msg("%s layer %d: %llu routed, expected %d tokens x %d", name, il,
                     (unsigned long long)total, n_tok, k);
        /* Renormalised weights sum to 1 per token; softmax probabilities of k < n experts to
         * less than 1. */
        if (renorm)
            assert_true(fabs(weight - n_tok) < 1e-4 * n_tok);
        else
            assert_true(weight > 0 && weight < n_tok);
    }
    mica_expert_stat st;
    assert_int_equal(mica_context_expert_stat(l.c, 0, mica_model_n_expert(l.m), &st, &err),
                     MICA_ERANGE);
    assert_int_equal(mica_context_expert_stat(l.c, mica_model_n_layer(l.m), 0, &st, &err),
                     MICA_ERANGE);
    mica_context_reset_expert_stats(l.c);
    assert_int_equal(mica_context_expert_stat(l.c, 1, 0, &st, &err), MICA_OK);
    assert_true(st.n_tokens == 0 && st.mean_weight == 0.0);
    unload(&l);
}

static void test_routing_stats(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_MOE_MODELS; i++) check_routing_stats(moe_models[i]);
    loaded l = {0};
    load_shared(&l, "llama-dense", "F32");
    mica_expert_stat st;
    mica_err err;
    assert_int_equal(mica_model_n_expert(l.m), 0);
    assert_int_equal(mica_context_expert_stat(l.c, 0, 0, &st, &err), MICA_ERANGE);
    mica_context_reset_expert_stats(l.c);
    unload(&l);
}

/* ---- rewritten copies of the reference files ------------------------------------------ */

typedef struct rewrite {
    bool merge_gate_up;  /* ffn_gate_exps + ffn_up_exps -> ffn_gate_up_exps */
    const char *set_key; /* a u32 key to override */
    uint32_t set_val;
    const char *drop;      /* a tensor to leave out */
    const char *one_fewer; /* a 3-D tensor written with one expert fewer */
} rewrite;

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* gate_up[e] = gate[e] rows, then up[e] rows: llama.cpp's merged layout. */
static void *merge_experts(const gguf_tensor *gate, const gguf_tensor *up)
{
    const size_t per = (size_t)(gate->nbytes / (uint64_t)gate->ne[2]);
    uint8_t *out = malloc(2 * (size_t)gate->nbytes);
    assert_non_null(out);
    for (int64_t e = 0; e < gate->ne[2]; e++) {
        memcpy(out + (size_t)(2 * e) * per, (const uint8_t *)gate->data + (size_t)e * per, per);
        memcpy(out + (size_t)(2 * e + 1) * per, (const uint8_t *)up->data + (size_t)e * per, per);
    }
    return out;
}

static void write_rewritten(const char *src, const char *dst, const rewrite *rw)
{
    mica_err err;
    gguf_file *f;
    if (gguf_open(&f, src, &err)) fail_msg("%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_writer_copy_kv(w, f), MICA_OK);
    if (rw->set_key) assert_int_equal(gguf_writer_set_u32(w, rw->set_key, rw->set_val), MICA_OK);
    void *owned[64];
    int n_owned = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        int64_t ne[GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        const void *data = t->data;
        char name[GGUF_MAX_NAME];
        snprintf(name, sizeof name, "%s", t->name);
        if (rw->drop && !strcmp(name, rw->drop)) continue;
        if (rw->one_fewer && !strcmp(name, rw->one_fewer)) ne[2]--;
        if (rw->merge_gate_up && ends_with(name, "ffn_up_exps.weight")) continue;
        if (rw->merge_gate_up && ends_with(name, "ffn_gate_exps.weight")) {
            char up_name[GGUF_MAX_NAME];
            snprintf(up_name, sizeof up_name, "%.*s_up_exps.weight",
                     (int)(strlen(name) - strlen("_gate_exps.weight")), name);
            const gguf_tensor *up = gguf_find_tensor(f, up_name);
            assert_non_null(up);
            assert_true(n_owned < 64);
            data = owned[n_owned++] = merge_experts(t, up);
            ne[1] *= 2;
            snprintf(name + strlen(name) - strlen("_gate_exps.weight"), 32, "_gate_up_exps.weight");
        }
        if (gguf_writer_add_tensor(w, name, t->type, t->n_dims, ne, data, &err))
            fail_msg("%s", err.msg);
    }
    if (gguf_writer_write(w, dst, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    gguf_close(f);
}

static void tmp_model(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/moe_%d_%s.gguf", tu_tmpdir(), (int)getpid(), name);
}

static void check_merged(const char *name)
{
    char src[1024], ref[1024], rel[256], dst[512];
    snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.F32.gguf", name);
    TU_SHARED_PATH(src, rel);
    snprintf(rel, sizeof rel, "testdata/llamacpp/logits/%s.F32.f32kv.bin", name);
    TU_SHARED_PATH(ref, rel);
    tmp_model(dst, sizeof dst, name);
    write_rewritten(src, dst, &(rewrite){.merge_gate_up = true});

    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, dst, &err)) fail_msg("%s", err.msg);
    assert_non_null(gguf_find_tensor(f, "blk.1.ffn_gate_up_exps.weight"));
    assert_null(gguf_find_tensor(f, "blk.1.ffn_gate_exps.weight"));
    gguf_close(f);

    /* The reference prompt is the same 16 tokens for every name. */
    loaded l = {0};
    load_path(&l, dst);
    size_t len;
    float *want = (float *)tu_read_file(ref, &len);
    assert_int_equal(len, sizeof(float) * N_TOK * N_VOCAB);
    if (mica_decode(l.c, 0, tokens, N_TOK, 0, true, l.logits, &err)) fail_msg("%s", err.msg);
    char what[128];
    snprintf(what, sizeof what, "%s with merged gate/up experts", name);
    tu_check_close(what, l.logits, want, N_TOK * N_VOCAB, 1e-5);
    free(want);
    unload(&l);
    unlink(dst);
}

static void test_merged_gate_up_experts(void **state)
{
    (void)state;
    check_merged("granitemoe");
    check_merged("llama-moe");
}

/* ---- bad expert metadata ------------------------------------------------------------- */

static void expect_load_error(const char *src, const rewrite *rw, const char *needle1,
                              const char *needle2)
{
    char dst[512];
    tmp_model(dst, sizeof dst, "bad");
    write_rewritten(src, dst, rw);
    mica_model *m = NULL;
    mica_err err = {0};
    mica_status st = mica_model_load(&m, dst, &err);
    unlink(dst);
    if (st == MICA_OK) fail_msg("loaded a model that should fail (%s)", needle1);
    assert_null(m);
    if (!strstr(err.msg, dst) || !strstr(err.msg, needle1) ||
        (needle2 && !strstr(err.msg, needle2)))
        fail_msg("error '%s' should name the file, '%s' and '%s'", err.msg, needle1,
                 needle2 ? needle2 : "");
    printf("  %s\n", err.msg);
}

static void test_bad_expert_metadata(void **state)
{
    (void)state;
    char src[1024];
    TU_SHARED_PATH(src, "testdata/llamacpp/models/llama-moe.F32.gguf");
    expect_load_error(src, &(rewrite){.set_key = "llama.expert_used_count", .set_val = 5},
                      "llama.expert_used_count = 5", "[1, 4]");
    expect_load_error(src, &(rewrite){.set_key = "llama.expert_used_count", .set_val = 0},
                      "llama.expert_used_count = 0", "[1, 4]");
    expect_load_error(src, &(rewrite){.set_key = "llama.expert_count", .set_val = 8},
                      "'blk.0.ffn_gate_inp.weight' has shape [64, 4], expected [64, 8]",
                      "llama.expert_count = 8");
    expect_load_error(src, &(rewrite){.set_key = "llama.expert_count", .set_val = 0},
                      "llama.expert_used_count = 2", "[0, 0]");
    expect_load_error(src, &(rewrite){.one_fewer = "blk.1.ffn_down_exps.weight"},
                      "'blk.1.ffn_down_exps.weight' has shape [192, 64, 3], expected [192, 64, 4]",
                      "llama.expert_count = 4");
    expect_load_error(src, &(rewrite){.drop = "blk.1.ffn_gate_inp.weight"},
                      "'blk.1.ffn_gate_inp.weight': missing", "'llama.expert_count' is 4");
    expect_load_error(src, &(rewrite){.drop = "blk.0.ffn_up_exps.weight"},
                      "'blk.0.ffn_up_exps.weight': missing", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expert_matmuls_per_token),
        cmocka_unit_test(test_routing_stats),
        cmocka_unit_test(test_merged_gate_up_experts),
        cmocka_unit_test(test_bad_expert_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
