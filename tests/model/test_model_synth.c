/*
 * test_model_synth.c - tests src/model/model_synth.c: dense and MoE llama and qwen2 (biases,
 * tied output) random models of every weight type load through mica_model_load with the
 * hyper-parameters asked for, tokenize, and decode to finite logits; the parameter counts
 * match the tensors in the file, and the presets' counts are the closed-form counts of
 * llamacpp-bench.md's shapes (358.36 M, 147.37 M); llama_mix gives llama-quantize's types
 * as that file describes them; the same seed gives the same bytes; bad parameters and
 * unwritable paths are errors (with a message naming the parameter), never a crash or a
 * partial file.
 */
#include "test_util.h"

#include "mica.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "model/model_synth.h"

#include <math.h>
#include <unistd.h>

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/test_model_synth_%ld_%s", tu_tmpdir(), (long)getpid(), name);
}

static void write_or_fail(const char *path, const model_synth_params *p)
{
    mica_err err;
    if (model_synth_write(path, p, &err)) fail_msg("model_synth_write: %s", err.msg);
}

static model_synth_params moe_params(uint32_t type)
{
    model_synth_params p = model_synth_default_params();
    p.type = type;
    p.n_expert = 4;
    p.n_expert_used = 2;
    p.n_head_kv = 2;
    return p;
}

/* Decodes a prompt in one batch, then n_gen greedy tokens one at a time; every logit of
 * every step must be finite. */
static void decode_finite(mica_model *m, int n_gen)
{
    mica_err err;
    mica_context *c;
    mica_context_params cp = mica_context_default_params();
    cp.n_threads = 2;
    cp.n_ctx = 32;
    if (mica_context_new(&c, m, cp, &err)) fail_msg("%s", err.msg);
    const int32_t n_vocab = mica_model_n_vocab(m);
    float *logits = malloc((size_t)n_vocab * sizeof(float));
    assert_non_null(logits);
    const mica_token prompt[] = {1, 3 + 'h', 3 + 'i', 300, 259};
    int32_t pos = 5;
    if (mica_decode(c, 0, prompt, pos, 0, false, logits, &err)) fail_msg("%s", err.msg);
    for (int step = 0; step <= n_gen; step++) {
        mica_token best = 0;
        for (int32_t v = 0; v < n_vocab; v++) {
            if (!isfinite(logits[v]))
                fail_msg("step %d: logit %d is %g, not finite", step, v, (double)logits[v]);
            if (logits[v] > logits[best]) best = v;
        }
        if (step == n_gen) break;
        if (mica_decode(c, 0, &best, 1, pos++, false, logits, &err)) fail_msg("%s", err.msg);
    }
    free(logits);
    mica_context_free(c);
}

/* Loads through the public API and checks what it exposes, then decodes. */
static void check_public(const char *path, const model_synth_params *p)
{
    mica_err err;
    mica_model *m;
    if (mica_model_load(&m, path, &err)) fail_msg("mica_model_load: %s", err.msg);
    assert_string_equal(mica_model_arch(m), model_synth_arch_name(p->arch));
    assert_int_equal(mica_model_n_vocab(m), p->n_vocab);
    assert_int_equal(mica_model_n_embd(m), p->n_embd);
    assert_int_equal(mica_model_n_ctx_train(m), p->n_ctx);
    assert_int_equal(mica_model_bos(m), 1);
    assert_int_equal(mica_model_eos(m), 2);
    /* Byte fallback: "hi" has no piece, so it comes out as BOS, byte tokens, or fillers. */
    mica_token ids[16];
    size_t n;
    if (mica_tokenize(m, "hi\n", 3, true, false, ids, 16, &n, &err)) fail_msg("%s", err.msg);
    assert_true(n >= 2);
    assert_int_equal(ids[0], 1);
    for (size_t i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < p->n_vocab);
    decode_finite(m, 3);
    mica_model_free(m);
}

