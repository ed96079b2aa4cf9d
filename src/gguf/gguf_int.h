/*
 * gguf_int.h - internals shared by the gguf/ sources (not for other modules): the
 * private side of a gguf_file (lookup indexes), little-endian loads, value sizes and the
 * printable form of names used in messages.
 */
#ifndef MICA_GGUF_INT_H
#define MICA_GGUF_INT_H

#include "gguf/gguf.h"

#include <string.h>

/* GGUF is little-endian and the readers load fields with memcpy, so the host must be too. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf: only little-endian hosts are supported"
#endif

/* Open addressing over indices into an array of named things; slots hold index + 1, 0 is
 * empty. The capacity is a power of two at least twice the number of entries. */
typedef struct gguf_index {
    uint64_t *slots;
    uint64_t mask;
} gguf_index;

/* A gguf_file handed out by gguf_open is the first member of this, so a gguf_file * can be
 * converted back. */
typedef struct gguf_file_int {
    gguf_file pub;
    gguf_index kv_index;
    gguf_index tensor_index;
    /* For each kv that is an array of strings: where each element's u64 length sits in the
     * mapping (arr_n pointers); NULL for every other kv. */
    const uint8_t ***str_elems;
} gguf_file_int;

static inline const gguf_file_int *gguf_int_const(const gguf_file *f)
{
    return (const gguf_file_int *)f;
}

static inline uint64_t gguf_load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t gguf_load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Bytes of one value of a fixed-size type; 0 for STRING, ARRAY and unknown numbers. */
uint32_t gguf_vtype_size(uint32_t t);

/* FNV-1a over the bytes of a name, for the lookup indexes. */
uint64_t gguf_hash(const void *p, size_t n);

/* Copies name[0..len) into buf (cap >= 8) for a message: non-printable bytes become '?',
 * and a long name is cut with "...", so a message stays one readable line. */
const char *gguf_printable(const char *name, uint64_t len, char *buf, size_t cap);

#define GGUF_PRINTABLE_MAX 80

/* Reads the integer value of an integer or bool kv scalar at p; false when t is not one or
 * (for u64) the value does not fit in int64. */
bool gguf_int_value(uint32_t t, const uint8_t *p, int64_t *out);

#endif
