/*
 * core_rng.c - the project's one pseudo-random generator: xoshiro256** seeded by splitmix64,
 * so that a seed gives the same stream on every machine (sampling, synthetic data, weight
 * initialisation, dropout).
 */
#include "core/core.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void core_rng_seed(core_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

uint64_t core_rng_next(core_rng *r)
{
    uint64_t *s = r->s;
    const uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double core_rng_uniform(core_rng *r)
{
    return (double)(core_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t core_rng_below(core_rng *r, uint64_t n)
{
    /* Lemire's multiply-shift with rejection: unbiased. */
    for (;;) {
        const unsigned __int128 m = (unsigned __int128)core_rng_next(r) * n;
        const uint64_t lo = (uint64_t)m;
        if (lo >= n || lo >= (0 - n) % n) return (uint64_t)(m >> 64);
    }
}
