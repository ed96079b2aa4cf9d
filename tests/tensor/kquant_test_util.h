/*
 * kquant_test_util.h - helpers shared by test_kquants.c and test_fp8.c: deterministic test
 * rows, FNV-1a hashes of quantized bytes (to compare with reference hashes recorded from
 * llama.cpp's libggml), skipping the AVX2 checks visibly on CPUs without AVX2, and a tiny
 * synthetic model written in F32 and in a quantized type whose logits are compared.
 */
#ifndef MICA_KQUANT_TEST_UTIL_H
#define MICA_KQUANT_TEST_UTIL_H

#include "test_util.h"

#include "mica.h"
#include "model/model_synth.h"
#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <math.h>
#include <unistd.h>

/* Roughly Gaussian (sum of four uniforms, variance 4/3) times `scale`. */
static inline void kt_fill_gauss(tt_rng *r, float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++) {
        const float s = tt_uniform(r) + tt_uniform(r) + tt_uniform(r) + tt_uniform(r);
        x[i] = s * scale;
    }
}

/* kt_fill_gauss at scale 1, as a tt_fill_fn for tt_make_dot_case. */
static inline void kt_fill_gauss1(tt_rng *r, float *x, int64_t n)
{
    kt_fill_gauss(r, x, n, 1.0f);
}

static inline uint64_t kt_fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* True when the AVX2 kernels can run here; otherwise says so (the test then skips). */
static inline bool kt_have_avx2(void)
{
#if defined(__x86_64__)
    if (tensor_avx2_usable()) return true;
#endif
    printf("SKIP: no AVX2 + FMA + F16C on this CPU; SIMD-vs-scalar checks skipped\n");
    return false;
}

/* The tiny model of the logits tests: n_embd 256 so that every matrix row fits Q4_K/Q6_K's
 * 256-element super-blocks. */
static inline model_synth_params kt_model_params(uint32_t type)
{
    model_synth_params p = model_synth_default_params();
    p.n_vocab = 320;
    p.n_embd = 256;
    p.n_ff = 512;
    p.n_layer = 2;
    p.n_head = 4;
    p.n_head_kv = 2;
    p.n_ctx = 64;
    p.type = type;
    p.seed = 7;
    return p;
}

/* Writes the tiny model with weights of `type`, loads it and decodes a fixed prompt: the
 * last position's logits into out[n_vocab]. */
static inline void kt_model_logits(uint32_t type, float *out, int32_t n_vocab)
{
    char path[512];
    snprintf(path, sizeof path, "%s/kquant_model_%ld_%s.gguf", tu_tmpdir(), (long)getpid(),
             gguf_ttype_name(type));
    model_synth_params p = kt_model_params(type);
    assert_int_equal(p.n_vocab, n_vocab);
    mica_err err;
    if (model_synth_write(path, &p, &err)) fail_msg("model_synth_write: %s", err.msg);
    mica_model *m;
    if (mica_model_load(&m, path, &err)) fail_msg("mica_model_load %s: %s", path, err.msg);
    mica_context *c;
    mica_context_params cp = mica_context_default_params();
    cp.n_threads = 2;
    cp.n_ctx = 32;
    if (mica_context_new(&c, m, cp, &err)) fail_msg("%s", err.msg);
    const mica_token prompt[] = {1, 3 + 'h', 3 + 'e', 3 + 'l', 300, 259, 3 + 'o'};
    if (mica_decode(c, 0, prompt, 7, 0, false, out, &err)) fail_msg("%s", err.msg);
    for (int32_t v = 0; v < n_vocab; v++)
        if (!isfinite(out[v])) fail_msg("%s: logit %d is %g", gguf_ttype_name(type), v, out[v]);
    mica_context_free(c);
    mica_model_free(m);
    unlink(path);
}

/* tensor_matmul of a random (n_out, k) matrix of `type` with 3 activation rows, through a
 * 2-thread pool and without one, equals the row-by-row dispatched dot products bit for bit;
 * tensor_matmul_chunked (slices of the row, summed in float) agrees to rounding. */
static inline void kt_check_matmul(uint32_t type, int64_t k, int64_t n_out)
{
    enum { ROWS = 3 };
    tt_rng r = {type * 131 + (uint64_t)k};
    const size_t rb = tensor_row_size(type, k), ab = tensor_row_size(tensor_vec_dot_type(type), k);
    float *wf = malloc((size_t)k * sizeof *wf), *x = malloc((size_t)(ROWS * k) * sizeof *x);
    uint8_t *wq = malloc(rb * (size_t)n_out), *act = malloc(ab);
    float *y = malloc((size_t)(ROWS * n_out) * sizeof *y),
          *yc = malloc((size_t)(ROWS * n_out) * sizeof *yc);
    assert_true(wf && x && wq && act && y && yc);
    for (int64_t o = 0; o < n_out; o++) {
        tt_fill(&r, wf, k);
        tensor_from_f32(type, wf, wq + (size_t)o * rb, k);
    }
    kt_fill_gauss(&r, x, ROWS * k, 1.0f);
    tensor_view v = {
        .data = wq, .type = type, .ne = {k, n_out, 1, 1}, .row_bytes = rb, .name = "w"};
    tensor_pool *pool;
    assert_int_equal(tensor_pool_new(&pool, 2, NULL), MICA_OK);
    for (int use_pool = 0; use_pool < 2; use_pool++) {
        tensor_matmul(use_pool ? pool : NULL, &v, x, ROWS, y);
        for (int rr = 0; rr < ROWS; rr++) {
            tensor_convert_act(type, x + rr * k, act, k);
            for (int64_t o = 0; o < n_out; o++) {
                const float want = tensor_vec_dot(type, wq + (size_t)o * rb, act, k);
                if (memcmp(&y[rr * n_out + o], &want, sizeof want))
                    fail_msg("%s k %lld row %d out %lld: matmul %.9g dot %.9g",
                             gguf_ttype_name(type), (long long)k, rr, (long long)o,
                             y[rr * n_out + o], want);
            }
        }
    }
    tensor_matmul_chunked(&v, x, ROWS, yc);
    double scale = 0;
    for (int64_t i = 0; i < ROWS * n_out; i++) scale = fmax(scale, fabs((double)y[i]));
    tu_check_close("chunked matmul", yc, y, (size_t)(ROWS * n_out), 1e-5 * scale + 1e-30);
    tensor_pool_free(pool);
    free(wf);
    free(x);
    free(wq);
    free(act);
    free(y);
    free(yc);
}

/* RMS of (a - b) over RMS of b. */
static inline double kt_rel_rms(const float *a, const float *b, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(e / (s > 0 ? s : 1));
}

#endif