/* Loads through model_load and checks the hyper-parameters and shapes it bound. */
static void check_hparams(const char *path, const model_synth_params *p)
{
    mica_err err;
    model *m;
    if (model_load(&m, path, &err)) fail_msg("model_load: %s", err.msg);
    const model_hparams *hp = &m->hp;
    assert_int_equal(hp->n_layer, p->n_layer);
    assert_int_equal(hp->n_head, p->n_head);
    assert_int_equal(hp->n_head_kv, p->n_head_kv);
    assert_int_equal(hp->head_dim, p->n_embd / p->n_head);
    assert_int_equal(hp->n_expert, p->n_expert);
    assert_int_equal(hp->n_expert_used, p->n_expert_used);
    assert_true(hp->rope_base == p->rope_base);
    assert_true(hp->norm_eps == p->norm_eps);
    const model_layer *l = &m->layers[p->n_layer - 1];
    assert_true((l->bq && l->bk && l->bv) == p->qkv_bias);
    if (p->n_expert) {
        assert_int_equal(hp->n_ff_exp, p->n_ff);
        assert_non_null(l->gate_inp.data);
        assert_null(l->ffn_gate.data);
        assert_int_equal(l->gate_inp.ne[1], p->n_expert);
        assert_int_equal(l->up_exps.ne[1], p->n_ff);
        assert_int_equal(l->up_exps.ne[2], p->n_expert);
        assert_int_equal(l->down_exps.ne[0], p->n_ff);
        assert_int_equal(l->down_exps.type, p->type);
    } else {
        assert_int_equal(hp->n_ff, p->n_ff);
        assert_null(l->gate_inp.data);
        assert_int_equal(l->ffn_up.ne[1], p->n_ff);
        assert_int_equal(l->ffn_down.type, p->type);
    }
    if (!p->llama_mix) assert_int_equal(m->output.type, p->type);
    assert_true((m->output.data == m->tok_embd.data) == p->tied);
    model_free(m);
}

static void check_model(const char *name, const model_synth_params *p)
{
    char path[512];
    tmp_path(path, sizeof path, name);
    write_or_fail(path, p);
    check_hparams(path, p);
    check_public(path, p);
    unlink(path);
}

static void test_dense_loads_and_decodes(void **state)
{
    model_synth_params p = model_synth_default_params();
    check_model("dense.gguf", &p);
}

static void test_moe_loads_and_decodes(void **state)
{
    model_synth_params p = moe_params(GGUF_T_Q8_0);
    check_model("moe.gguf", &p);
    p.n_expert = 1; /* one expert is still a stack of one */
    p.n_expert_used = 1;
    check_model("moe1.gguf", &p);
}

static model_synth_params qwen2_params(uint32_t type)
{
    model_synth_params p = model_synth_default_params();
    mica_err err;
    if (model_synth_arch_from_name(&p, "qwen2", &err)) fail_msg("%s", err.msg);
    p.type = type;
    p.n_head_kv = 2;
    return p;
}

static void test_qwen2_loads_and_decodes(void **state)
{
    model_synth_params p = qwen2_params(GGUF_T_Q8_0);
    assert_true(p.tied && p.qkv_bias);
    assert_true(p.rope_base == 1e6f && p.norm_eps == 1e-6f);
    check_model("qwen2.gguf", &p);
    p.tied = false; /* the architecture's defaults are only defaults */
    p.qkv_bias = false;
    check_model("qwen2u.gguf", &p);
    /* llama with a tied output and biases loads too. */
    p = model_synth_default_params();
    p.tied = p.qkv_bias = true;
    check_model("llamat.gguf", &p);
}

static void test_every_type(void **state)
{
    const uint32_t types[] = {GGUF_T_F32, GGUF_T_F16, GGUF_T_BF16, GGUF_T_Q4_0};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        model_synth_params p = moe_params(types[i]);
        p.n_layer = 1;
        check_model("type.gguf", &p);
        p.n_expert = p.n_expert_used = 0;
        check_model("type.gguf", &p);
        p = qwen2_params(types[i]);
        p.n_layer = 1;
        check_model("type.gguf", &p);
        p.llama_mix = true;
        check_model("type.gguf", &p);
    }
    /* F32 rows have no blocks: any even head size works. */
    model_synth_params p = model_synth_default_params();
    p.type = GGUF_T_F32;
    p.n_embd = 36;
    p.n_head = 6;
    p.n_head_kv = 3;
    p.n_ff = 50;
    check_model("odd.gguf", &p);
}

/* Elements of every tensor of the file at path, and of the expert stacks among them. */
static int64_t file_elements(const char *path, int64_t *experts)
{
    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    int64_t n = 0;
    *experts = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        n += gguf_tensor_nelements(&f->tensors[i]);
        if (strstr(f->tensors[i].name, "_exps.")) *experts += gguf_tensor_nelements(&f->tensors[i]);
    }
    gguf_close(f);
    return n;
}

