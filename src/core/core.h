/*
 * core.h - what every module shares: error values with messages, checked arithmetic,
 * bounded growable buffers, file reading, a monotonic clock, and UTF-8 helpers.
 * No knowledge of models, tensors or the network lives here.
 */
#ifndef MICA_CORE_H
#define MICA_CORE_H

#include "mica.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CORE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CORE_PRINTF(a, b)
#endif

/* Fills err (when not NULL) with status and a formatted message; returns status so that a
 * caller can write `return core_fail(err, MICA_EFORMAT, "%s: ...", path);`. */
mica_status core_fail(mica_err *err, mica_status status, const char *fmt, ...) CORE_PRINTF(3, 4);

/* Prefixes an existing message: "ctx: old message". */
mica_status core_fail_prefix(mica_err *err, const char *ctx);

/* Overflow-checked size arithmetic: return false when the result does not fit. */
static inline bool core_mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool core_add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Allocation helpers that never return NULL silently: NULL means "failed", and the caller
 * reports MICA_ENOMEM. core_calloc checks n*size for overflow. */
void *core_calloc(size_t n, size_t size);

/* A growable byte buffer with a hard cap (STYLE 6): appending past the cap fails. */
typedef struct core_buf {
    char *data;
    size_t len, cap, max;
} core_buf;

void core_buf_init(core_buf *b, size_t max);
bool core_buf_append(core_buf *b, const void *p, size_t n);
bool core_buf_printf(core_buf *b, const char *fmt, ...) CORE_PRINTF(2, 3);
void core_buf_free(core_buf *b);
/* Appends s[0..n) with every invalid UTF-8 sequence (bad bytes, overlong forms, surrogates,
 * truncated characters) replaced by U+FFFD, so JSON encoders accept the result. */
bool core_buf_append_utf8(core_buf *b, const char *s, size_t n);
/* Appends s[0..n) as a JSON string literal (quotes, backslash and control characters
 * escaped; UTF-8 passes through unchanged). */
bool core_buf_append_json_str(core_buf *b, const char *s, size_t n);

/* Reads a whole file (at most max bytes) into a NUL-terminated malloc'd buffer. */
mica_status core_read_file(const char *path, size_t max, char **out, size_t *len, mica_err *err);

/* Seconds from an arbitrary monotonic origin. */
/* The project's random generator (core_rng.c): xoshiro256** seeded with splitmix64. */
typedef struct core_rng {
    uint64_t s[4];
} core_rng;

void core_rng_seed(core_rng *r, uint64_t seed);
uint64_t core_rng_next(core_rng *r);
double core_rng_uniform(core_rng *r);             /* [0, 1) with 53 random bits */
uint64_t core_rng_below(core_rng *r, uint64_t n); /* uniform in [0, n), n > 0 */

double core_now(void);

/* Number of online CPUs (at least 1). */
int core_n_cpus(void);
/* Memory the system can give without swapping (Linux's MemAvailable), in bytes; 0 when it
 * cannot be told. */
uint64_t core_mem_available(void);

/* UTF-8: length of the sequence that starts with byte c (1 for invalid lead bytes). */
static inline int core_utf8_len(unsigned char c)
{
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

/* Encodes code point cp into out (at least 4 bytes); returns the number of bytes. */
int core_utf8_encode(uint32_t cp, char *out);

/* Decodes one code point from s[0..n); sets *len to the bytes consumed (>= 1). Invalid or
 * truncated sequences decode as U+FFFD consuming one byte. */
uint32_t core_utf8_decode(const char *s, size_t n, int *len);

#endif
