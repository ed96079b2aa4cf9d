/*
 * gguf_bytes.h - builds GGUF files byte by byte in tests, for layouts the writer would never
 * produce (old versions, bad counts, odd alignments).
 */
#ifndef MICA_GGUF_BYTES_H
#define MICA_GGUF_BYTES_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

typedef struct bb {
    uint8_t d[1024];
    size_t n;
} bb;

static inline void bb_put(bb *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof b->d);
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static inline void bb_u32(bb *b, uint32_t v)
{
    bb_put(b, &v, 4);
}
static inline void bb_u64(bb *b, uint64_t v)
{
    bb_put(b, &v, 8);
}
static inline void bb_str(bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}

#endif