/* The counts are the element totals of the file's tensors. */
static void test_counts_match_file(void **state)
{
    model_synth_params p = moe_params(GGUF_T_Q8_0);
    p.n_expert = 8;
    char path[512];
    tmp_path(path, sizeof path, "count.gguf");
    write_or_fail(path, &p);
    int64_t experts, in_file = file_elements(path, &experts);
    unlink(path);
    int64_t total, active;
    model_synth_count(&p, &total, &active);
    assert_int_equal(total, in_file);
    assert_int_equal(active, in_file - experts + experts / p.n_expert * p.n_expert_used);
    /* A dense model with n_ff = n_expert_used * ff reads as many weights, less the router. */
    model_synth_params d = p;
    d.n_expert = d.n_expert_used = 0;
    d.n_ff = p.n_ff * p.n_expert_used;
    int64_t d_total, d_active;
    model_synth_count(&d, &d_total, &d_active);
    assert_int_equal(d_total, d_active);
    assert_int_equal(active - d_active, (int64_t)p.n_layer * p.n_embd * p.n_expert);
    /* qwen2: biases counted, no output matrix. */
    p = qwen2_params(GGUF_T_Q8_0);
    write_or_fail(path, &p);
    in_file = file_elements(path, &experts);
    unlink(path);
    model_synth_count(&p, &total, &active);
    assert_int_equal(total, in_file);
    assert_int_equal(active, in_file);
}

/* Parameters of a llama/qwen2 shape by formula: embedding, output unless tied, per layer
 * q, k, v, o, biases, two norms, and the dense FFN or the router and the experts. */
static int64_t formula_params(int64_t vocab, int64_t e, int64_t layers, int64_t heads,
                              int64_t heads_kv, int64_t ff, int64_t experts, bool tied, bool bias)
{
    const int64_t kv = heads_kv * (e / heads);
    int64_t layer = 2 * e * e + 2 * e * kv + 2 * e + (bias ? e + 2 * kv : 0);
    layer += experts ? e * experts + experts * 3 * e * ff : 3 * e * ff;
    return vocab * e * (tied ? 1 : 2) + e + layers * layer;
}

/* llamacpp-bench.md: big-qwen2-0.5b-shape has 358.36 M parameters, big-llama-moe-8x 147.37 M
 * (llama-bench's count: every tensor's elements), about 43 M of them active per token. */
static void test_presets(void **state)
{
    mica_err err;
    model_synth_params p = model_synth_default_params();
    if (model_synth_preset(&p, "qwen2-0.5b", &err)) fail_msg("%s", err.msg);
    assert_int_equal(p.arch, MODEL_SYNTH_QWEN2);
    assert_true(p.tied && p.qkv_bias && p.rope_base == 1e6f && p.norm_eps == 1e-6f);
    assert_int_equal(model_synth_check(&p, &err), MICA_OK);
    int64_t total, active;
    model_synth_count(&p, &total, &active);
    assert_int_equal(total, formula_params(512, 896, 24, 14, 2, 4864, 0, true, true));
    assert_int_equal(llround(total / 1e4), 35836); /* 358.36 M */
    assert_int_equal(active, total);

    p = model_synth_default_params();
    if (model_synth_preset(&p, "moe-8x", &err)) fail_msg("%s", err.msg);
    assert_int_equal(p.arch, MODEL_SYNTH_LLAMA);
    assert_false(p.tied || p.qkv_bias);
    assert_int_equal(p.n_expert_used, 2);
    assert_int_equal(model_synth_check(&p, &err), MICA_OK);
    model_synth_count(&p, &total, &active);
    assert_int_equal(total, formula_params(512, 512, 8, 8, 8, 1408, 8, false, false));
    assert_int_equal(llround(total / 1e4), 14737); /* 147.37 M */
    assert_int_equal(llround(active / 1e6), 44);   /* "about 43M active" */

    p = model_synth_default_params();
    assert_int_equal(model_synth_preset(&p, "qwen2-7b", &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "qwen2-7b"));
    assert_non_null(strstr(err.msg, "qwen2-0.5b, moe-8x"));
    assert_int_equal(model_synth_arch_from_name(&p, "gpt2", &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "'gpt2'"));
}

