/*
 * gguf.h - GGUF v2/v3 files: a bounds-checked reader over a read-only memory mapping, and a
 * writer. The reader validates every count, string length, type, dimension and offset before
 * use, so any byte sequence gives either a usable gguf_file or an error naming the offset.
 * Values stay in the mapping: strings are (pointer, length) pairs, not NUL-terminated.
 * Also owns the on-disk numbering and storage size of GGML tensor types (gguf_ttype_*),
 * which tensor/ builds its kernels on.
 */
#ifndef MICA_GGUF_H
#define MICA_GGUF_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Metadata value types (GGUF spec numbering). */
enum gguf_vtype {
    GGUF_VT_U8 = 0,
    GGUF_VT_I8 = 1,
    GGUF_VT_U16 = 2,
    GGUF_VT_I16 = 3,
    GGUF_VT_U32 = 4,
    GGUF_VT_I32 = 5,
    GGUF_VT_F32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8,
    GGUF_VT_ARRAY = 9,
    GGUF_VT_U64 = 10,
    GGUF_VT_I64 = 11,
    GGUF_VT_F64 = 12,
    GGUF_VT_COUNT
};

/* Tensor types (ggml's enum ggml_type numbering, which GGUF stores). */
enum gguf_ttype {
    GGUF_T_F32 = 0,
    GGUF_T_F16 = 1,
    GGUF_T_Q4_0 = 2,
    GGUF_T_Q4_1 = 3,
    GGUF_T_Q5_0 = 6,
    GGUF_T_Q5_1 = 7,
    GGUF_T_Q8_0 = 8,
    GGUF_T_Q8_1 = 9,
    GGUF_T_Q2_K = 10,
    GGUF_T_Q3_K = 11,
    GGUF_T_Q4_K = 12,
    GGUF_T_Q5_K = 13,
    GGUF_T_Q6_K = 14,
    GGUF_T_Q8_K = 15,
    GGUF_T_I8 = 24,
    GGUF_T_I16 = 25,
    GGUF_T_I32 = 26,
    GGUF_T_I64 = 27,
    GGUF_T_F64 = 28,
    GGUF_T_BF16 = 30,
    /* mica extension types: ids ggml has not assigned. ggml numbers its types upwards from 0
     * (up to the low 40s by 2026), so an extension takes the top of mica's range (the kernel
     * tables hold ids below 64) to stay clear of ggml's future types; llama.cpp and other
     * GGUF readers refuse a file that uses one. */
    GGUF_T_FP8_E4M3 = 63, /* blocks of 32 E4M3 bytes + fp16 scale; docs/fp8.md */
    GGUF_T_COUNT = 64     /* bound of the numbering, not a type */
};

/* Storage layout of a tensor type: block_size elements take type_size bytes. Returns false
 * for a number that is not a known type (so a file with it is refused, not misread). */
bool gguf_ttype_layout(uint32_t type, uint32_t *block_size, uint32_t *type_size);
const char *gguf_ttype_name(uint32_t type); /* "F32", "Q8_0", ... or "type N" */
/* True for a mica extension type (GGUF_T_FP8_E4M3): valid for mica, refused by other readers. */
bool gguf_ttype_is_extension(uint32_t type);

#define GGUF_MAX_DIMS          4
#define GGUF_MAX_NAME          64 /* ggml's GGML_MAX_NAME: names must be shorter */
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct gguf_str {
    const char *ptr; /* into the mapping; not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type;      /* enum gguf_vtype */
    uint32_t arr_type;  /* element type when type == GGUF_VT_ARRAY */
    uint64_t arr_n;     /* element count when type == GGUF_VT_ARRAY */
    const uint8_t *val; /* the value's bytes in the mapping (for arrays: the first element) */
    uint64_t offset;    /* file offset of the key, for messages */
} gguf_kv;

typedef struct gguf_tensor {
    char name[GGUF_MAX_NAME];
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is contiguous; unused dims are 1 */
    uint32_t type;             /* enum gguf_ttype */
    uint64_t offset;           /* relative to the data section */
    uint64_t nbytes;
    const void *data; /* into the mapping, aligned to the file's alignment */
} gguf_tensor;

typedef struct gguf_file {
    char *path;          /* for messages ("<memory>" for gguf_open_memory) */
    const uint8_t *base; /* the whole file */
    uint64_t size;
    bool mapped;      /* base is an mmap (else borrowed memory) */
    uint32_t version; /* 2 or 3 */
    uint64_t alignment;
    uint64_t data_offset; /* file offset of the data section */
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
} gguf_file;

