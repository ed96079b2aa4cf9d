/*
 * test_lora.c - LoRA adapters (src/model/lora*.c) against llama.cpp: each reference adapter of
 * ../shared/testdata/llamacpp/lora on its base model gives llama.cpp's logits (batched,
 * token by token, teacher-forced generation) at scales 1.0 and 0.5; scale 0 and detaching
 * give the base model's llama.cpp logits; two sequences with different adapters in one batch
 * each get their own reference; two copies of an adapter at half scale give the full-scale
 * reference, and so does alpha 0 (the scale used as is); a merged model gives the adapter's
 * logits; a written adapter is byte-identical to the reference file; bad adapters fail with
 * messages naming the file and tensor.
 */
#include "llamacpp_ref.h"

#include "model/lora.h"

#include "gguf/gguf.h"

#include <math.h>
#include <unistd.h>

#define TOL 1e-5 /* the lora README: the base model's F32 tolerance */

typedef struct lora_case {
    const char *adapter, *model;
} lora_case;

static const lora_case cases[] = {
    {"lora-llama-dense", "llama-dense"},
    {"lora-qwen2-dense", "qwen2-dense"},
    {"lora-qwen2moe-attn", "qwen2moe"},
    {"lora-qwen2moe-full", "qwen2moe"},
};

static void shared_file(char *buf, size_t cap, const char *fmt, const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, fmt, name);
    const char *s = tu_shared();
    if (!s) {
        printf("SKIP: ../shared is absent; reference data test skipped\n");
        skip();
    }
    snprintf(buf, cap, "%s/%s", s, rel);
}

static void model_path(char *buf, size_t cap, const char *name)
{
    shared_file(buf, cap, "testdata/llamacpp/models/%s.F32.gguf", name);
}

static void adapter_path(char *buf, size_t cap, const char *adapter)
{
    shared_file(buf, cap, "testdata/llamacpp/lora/adapters/%s.gguf", adapter);
}

static mica_model *load_model(const char *path)
{
    mica_model *m;
    mica_err err;
    if (mica_model_load(&m, path, &err)) fail_msg("%s", err.msg);
    return m;
}

static mica_lora *load_lora(mica_model *m, const char *path)
{
    mica_lora *l;
    mica_err err;
    if (mica_lora_load(&l, m, path, &err)) fail_msg("%s", err.msg);
    return l;
}

static mica_context *new_context(mica_model *m, int32_t n_seq, int32_t n_threads)
{
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = LR_N_PROMPT + LR_N_GEN;
    cp.n_seq = n_seq;
    cp.n_threads = n_threads;
    mica_context *c;
    mica_err err;
    if (mica_context_new(&c, m, cp, &err)) fail_msg("%s", err.msg);
    return c;
}

static void set_loras(mica_context *c, int32_t seq, mica_lora *const *l, const float *s, int32_t n)
{
    mica_err err;
    if (mica_context_set_loras(c, seq, l, s, n, &err)) fail_msg("%s", err.msg);
}

/* Every check of llamacpp_ref.h with the reference `rel` on a fresh context of m using the
 * adapters l[0..n) at scales s. */
static void check_against(const char *what, mica_model *m, mica_lora *const *l, const float *s,
                          int32_t n, const char *rel)
{
    lr_ref r;
    lr_load(rel, &r);
    mica_context *batched = new_context(m, 1, 2), *incr = new_context(m, 1, 1);
    set_loras(batched, 0, l, s, n);
    set_loras(incr, -1, l, s, n);
    float *logits = malloc(sizeof(float) * LR_N_PROMPT * LR_N_VOCAB);
    const double d_batch = lr_check_prompt(what, batched, 0, &r, TOL, logits);
    const double d_incr = lr_check_incremental(what, incr, 0, &r, TOL);
    const double d_gen = lr_check_generation(what, batched, 0, &r, TOL, logits);
    printf("%-34s max|diff| batched %.2e incremental %.2e generation %.2e\n", what, d_batch, d_incr,
           d_gen);
    free(logits);
    lr_free(&r);
    mica_context_free(batched);
    mica_context_free(incr);
}