/* Types of the file's tensors by name. */
static uint32_t type_of(const gguf_file *f, const char *name)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) fail_msg("no tensor %s", name);
    return t->type;
}

/* llamacpp-bench.md: "Q4_0 mix: token_embd (tied) is Q8_0 because 896 % 256 != 0" (64 too);
 * for the 8-expert MoE "attn_k/attn_v are Q8_0 (the 8-expert rule) and output is Q6_K"
 * (rows of 256 fit Q6_K); norms, biases and routers stay F32 as convert_hf_to_gguf wrote
 * them. */
static void test_llama_mix(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "mix.gguf");
    mica_err err;
    gguf_file *f;
    model_synth_params p = qwen2_params(GGUF_T_Q4_0);
    p.llama_mix = true;
    write_or_fail(path, &p);
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    assert_int_equal(type_of(f, "token_embd.weight"), GGUF_T_Q8_0);
    assert_null(gguf_find_tensor(f, "output.weight"));
    assert_int_equal(type_of(f, "blk.1.attn_k.weight"), GGUF_T_Q4_0);
    assert_int_equal(type_of(f, "blk.1.ffn_down.weight"), GGUF_T_Q4_0);
    assert_int_equal(type_of(f, "blk.1.attn_q.bias"), GGUF_T_F32);
    gguf_close(f);
    check_hparams(path, &p);

    p = moe_params(GGUF_T_Q4_0);
    p.llama_mix = true;
    p.n_expert = 8;
    p.n_embd = 256;
    p.n_ff = 96;
    write_or_fail(path, &p);
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    assert_int_equal(type_of(f, "output.weight"), GGUF_T_Q6_K);
    assert_int_equal(type_of(f, "token_embd.weight"), GGUF_T_Q4_0);
    assert_int_equal(type_of(f, "blk.0.attn_k.weight"), GGUF_T_Q8_0);
    assert_int_equal(type_of(f, "blk.0.attn_v.weight"), GGUF_T_Q8_0);
    assert_int_equal(type_of(f, "blk.0.attn_q.weight"), GGUF_T_Q4_0);
    assert_int_equal(type_of(f, "blk.0.ffn_up_exps.weight"), GGUF_T_Q4_0);
    assert_int_equal(type_of(f, "blk.0.ffn_gate_inp.weight"), GGUF_T_F32);
    gguf_close(f);
    check_public(path, &p);
    /* Rows that do not fill Q8_0 blocks fall back (to F16) instead of failing. */
    p = qwen2_params(GGUF_T_Q8_0);
    p.llama_mix = true;
    p.n_embd = 48;
    p.n_head = 4;
    p.n_head_kv = 2;
    p.n_ff = 80;
    write_or_fail(path, &p);
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    assert_int_equal(type_of(f, "blk.0.attn_q.weight"), GGUF_T_F16);
    gguf_close(f);
    check_public(path, &p);
    char f16[600];
    snprintf(f16, sizeof f16, "%s.f16.tmp", path);
    assert_false(tu_exists(f16));
    unlink(path);
}

