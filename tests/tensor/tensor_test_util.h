/*
 * tensor_test_util.h - helpers for the tensor tests: a small deterministic random number
 * generator and the list of llama.cpp reference model files.
 */
#ifndef MICA_TENSOR_TEST_UTIL_H
#define MICA_TENSOR_TEST_UTIL_H

#include <stdint.h>

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

#endif