static void ref_name(char *buf, size_t cap, const char *adapter, const char *scale)
{
    snprintf(buf, cap, "testdata/llamacpp/lora/logits/%s.s%s.f32kv", adapter, scale);
}

/* ---- llama.cpp's logits ---------------------------------------------------------------- */

static void test_reference(void **state)
{
    const lora_case *lc = &cases[(intptr_t)*state];
    char mp[1024], ap[1024], rel[256], what[128];
    model_path(mp, sizeof mp, lc->model);
    adapter_path(ap, sizeof ap, lc->adapter);
    mica_model *m = load_model(mp);
    mica_lora *l = load_lora(m, ap);
    assert_true(mica_lora_alpha(l) == 8.0f);
    static const char *const scales[] = {"1.0", "0.5"};
    for (int i = 0; i < 2; i++) {
        const float s = (float)atof(scales[i]);
        ref_name(rel, sizeof rel, lc->adapter, scales[i]);
        snprintf(what, sizeof what, "%s scale %s", lc->adapter, scales[i]);
        check_against(what, m, &l, &s, 1, rel);
    }
    mica_lora_free(l);
    mica_model_free(m);
}

/* Scale 0 leaves the adapter out; detaching (n = 0) too: the base model's reference. */
static void test_scale_zero_is_base(void **state)
{
    char mp[1024], ap[1024];
    model_path(mp, sizeof mp, "qwen2moe");
    adapter_path(ap, sizeof ap, "lora-qwen2moe-full");
    mica_model *m = load_model(mp);
    mica_lora *l = load_lora(m, ap);
    const float zero = 0.0f;
    check_against("qwen2moe + adapter at scale 0", m, &l, &zero, 1,
                  "testdata/llamacpp/logits/qwen2moe.F32.f32kv");
    check_against("qwen2moe, adapter detached", m, NULL, NULL, 0,
                  "testdata/llamacpp/logits/qwen2moe.F32.f32kv");
    mica_lora_free(l);
    mica_model_free(m);
}

/* Linearity in the scale: two copies of one adapter at 0.5 add up to the adapter at 1.0. */
static void test_two_adapters(void **state)
{
    char mp[1024], ap[1024], rel[256];
    model_path(mp, sizeof mp, "llama-dense");
    adapter_path(ap, sizeof ap, "lora-llama-dense");
    mica_model *m = load_model(mp);
    mica_lora *l[2] = {load_lora(m, ap), load_lora(m, ap)};
    const float s[2] = {0.5f, 0.5f};
    ref_name(rel, sizeof rel, "lora-llama-dense", "1.0");
    check_against("llama-dense + 2 x adapter at 0.5", m, l, s, 2, rel);
    mica_lora_free(l[0]);
    mica_lora_free(l[1]);
    mica_model_free(m);
}

/* Sequences 0, 1 and 2 of one context use the adapter at 1.0, none, and the adapter at 0.5;
 * their prompts go through one batch, interleaved, and each matches its own reference. */