static void test_same_seed_same_bytes(void **state)
{
    char a[512], b[512];
    tmp_path(a, sizeof a, "seed_a.gguf");
    tmp_path(b, sizeof b, "seed_b.gguf");
    model_synth_params p = moe_params(GGUF_T_Q4_0);
    write_or_fail(a, &p);
    write_or_fail(b, &p);
    size_t na, nb;
    char *da = tu_read_file(a, &na), *db = tu_read_file(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(db);
    p.seed = 2;
    write_or_fail(b, &p);
    db = tu_read_file(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_not_equal(da, db, na);
    free(da);
    free(db);
    unlink(a);
    unlink(b);
}

typedef struct progress_log {
    int64_t calls, last_done, last_total;
    int ordered;
} progress_log;

static void log_progress(void *ctx, int64_t done, int64_t total)
{
    progress_log *l = ctx;
    if (done != l->last_done + 1) l->ordered = 0;
    l->calls++;
    l->last_done = done;
    l->last_total = total;
}

static void test_progress(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "progress.gguf");
    progress_log log = {.ordered = 1};
    model_synth_params p = moe_params(GGUF_T_Q8_0);
    p.progress = log_progress;
    p.progress_ctx = &log;
    write_or_fail(path, &p);
    unlink(path);
    /* token_embd, output_norm, output and 10 tensors per MoE layer, then the file. */
    assert_int_equal(log.calls, 3 + 10 * p.n_layer + 1);
    assert_int_equal(log.last_done, log.last_total);
    assert_true(log.ordered);
    /* llama_mix: writing the F16 file, then quantizing it (one more call per tensor and for
     * the file). */
    log = (progress_log){.ordered = 1};
    p.llama_mix = true;
    write_or_fail(path, &p);
    unlink(path);
    assert_int_equal(log.calls, 2 * (3 + 10 * p.n_layer + 1));
    assert_int_equal(log.last_done, log.last_total);
    assert_true(log.ordered);
}

static void expect_bad(const model_synth_params *p, mica_status want, const char *needle)
{
    char path[512];
    tmp_path(path, sizeof path, "bad.gguf");
    mica_err err = {0};
    mica_status st = model_synth_write(path, p, &err);
    if (st != want || !strstr(err.msg, needle))
        fail_msg("expected status %d with '%s', got %d: '%s'", (int)want, needle, (int)st, err.msg);
    assert_false(tu_exists(path));
    if (want == MICA_EINVAL) assert_int_equal(model_synth_check(p, &err), want);
}

static void test_bad_params(void **state)
{
    model_synth_params p;
#define BAD(field, value, needle)                                                                  \
    do {                                                                                           \
        p = moe_params(GGUF_T_Q8_0);                                                               \
        p.field = (value);                                                                         \
        expect_bad(&p, MICA_EINVAL, needle);                                                       \
    } while (0)
    BAD(n_expert_used, 5, "n_expert_used 5");
    BAD(n_expert_used, 0, "n_expert_used 0");
    BAD(n_expert, -1, "n_expert");
    BAD(n_expert, 2000, "n_expert 2000");
    BAD(n_embd, 48, "block size"); /* 48 = 4 heads of 12, but not whole Q8_0 blocks */
    BAD(n_ff, 100, "n_ff 100");
    BAD(n_embd, 0, "n_embd 0");
    BAD(n_head, 0, "n_head 0");
    BAD(n_head, 3, "n_head 3");     /* 64 / 3 */
    BAD(n_head_kv, 3, "n_head_kv"); /* 4 % 3 */
    BAD(n_head_kv, 8, "n_head_kv 8");
    BAD(n_layer, 0, "n_layer 0");
    BAD(n_vocab, 100, "n_vocab 100");
    BAD(n_ctx, 0, "n_ctx 0");
    BAD(type, GGUF_T_Q4_1, "Q4_1");
    BAD(type, 999, "type 999");
    BAD(rope_base, 0.0f, "rope base 0");
    BAD(norm_eps, 0.0f, "norm eps 0");
    BAD(norm_eps, NAN, "norm eps nan");
    BAD(arch, MODEL_SYNTH_N_ARCH, "architecture 2");
#undef BAD
    p = qwen2_params(GGUF_T_Q8_0);
    p.n_expert = 4;
    p.n_expert_used = 2;
    expect_bad(&p, MICA_EINVAL, "qwen2 has no experts");
    p = model_synth_default_params();
    p.n_expert_used = 1; /* dense */
    expect_bad(&p, MICA_EINVAL, "without experts");
    p = model_synth_default_params();
    p.type = GGUF_T_F32;
    p.n_embd = 60;
    p.n_head = 4; /* head size 15 is odd */
    expect_bad(&p, MICA_EINVAL, "even head size");
    p = model_synth_default_params();
    mica_err err = {0};
    assert_int_equal(model_synth_write("/nonexistent/dir/x.gguf", &p, &err), MICA_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/x.gguf"));
    assert_false(tu_exists("/nonexistent/dir/x.gguf.tmp"));
    /* NULL err is allowed, as everywhere in the library. */
    p.n_vocab = 1;
    assert_int_equal(model_synth_write("/nonexistent/x.gguf", &p, NULL), MICA_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_loads_and_decodes),
        cmocka_unit_test(test_moe_loads_and_decodes),
        cmocka_unit_test(test_qwen2_loads_and_decodes),
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_counts_match_file),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_llama_mix),
        cmocka_unit_test(test_same_seed_same_bytes),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