/* Maps and parses a file. On error *out is NULL and err says "PATH: what (offset N)". */
mica_status gguf_open(gguf_file **out, const char *path, mica_err *err);
/* Parses a buffer the caller keeps alive until gguf_close (tests, fuzzing). */
mica_status gguf_open_memory(gguf_file **out, const void *buf, size_t size, const char *name,
                             mica_err *err);
void gguf_close(gguf_file *f);
/* Tells the kernel that bytes [p, p + n) of a mapped file will not be read again (their
 * whole pages leave the process's resident memory; reading them later reads the file
 * again). Nothing for gguf_open_memory buffers. */
void gguf_drop_pages(const gguf_file *f, const void *p, size_t n);

/* ---- metadata lookup ----------------------------------------------------------------- */

const gguf_kv *gguf_find(const gguf_file *f, const char *key);
bool gguf_str_eq(gguf_str s, const char *c);

/* Typed getters: MICA_OK, or an error naming the key when it is absent (MICA_EFORMAT) or has
 * another type. gguf_get_int accepts any integer type (and bool) that fits in int64;
 * gguf_get_float accepts F32/F64. The _opt variants leave *out untouched and return MICA_OK
 * when the key is absent, but still fail on a wrong type. */
mica_status gguf_get_int(const gguf_file *f, const char *key, int64_t *out, mica_err *err);
mica_status gguf_get_int_opt(const gguf_file *f, const char *key, int64_t *out, mica_err *err);
mica_status gguf_get_float(const gguf_file *f, const char *key, double *out, mica_err *err);
mica_status gguf_get_float_opt(const gguf_file *f, const char *key, double *out, mica_err *err);
mica_status gguf_get_bool_opt(const gguf_file *f, const char *key, bool *out, mica_err *err);
mica_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, mica_err *err);
mica_status gguf_get_str_opt(const gguf_file *f, const char *key, gguf_str *out, mica_err *err);

/* Arrays: the key must be an array (of the given element kind); *n receives its length. */
mica_status gguf_get_arr(const gguf_file *f, const char *key, const gguf_kv **out, mica_err *err);
/* Element i of an array kv of integers (any width) / floats (F32/F64) / strings. Elements of
 * string arrays are located by walking the lengths once (gguf_open indexes them), so this is
 * O(1). i must be < kv->arr_n. */
int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i);
double gguf_arr_float(const gguf_kv *kv, uint64_t i);
gguf_str gguf_arr_str(const gguf_file *f, const gguf_kv *kv, uint64_t i);
bool gguf_vtype_is_int(uint32_t t);

/* Scalar value of a non-array kv as text ("512", "1e-05", "\"llama\"", "[u32 x 512]"). */
void gguf_kv_format(const gguf_kv *kv, char *buf, size_t cap);
const char *gguf_vtype_name(uint32_t t);

/* ---- tensors ------------------------------------------------------------------------- */

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
int64_t gguf_tensor_nelements(const gguf_tensor *t);

/* ---- writer -------------------------------------------------------------------------- */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void); /* NULL on allocation failure */
void gguf_writer_free(gguf_writer *w);
/* Keys are written in the order they are added; setting an existing key replaces its value
 * in place. Strings and arrays are copied. */
mica_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
mica_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
mica_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
mica_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
mica_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
mica_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
/* An array of n elements of a fixed-size type (not STRING/ARRAY); data holds n elements. */
mica_status gguf_writer_set_arr(gguf_writer *w, const char *key, uint32_t elem_type,
                                const void *data, uint64_t n);
mica_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v,
                                    uint64_t n);
/* A scalar of any fixed-size type (not STRING/ARRAY); v points to one value of that type. */
mica_status gguf_writer_set_val(gguf_writer *w, const char *key, uint32_t type, const void *v);
/* Copies every kv of f (except general.alignment) in order. */
mica_status gguf_writer_copy_kv(gguf_writer *w, const gguf_file *f);
/* Adds a tensor; data (nbytes as the type and shape say) is referenced, not copied, and must
 * stay valid until gguf_writer_write returns. */
mica_status gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                   const int64_t *ne, const void *data, mica_err *err);
/* Writes a GGUF v3 file (to PATH.tmp, then renamed, so a failure leaves no partial file). */
mica_status gguf_writer_write(gguf_writer *w, const char *path, mica_err *err);

#endif