static void test_per_sequence(void **state)
{
    char mp[1024], ap[1024], rel[3][256];
    model_path(mp, sizeof mp, "qwen2moe");
    adapter_path(ap, sizeof ap, "lora-qwen2moe-full");
    mica_model *m = load_model(mp);
    mica_lora *l = load_lora(m, ap);
    mica_context *c = new_context(m, 3, 2);
    const float s1 = 1.0f, s05 = 0.5f;
    set_loras(c, 0, &l, &s1, 1);
    set_loras(c, 2, &l, &s05, 1);
    ref_name(rel[0], sizeof rel[0], "lora-qwen2moe-full", "1.0");
    snprintf(rel[1], sizeof rel[1], "testdata/llamacpp/logits/qwen2moe.F32.f32kv");
    ref_name(rel[2], sizeof rel[2], "lora-qwen2moe-full", "0.5");
    lr_ref r[3];
    for (int s = 0; s < 3; s++) lr_load(rel[s], &r[s]);
    mica_batch_token bt[3 * LR_N_PROMPT];
    for (int i = 0; i < LR_N_PROMPT; i++)
        for (int s = 0; s < 3; s++) bt[3 * i + s] = (mica_batch_token){r[s].prompt[i], s, i, true};
    float *logits = malloc(sizeof(float) * 3 * LR_N_PROMPT * LR_N_VOCAB);
    mica_err err;
    if (mica_decode_multi(c, bt, 3 * LR_N_PROMPT, logits, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < LR_N_PROMPT; i++)
        for (int s = 0; s < 3; s++) {
            char what[128];
            snprintf(what, sizeof what, "sequence %d, prompt row %d", s, i);
            tu_check_close(what, logits + (size_t)(3 * i + s) * LR_N_VOCAB,
                           r[s].prompt_logits + i * LR_N_VOCAB, LR_N_VOCAB, TOL);
        }
    for (int s = 0; s < 3; s++) lr_free(&r[s]);
    free(logits);
    mica_context_free(c);
    mica_lora_free(l);
    mica_model_free(m);
}

/* ---- merging --------------------------------------------------------------------------- */

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/test_lora_%d_%s", tu_tmpdir(), (int)getpid(), name);
}

static void merge(const char *base, const char *adapter, float scale, const char *out)
{
    mica_err err;
    if (lora_merge_file(base, &adapter, &scale, 1, out, 2, &err)) fail_msg("%s", err.msg);
}

/* The merged F32 model gives llama.cpp's logits for base + adapter (W + s B A differs from
 * applying B (A x) only by float rounding, ~1e-7 per the README). */
static void test_merge_f32(void **state)
{
    char mp[1024], ap[1024], out[1024], rel[256];
    model_path(mp, sizeof mp, "qwen2moe");
    adapter_path(ap, sizeof ap, "lora-qwen2moe-full");
    tmp_path(out, sizeof out, "merged.gguf");
    merge(mp, ap, 0.5f, out);
    mica_model *m = load_model(out);
    ref_name(rel, sizeof rel, "lora-qwen2moe-full", "0.5");
    check_against("qwen2moe merged with adapter at 0.5", m, NULL, NULL, 0, rel);
    mica_model_free(m);
    remove(out);
}

/* Largest |a - b| over the 16 prompt rows of two contexts on the reference prompt. */
static double prompt_diff(mica_context *a, mica_context *b, const mica_token *prompt)
{
    float *la = malloc(sizeof(float) * LR_N_PROMPT * LR_N_VOCAB);
    float *lb = malloc(sizeof(float) * LR_N_PROMPT * LR_N_VOCAB);
    mica_err err;
    if (mica_decode(a, 0, prompt, LR_N_PROMPT, 0, true, la, &err) ||
        mica_decode(b, 0, prompt, LR_N_PROMPT, 0, true, lb, &err))
        fail_msg("%s", err.msg);
    double d = 0;
    for (int i = 0; i < LR_N_PROMPT * LR_N_VOCAB; i++) {
        const double x = fabs((double)la[i] - (double)lb[i]);
        d = x > d ? x : d;
    }
    free(la);
    free(lb);
    return d;
}

/* A Q8_0 base stays Q8_0 tensor by tensor; merged, it runs like the Q8_0 base with the adapter
 * applied at run time up to the requantization of the adapted weights. */
