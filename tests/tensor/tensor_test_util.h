/*
 * tensor_test_util.h - helpers for the tensor tests: a small deterministic random number
 * generator, the list of llama.cpp reference model files, and random dot-product cases.
 */
#ifndef MICA_TENSOR_TEST_UTIL_H
#define MICA_TENSOR_TEST_UTIL_H

#include "test_util.h"

#include "tensor/tensor.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct tt_rng {
    uint64_t s;
} tt_rng;

/* splitmix64: good enough spread for test data, identical on every platform. */
static inline uint64_t tt_next(tt_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint32_t tt_u32(tt_rng *r)
{
    return (uint32_t)(tt_next(r) >> 32);
}

/* Uniform in [-1, 1). */
static inline float tt_uniform(tt_rng *r)
{
    return (float)((double)(tt_next(r) >> 11) * 0x1p-52 - 1.0);
}

/* Values with varied magnitude: uniform times 2^k for k in [-6, 6], some exact zeros. */
static inline void tt_fill(tt_rng *r, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = tt_u32(r);
        x[i] = (u % 97 == 0) ? 0.0f : tt_uniform(r) * (float)(1 << (u % 7)) / 8.0f;
    }
}

static const char *const tt_models[] = {"llama-dense", "llama-moe", "qwen2-dense", "qwen2moe",
                                        "qwen3-dense", "qwen3moe",  "olmoe",       "granitemoe"};
#define TT_N_MODELS (sizeof tt_models / sizeof tt_models[0])

/* A random weight row of `type` and an activation (filled by fill_act) converted to its
 * vec_dot type, with the exact dot product of the values they hold and the sum of the
 * products' magnitudes (the scale of rounding error). Buffers have the exact size, so that
 * ASan catches any read past a row; tt_free_dot_case frees them. */
typedef struct tt_dot_case {
    void *w, *act;
    double exact, abs_sum;
} tt_dot_case;

typedef void (*tt_fill_fn)(tt_rng *r, float *x, int64_t n);

static inline tt_dot_case tt_make_dot_case(tt_rng *r, uint32_t type, int64_t n, tt_fill_fn fill_act)
{
    const uint32_t atype = tensor_vec_dot_type(type);
    tt_dot_case c;
    float *wf = malloc((size_t)n * sizeof *wf), *af = malloc((size_t)n * sizeof *af);
    float *wd = malloc((size_t)n * sizeof *wd), *ad = malloc((size_t)n * sizeof *ad);
    c.w = malloc(tensor_row_size(type, n));
    c.act = malloc(tensor_row_size(atype, n));
    assert_true(wf && af && wd && ad && c.w && c.act);
    tt_fill(r, wf, n);
    fill_act(r, af, n);
    tensor_from_f32(type, wf, c.w, n);
    tensor_convert_act(type, af, c.act, n);
    tensor_to_f32(type, c.w, wd, n);
    tensor_to_f32(atype, c.act, ad, n);
    c.exact = c.abs_sum = 0;
    for (int64_t i = 0; i < n; i++) {
        c.exact += (double)wd[i] * ad[i];
        c.abs_sum += fabs((double)wd[i] * ad[i]);
    }
    free(wf);
    free(af);
    free(wd);
    free(ad);
    return c;
}

static inline void tt_free_dot_case(tt_dot_case *c)
{
    free(c->w);
    free(c->act);
}

#endif