static void test_merge_q8_0(void **state)
{
    char mp[1024], ap[1024], out[1024];
    shared_file(mp, sizeof mp, "testdata/llamacpp/models/%s.Q8_0.gguf", "llama-dense");
    adapter_path(ap, sizeof ap, "lora-llama-dense");
    tmp_path(out, sizeof out, "merged_q8.gguf");
    merge(mp, ap, 1.0f, out);
    gguf_file *fb = NULL, *fm = NULL;
    mica_err err;
    if (gguf_open(&fb, mp, &err) || gguf_open(&fm, out, &err)) fail_msg("%s", err.msg);
    assert_int_equal(fm->n_tensors, fb->n_tensors);
    assert_int_equal(fm->n_kv, fb->n_kv);
    for (uint64_t i = 0; i < fb->n_tensors; i++) {
        assert_string_equal(fm->tensors[i].name, fb->tensors[i].name);
        assert_int_equal(fm->tensors[i].type, fb->tensors[i].type);
        assert_memory_equal(fm->tensors[i].ne, fb->tensors[i].ne, sizeof fb->tensors[i].ne);
    }
    gguf_close(fb);
    gguf_close(fm);
    lr_ref r;
    lr_load("testdata/llamacpp/lora/logits/lora-llama-dense.s1.0.f32kv", &r);
    mica_model *base = load_model(mp), *merged = load_model(out);
    mica_lora *l = load_lora(base, ap);
    mica_context *cb = new_context(base, 1, 2), *cm = new_context(merged, 1, 2);
    const float one = 1.0f;
    set_loras(cb, 0, &l, &one, 1);
    const double d = prompt_diff(cb, cm, r.prompt);
    printf("Q8_0 merged vs Q8_0 + adapter at run time: max|diff| %.2e\n", d);
    assert_true(d < 2e-2);
    lr_free(&r);
    mica_context_free(cb);
    mica_context_free(cm);
    mica_lora_free(l);
    mica_model_free(base);
    mica_model_free(merged);
    remove(out);
}

/* ---- writing ---------------------------------------------------------------------------- */

/* The weights of an adapter file as lora_write takes them (F32 data, ggml shapes). */
static size_t weights_of(const gguf_file *f, lora_write_weight *w, char names[][GGUF_MAX_NAME])
{
    size_t n = 0;
    for (uint64_t i = 0; i + 1 < f->n_tensors; i += 2) {
        const gguf_tensor *a = &f->tensors[i], *b = &f->tensors[i + 1];
        assert_int_equal(a->type, GGUF_T_F32);
        snprintf(names[n], GGUF_MAX_NAME, "%.*s", (int)(strlen(a->name) - 7), a->name);
        w[n] = (lora_write_weight){names[n],
                                   {a->ne[0], a->ne[1], a->ne[2]},
                                   {b->ne[0], b->ne[1], b->ne[2]},
                                   a->data,
                                   b->data};
        n++;
    }
    return n;
}

/* Rewriting every reference adapter from its tensors gives the reference file byte for byte:
 * the same keys in the same order, tensor names, shapes, types and layout. */
static void test_write_matches_reference(void **state)
{
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char ap[1024], out[1024];
        adapter_path(ap, sizeof ap, cases[c].adapter);
        tmp_path(out, sizeof out, "written.gguf");
        gguf_file *f;
        mica_err err;
        if (gguf_open(&f, ap, &err)) fail_msg("%s", err.msg);
        lora_write_weight w[64];
        char names[64][GGUF_MAX_NAME];
        const size_t n = weights_of(f, w, names);
        gguf_str arch;
        char arch_s[32];
        assert_int_equal(gguf_get_str(f, "general.architecture", &arch, &err), MICA_OK);
        snprintf(arch_s, sizeof arch_s, "%.*s", (int)arch.len, arch.ptr);
        if (lora_write(out, arch_s, cases[c].adapter, 8.0f, GGUF_T_F32, w, n, &err))
            fail_msg("%s", err.msg);
        size_t len_ref, len_out;
        char *ref = tu_read_file(ap, &len_ref), *got = tu_read_file(out, &len_out);
        assert_int_equal(len_out, len_ref);
        assert_memory_equal(got, ref, len_ref);
        free(ref);
        free(got);
        gguf_close(f);
        remove(out);
    }
}

/* alpha 0 means "use the scale as is": the reference A and B with alpha 0 at scale
 * 2 = 1.0 * 8 / 4 give the reference logits of scale 1.0; written as F16, within the F16
 * tolerance. */
static void test_alpha_zero_and_f16(void **state)
{
    char mp[1024], ap[1024], out[1024], rel[256];
    model_path(mp, sizeof mp, "llama-dense");
    adapter_path(ap, sizeof ap, "lora-llama-dense");
    tmp_path(out, sizeof out, "alpha0.gguf");
    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, ap, &err)) fail_msg("%s", err.msg);
    lora_write_weight w[64];
    char names[64][GGUF_MAX_NAME];
    const size_t n = weights_of(f, w, names);
    if (lora_write(out, "llama", "alpha0", 0.0f, GGUF_T_F32, w, n, &err)) fail_msg("%s", err.msg);
    mica_model *m = load_model(mp);
    mica_lora *l = load_lora(m, out);
    const float two = 2.0f;
    ref_name(rel, sizeof rel, "lora-llama-dense", "1.0");
    check_against("alpha 0 at scale 2", m, &l, &two, 1, rel);
    mica_lora_free(l);
    if (lora_write(out, "llama", "f16", 8.0f, GGUF_T_F16, w, n, &err)) fail_msg("%s", err.msg);
    l = load_lora(m, out);
    lr_ref r;
    lr_load(rel, &r);
    mica_context *c = new_context(m, 1, 2);
    const float one = 1.0f;
    set_loras(c, 0, &l, &one, 1);
    float *logits = malloc(sizeof(float) * LR_N_PROMPT * LR_N_VOCAB);
    printf("F16 adapter: max|diff| %.2e\n", lr_check_prompt("F16 adapter", c, 0, &r, 5e-4, logits));
    free(logits);
    lr_free(&r);
    mica_context_free(c);
    mica_lora_free(l);
    mica_model_free(m);
    gguf_close(f);
    remove(out);
}

/* ---- bad input ------------------------------------------------------------------------- */

/* Loading `path` for m fails with `status` and a message containing both `path` (unless
 * NULL) and `want`. */
static void expect_load_error(mica_model *m, const char *path, mica_status status, const char *want)
{
    mica_lora *l = NULL;
    mica_err err;
    const mica_status st = mica_lora_load(&l, m, path, &err);
    printf("expected error: %s\n", st ? err.msg : "(none)");
    assert_int_equal(st, status);
    assert_null(l);
    assert_non_null(strstr(err.msg, path));
    if (!strstr(err.msg, want)) fail_msg("'%s' does not say '%s'", err.msg, want);
}

/* One weight, blk.0.attn_q.weight unless named, with the given shapes (data: zeros). */
static void write_one(const char *out, const char *arch, const char *base, const int64_t *a_ne,
                      const int64_t *b_ne)
{
    static float zeros[64 * 128];
    lora_write_weight w = {
        base, {a_ne[0], a_ne[1], a_ne[2]}, {b_ne[0], b_ne[1], b_ne[2]}, zeros, zeros};
    mica_err err;
    if (lora_write(out, arch, "bad", 8.0f, GGUF_T_F32, &w, 1, &err)) fail_msg("%s", err.msg);
}

static void test_bad_adapters(void **state)
{
    char mp[1024], ap[1024], out[1024];
    model_path(mp, sizeof mp, "llama-dense");
    mica_model *m = load_model(mp);
    tmp_path(out, sizeof out, "bad.gguf");
    /* another architecture's adapter */
    adapter_path(ap, sizeof ap, "lora-qwen2-dense");
    expect_load_error(m, ap, MICA_EINVAL, "architecture 'qwen2', the model is 'llama'");
    /* not an adapter: a model */
    expect_load_error(m, mp, MICA_EFORMAT, "key 'general.type' is 'model', expected 'adapter'");
    /* B's output size is not the weight's */
    write_one(out, "llama", "blk.0.attn_q.weight", (int64_t[]){64, 4, 1}, (int64_t[]){4, 48, 1});
    expect_load_error(m, out, MICA_EINVAL, "do not fit the model's 'blk.0.attn_q.weight' [64, 64]");
    /* A and B of different ranks */
    write_one(out, "llama", "blk.0.attn_q.weight", (int64_t[]){64, 4, 1}, (int64_t[]){8, 64, 1});
    expect_load_error(m, out, MICA_EINVAL, "'blk.0.attn_q.weight.lora_a' [64, 4]");
    /* rank larger than the weight (attn_k: 64 x 32) */
    write_one(out, "llama", "blk.1.attn_k.weight", (int64_t[]){64, 40, 1}, (int64_t[]){40, 32, 1});
    expect_load_error(m, out, MICA_EINVAL, "rank 40 is larger than the model's");
    /* a tensor the model does not have */
    write_one(out, "llama", "blk.7.attn_q.weight", (int64_t[]){64, 4, 1}, (int64_t[]){4, 64, 1});
    expect_load_error(m, out, MICA_EINVAL, "'blk.7.attn_q.weight' does not exist in the model");
    /* a weight mica does not adapt */
    write_one(out, "llama", "blk.0.attn_norm.weight", (int64_t[]){64, 4, 1}, (int64_t[]){4, 1, 1});
    expect_load_error(m, out, MICA_EUNSUPPORTED, "does not adapt 'blk.0.attn_norm.weight'");
    mica_model_free(m);
    remove(out);
}

/* Half a pair: only lora_a of a weight (written with the GGUF writer directly). */
static void test_missing_half(void **state)
{
    char mp[1024], ap[1024], out[1024];
    model_path(mp, sizeof mp, "llama-dense");
    adapter_path(ap, sizeof ap, "lora-llama-dense");
    tmp_path(out, sizeof out, "half.gguf");
    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, ap, &err)) fail_msg("%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    assert_int_equal(gguf_writer_copy_kv(w, f), MICA_OK);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (!strcmp(t->name, "blk.1.ffn_up.weight.lora_b")) continue;
        if (gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, &err))
            fail_msg("%s", err.msg);
    }
    if (gguf_writer_write(w, out, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
    gguf_close(f);
    mica_model *m = load_model(mp);
    expect_load_error(m, out, MICA_EFORMAT, "tensor 'blk.1.ffn_up.weight.lora_b' is missing");
    mica_model_free(m);
    remove(out);
}

/* Attaching: an adapter of another model, too many adapters, a duplicate, a bad sequence. */
static void test_attach_errors(void **state)
{
    char mp[1024], mp2[1024], ap[1024];
    model_path(mp, sizeof mp, "llama-dense");
    shared_file(mp2, sizeof mp2, "testdata/llamacpp/models/%s.F16.gguf", "llama-dense");
    adapter_path(ap, sizeof ap, "lora-llama-dense");
    mica_model *m = load_model(mp), *m2 = load_model(mp2);
    mica_lora *l = load_lora(m, ap), *l2 = load_lora(m2, ap);
    mica_context *c = new_context(m, 2, 1);
    mica_err err;
    const float s[2] = {1.0f, 1.0f};
    assert_int_equal(mica_context_set_loras(c, 0, &l2, s, 1, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "loaded for another model"));
    mica_lora *twice[2] = {l, l};
    assert_int_equal(mica_context_set_loras(c, 0, twice, s, 2, &err), MICA_EINVAL);
    assert_int_equal(mica_context_set_loras(c, 2, &l, s, 1, &err), MICA_ERANGE);
    assert_int_equal(mica_context_set_loras(c, 0, &l, s, 9, &err), MICA_EINVAL);
    mica_context_free(c);
    mica_lora_free(l);
    mica_lora_free(l2);
    mica_model_free(m);
    mica_model_free(m2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_reference, (void *)0),
        cmocka_unit_test_prestate(test_reference, (void *)1),
        cmocka_unit_test_prestate(test_reference, (void *)2),
        cmocka_unit_test_prestate(test_reference, (void *)3),
        cmocka_unit_test(test_scale_zero_is_base),
        cmocka_unit_test(test_two_adapters),
        cmocka_unit_test(test_per_sequence),
        cmocka_unit_test(test_merge_f32),
        cmocka_unit_test(test_merge_q8_0),
        cmocka_unit_test(test_write_matches_reference),
        cmocka_unit_test(test_alpha_zero_and_f16),
        cmocka_unit_test(test_bad_adapters),
        cmocka_unit_test(test_missing_half),
        cmocka_unit_test(test_attach_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
