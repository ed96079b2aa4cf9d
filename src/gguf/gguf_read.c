/*
 * gguf_read.c - opens GGUF v2/v3 files: maps them read-only, parses the header, metadata
 * and tensor infos, validates every count, length, type, shape and offset against the
 * bytes that are actually there, and builds the lookup indexes (keys, tensor names, string
 * array elements). Does not interpret metadata (model/ does) nor touch tensor data (tensor/
 * does). Typed getters are in gguf_get.c, type tables in gguf_types.c.
 * Called by model/ (mica_model_load), cli/ (mica info) and the writer's tests.
 */
#define _DEFAULT_SOURCE /* madvise */
#include "gguf_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC       "GGUF"
#define GGUF_HEADER_SIZE 24 /* magic, u32 version, u64 n_tensors, u64 n_kv */
/* The fewest bytes one entry can take, so that a count can be checked against what is left
 * of the file before anything is allocated for it. */
#define GGUF_MIN_KV_BYTES     13 /* u64 key length, u32 type, 1-byte value */
#define GGUF_MIN_TENSOR_BYTES 24 /* u64 name length, u32 n_dims, u32 type, u64 offset */

/* A cursor over the file being parsed; every read is bounds-checked and failures name the
 * path and offset. */
typedef struct gguf_rd {
    gguf_file *f;
    uint64_t pos;
    mica_err *err;
} gguf_rd;

static uint64_t rd_left(const gguf_rd *r)
{
    return r->f->size - r->pos;
}

/* ctx names the key or tensor being read ("key 'x'"), or is "" before there is one. */
static mica_status rd_need(gguf_rd *r, uint64_t n, const char *what, const char *ctx)
{
    if (n <= rd_left(r)) return MICA_OK;
    return core_fail(r->err, MICA_EFORMAT,
                     "%s: truncated: %s needs %llu bytes, %llu left (%s%soffset %llu)", r->f->path,
                     what, (unsigned long long)n, (unsigned long long)rd_left(r), ctx,
                     *ctx ? ", " : "", (unsigned long long)r->pos);
}

static mica_status rd_u32(gguf_rd *r, const char *what, const char *ctx, uint32_t *out)
{
    if (rd_need(r, 4, what, ctx)) return MICA_EFORMAT;
    *out = gguf_load_u32(r->f->base + r->pos);
    r->pos += 4;
    return MICA_OK;
}

static mica_status rd_u64(gguf_rd *r, const char *what, const char *ctx, uint64_t *out)
{
    if (rd_need(r, 8, what, ctx)) return MICA_EFORMAT;
    *out = gguf_load_u64(r->f->base + r->pos);
    r->pos += 8;
    return MICA_OK;
}

static mica_status rd_str(gguf_rd *r, const char *what, const char *ctx, gguf_str *out)
{
    uint64_t len;
    if (rd_u64(r, what, ctx, &len)) return MICA_EFORMAT;
    if (len > rd_left(r))
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: %s: string length %llu exceeds the %llu bytes left (%s%soffset %llu)",
                         r->f->path, what, (unsigned long long)len, (unsigned long long)rd_left(r),
                         ctx, *ctx ? ", " : "", (unsigned long long)(r->pos - 8));
    out->ptr = (const char *)r->f->base + r->pos;
    out->len = len;
    r->pos += len;
    return MICA_OK;
}

/* ---- lookup indexes ------------------------------------------------------------------ */

static mica_status index_init(gguf_index *ix, uint64_t n)
{
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    ix->slots = core_calloc((size_t)cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    return ix->slots ? MICA_OK : MICA_ENOMEM;
}

/* Finds the slot of name, or the empty slot where it would go; get_name(f, i) gives entry
 * i's name. The table is at most half full, so the probe ends. */
typedef gguf_str (*index_name_fn)(const gguf_file *f, uint64_t i);

static uint64_t *index_slot(const gguf_index *ix, const gguf_file *f, index_name_fn get_name,
                            const char *name, size_t len)
{
    uint64_t h = gguf_hash(name, len) & ix->mask;
    for (;;) {
        uint64_t *slot = &ix->slots[h];
        if (*slot == 0) return slot;
        gguf_str s = get_name(f, *slot - 1);
        if (s.len == len && (len == 0 || memcmp(s.ptr, name, len) == 0)) return slot;
        h = (h + 1) & ix->mask;
    }
}

static gguf_str kv_name(const gguf_file *f, uint64_t i)
{
    return f->kv[i].key;
}

static gguf_str tensor_name(const gguf_file *f, uint64_t i)
{
    gguf_str s = {f->tensors[i].name, strlen(f->tensors[i].name)};
    return s;
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key)
{
    const gguf_file_int *fi = gguf_int_const(f);
    uint64_t slot = *index_slot(&fi->kv_index, f, kv_name, key, strlen(key));
    return slot ? &f->kv[slot - 1] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    const gguf_file_int *fi = gguf_int_const(f);
    uint64_t slot = *index_slot(&fi->tensor_index, f, tensor_name, name, strlen(name));
    return slot ? &f->tensors[slot - 1] : NULL;
}

gguf_str gguf_arr_str(const gguf_file *f, const gguf_kv *kv, uint64_t i)
{
    const gguf_file_int *fi = gguf_int_const(f);
    uint64_t k = (uint64_t)(kv - f->kv);
    assert(k < f->n_kv && kv->type == GGUF_VT_ARRAY && kv->arr_type == GGUF_VT_STRING);
    assert(i < kv->arr_n);
    const uint8_t *p = fi->str_elems[k][i];
    gguf_str s = {(const char *)p + 8, gguf_load_u64(p)};
    return s;
}

/* ---- metadata ------------------------------------------------------------------------ */

/* Walks n strings of an array, recording where each starts (elems has n entries). */
static mica_status parse_str_elems(gguf_rd *r, const char *ctx, uint64_t n, const uint8_t **elems)
{
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        elems[i] = r->f->base + r->pos;
        if (rd_str(r, "array element", ctx, &s)) return MICA_EFORMAT;
    }
    return MICA_OK;
}

/* An array value: element type, count (checked against the bytes left before anything is
 * allocated), then the elements. Arrays of arrays are refused: nothing in GGUF uses them
 * and they would make the size of a value unbounded in depth. */
static mica_status parse_arr(gguf_rd *r, gguf_kv *kv, const char *ctx, const uint8_t ***elems)
{
    const char *path = r->f->path;
    uint64_t at = r->pos;
    if (rd_u32(r, "array type", ctx, &kv->arr_type) || rd_u64(r, "array count", ctx, &kv->arr_n))
        return MICA_EFORMAT;
    if (kv->arr_type == GGUF_VT_ARRAY)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: arrays of arrays are not supported (%s, offset %llu)", path, ctx,
                         (unsigned long long)at);
    if (kv->arr_type >= GGUF_VT_COUNT)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: unknown array element type %u (%s, offset %llu)", path, kv->arr_type,
                         ctx, (unsigned long long)at);
    uint64_t elem = kv->arr_type == GGUF_VT_STRING ? 8 : gguf_vtype_size(kv->arr_type);
    if (kv->arr_n > rd_left(r) / elem)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: array of %llu %s cannot fit in the %llu bytes left (%s, offset "
                         "%llu)",
                         path, (unsigned long long)kv->arr_n, gguf_vtype_name(kv->arr_type),
                         (unsigned long long)rd_left(r), ctx, (unsigned long long)at);
    kv->val = r->f->base + r->pos;
    if (kv->arr_type != GGUF_VT_STRING) {
        r->pos += kv->arr_n * elem;
        return MICA_OK;
    }
    *elems = core_calloc((size_t)kv->arr_n, sizeof **elems);
    if (!*elems)
        return core_fail(r->err, MICA_ENOMEM, "%s: no memory for %llu strings (%s)", path,
                         (unsigned long long)kv->arr_n, ctx);
    return parse_str_elems(r, ctx, kv->arr_n, *elems);
}

/* One kv: key, type, value. */
static mica_status parse_kv(gguf_rd *r, gguf_kv *kv, const uint8_t ***elems)
{
    char key[GGUF_PRINTABLE_MAX], ctx[GGUF_PRINTABLE_MAX + 8];
    kv->offset = r->pos;
    if (rd_str(r, "key", "", &kv->key)) return MICA_EFORMAT;
    snprintf(ctx, sizeof ctx, "key '%s'",
             gguf_printable(kv->key.ptr, kv->key.len, key, sizeof key));
    uint64_t at = r->pos;
    if (rd_u32(r, "value type", ctx, &kv->type)) return MICA_EFORMAT;
    if (kv->type >= GGUF_VT_COUNT)
        return core_fail(r->err, MICA_EFORMAT, "%s: unknown value type %u (%s, offset %llu)",
                         r->f->path, kv->type, ctx, (unsigned long long)at);
    if (kv->type == GGUF_VT_ARRAY) return parse_arr(r, kv, ctx, elems);
    kv->val = r->f->base + r->pos;
    if (kv->type == GGUF_VT_STRING) {
        gguf_str s;
        return rd_str(r, "string value", ctx, &s);
    }
    if (rd_need(r, gguf_vtype_size(kv->type), "value", ctx)) return MICA_EFORMAT;
    r->pos += gguf_vtype_size(kv->type);
    return MICA_OK;
}

static mica_status index_kvs(gguf_file_int *fi, mica_err *err)
{
    gguf_file *f = &fi->pub;
    if (index_init(&fi->kv_index, f->n_kv))
        return core_fail(err, MICA_ENOMEM, "%s: no memory for the key index", f->path);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        uint64_t *slot = index_slot(&fi->kv_index, f, kv_name, kv->key.ptr, (size_t)kv->key.len);
        if (*slot) {
            char key[GGUF_PRINTABLE_MAX];
            return core_fail(err, MICA_EFORMAT, "%s: duplicate key '%s' (offset %llu)", f->path,
                             gguf_printable(kv->key.ptr, kv->key.len, key, sizeof key),
                             (unsigned long long)kv->offset);
        }
        *slot = i + 1;
    }
    return MICA_OK;
}

static mica_status parse_kvs(gguf_rd *r, gguf_file_int *fi)
{
    gguf_file *f = &fi->pub;
    if (f->n_kv > rd_left(r) / GGUF_MIN_KV_BYTES)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: %llu keys cannot fit in the %llu bytes left (offset 16)", f->path,
                         (unsigned long long)f->n_kv, (unsigned long long)rd_left(r));
    f->kv = core_calloc((size_t)f->n_kv, sizeof *f->kv);
    fi->str_elems = core_calloc((size_t)f->n_kv, sizeof *fi->str_elems);
    if (!f->kv || !fi->str_elems)
        return core_fail(r->err, MICA_ENOMEM, "%s: no memory for %llu keys", f->path,
                         (unsigned long long)f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (parse_kv(r, &f->kv[i], &fi->str_elems[i])) return r->err->status;
    return index_kvs(fi, r->err);
}

/* general.alignment: any integer type, a nonzero power of two; absent means 32. */
static mica_status read_alignment(gguf_file *f, mica_err *err)
{
    const gguf_kv *kv = gguf_find(f, "general.alignment");
    int64_t v;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!kv) return MICA_OK;
    if (!gguf_vtype_is_int(kv->type))
        return core_fail(err, MICA_EFORMAT,
                         "%s: key 'general.alignment' must be an integer, found %s (offset %llu)",
                         f->path, gguf_vtype_name(kv->type), (unsigned long long)kv->offset);
    /* A u64 above INT64_MAX does not convert; no file could use such an alignment anyway. */
    if (!gguf_int_value(kv->type, kv->val, &v) || v <= 0 || (v & (v - 1)) != 0) {
        char shown[32];
        gguf_kv_format(kv, shown, sizeof shown);
        return core_fail(err, MICA_EFORMAT,
                         "%s: key 'general.alignment' = %s is not a power of two (offset %llu)",
                         f->path, shown, (unsigned long long)kv->offset);
    }
    f->alignment = (uint64_t)v;
    return MICA_OK;
}

/* ---- tensor infos -------------------------------------------------------------------- */

/* A tensor's name as a message may show it (names are stored exactly, control bytes too). */
static const char *tname(const char *name, char *buf)
{
    return gguf_printable(name, strlen(name), buf, GGUF_PRINTABLE_MAX);
}

static mica_status tensor_fail(gguf_rd *r, const gguf_tensor *t, uint64_t at, const char *what)
{
    char name[GGUF_PRINTABLE_MAX];
    return core_fail(r->err, MICA_EFORMAT, "%s: %s (tensor '%s', offset %llu)", r->f->path, what,
                     tname(t->name, name), (unsigned long long)at);
}

static mica_status parse_tensor_name(gguf_rd *r, gguf_tensor *t)
{
    uint64_t at = r->pos;
    gguf_str s;
    char name[GGUF_PRINTABLE_MAX];
    if (rd_str(r, "tensor name", "", &s)) return MICA_EFORMAT;
    gguf_printable(s.ptr, s.len, name, sizeof name);
    if (s.len >= GGUF_MAX_NAME)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: tensor name of %llu bytes is too long (at most %d) (tensor '%s', "
                         "offset %llu)",
                         r->f->path, (unsigned long long)s.len, GGUF_MAX_NAME - 1, name,
                         (unsigned long long)at);
    if (memchr(s.ptr, '\0', (size_t)s.len))
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: tensor name contains a NUL byte (tensor '%s', offset %llu)",
                         r->f->path, name, (unsigned long long)at);
    memcpy(t->name, s.ptr, (size_t)s.len);
    t->name[s.len] = '\0';
    return MICA_OK;
}

/* Element count and byte size, overflow-checked; ne[0] must hold whole blocks. */
static mica_status tensor_size(gguf_rd *r, gguf_tensor *t, uint64_t at)
{
    uint32_t bs, ts;
    char msg[96];
    if (!gguf_ttype_layout(t->type, &bs, &ts)) {
        snprintf(msg, sizeof msg, "unknown tensor type %u", t->type);
        return tensor_fail(r, t, at, msg);
    }
    if (t->ne[0] % bs != 0) {
        snprintf(msg, sizeof msg, "ne[0] = %lld is not a multiple of the %s block size %u",
                 (long long)t->ne[0], gguf_ttype_name(t->type), bs);
        return tensor_fail(r, t, at, msg);
    }
    uint64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        if (!core_mul_ok(n, (uint64_t)t->ne[d], &n) || n > (uint64_t)INT64_MAX)
            return tensor_fail(r, t, at, "element count overflows");
    if (!core_mul_ok(n / bs, ts, &t->nbytes)) return tensor_fail(r, t, at, "byte size overflows");
    return MICA_OK;
}

static mica_status parse_tensor(gguf_rd *r, gguf_tensor *t)
{
    uint64_t at = r->pos;
    char ctx[GGUF_PRINTABLE_MAX + 16];
    if (parse_tensor_name(r, t)) return MICA_EFORMAT;
    char name[GGUF_PRINTABLE_MAX];
    snprintf(ctx, sizeof ctx, "tensor '%s'", tname(t->name, name));
    if (rd_u32(r, "n_dims", ctx, &t->n_dims)) return MICA_EFORMAT;
    if (t->n_dims > GGUF_MAX_DIMS) {
        char msg[64];
        snprintf(msg, sizeof msg, "n_dims = %u, at most %d", t->n_dims, GGUF_MAX_DIMS);
        return tensor_fail(r, t, at, msg);
    }
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t v;
        if (rd_u64(r, "ne", ctx, &v)) return MICA_EFORMAT;
        if (v > (uint64_t)INT64_MAX) return tensor_fail(r, t, at, "negative dimension");
        t->ne[d] = (int64_t)v;
    }
    if (rd_u32(r, "tensor type", ctx, &t->type) || rd_u64(r, "tensor offset", ctx, &t->offset))
        return MICA_EFORMAT;
    return tensor_size(r, t, at);
}

static mica_status index_tensors(gguf_file_int *fi, mica_err *err)
{
    gguf_file *f = &fi->pub;
    if (index_init(&fi->tensor_index, f->n_tensors))
        return core_fail(err, MICA_ENOMEM, "%s: no memory for the tensor index", f->path);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        uint64_t *slot = index_slot(&fi->tensor_index, f, tensor_name, name, strlen(name));
        char shown[GGUF_PRINTABLE_MAX];
        if (*slot)
            return core_fail(err, MICA_EFORMAT, "%s: duplicate tensor name '%s' (tensor %llu)",
                             f->path, tname(name, shown), (unsigned long long)i);
        *slot = i + 1;
    }
    return MICA_OK;
}

static mica_status parse_tensors(gguf_rd *r, gguf_file_int *fi)
{
    gguf_file *f = &fi->pub;
    if (f->n_tensors > rd_left(r) / GGUF_MIN_TENSOR_BYTES)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: %llu tensors cannot fit in the %llu bytes left (offset %llu)",
                         f->path, (unsigned long long)f->n_tensors, (unsigned long long)rd_left(r),
                         (unsigned long long)r->pos);
    f->tensors = core_calloc((size_t)f->n_tensors, sizeof *f->tensors);
    if (!f->tensors)
        return core_fail(r->err, MICA_ENOMEM, "%s: no memory for %llu tensors", f->path,
                         (unsigned long long)f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (parse_tensor(r, &f->tensors[i])) return r->err->status;
    return index_tensors(fi, r->err);
}

static bool align_up(uint64_t x, uint64_t a, uint64_t *out)
{
    uint64_t s;
    if (!core_add_ok(x, a - 1, &s)) return false;
    *out = s & ~(a - 1);
    return true;
}

/* Where the data section starts. A file may end right after the tensor infos (llama.cpp's
 * vocab-only files do); otherwise the padding up to the data section must be complete, so
 * that a file cut short there is reported rather than read as shorter metadata. */
static mica_status place_data_section(gguf_rd *r)
{
    gguf_file *f = r->f;
    if (!align_up(r->pos, f->alignment, &f->data_offset))
        return core_fail(r->err, MICA_EFORMAT, "%s: data section offset overflows (offset %llu)",
                         f->path, (unsigned long long)r->pos);
    if (f->size == r->pos || f->size >= f->data_offset) return MICA_OK;
    return core_fail(r->err, MICA_EFORMAT,
                     "%s: truncated: padding to the data section at %llu is cut at %llu "
                     "(offset %llu)",
                     f->path, (unsigned long long)f->data_offset, (unsigned long long)f->size,
                     (unsigned long long)r->pos);
}

/* Offsets are checked as strictly as ggml's gguf.cpp: each tensor starts where the previous
 * one ends, rounded up to the alignment, in info order, and lies inside the file (the last
 * one's trailing padding may be missing, as llama.cpp also accepts). */
static mica_status place_tensors(gguf_rd *r)
{
    gguf_file *f = r->f;
    uint64_t expect = 0;
    char name[GGUF_PRINTABLE_MAX];
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t start, end;
        if (t->offset != expect)
            return core_fail(r->err, MICA_EFORMAT,
                             "%s: data offset %llu, expected %llu (tensors are packed in order) "
                             "(tensor '%s')",
                             f->path, (unsigned long long)t->offset, (unsigned long long)expect,
                             tname(t->name, name));
        if (!core_add_ok(f->data_offset, t->offset, &start) ||
            !core_add_ok(start, t->nbytes, &end) || end > f->size)
            return core_fail(r->err, MICA_EFORMAT,
                             "%s: data of %llu bytes at data offset %llu runs past the end of the "
                             "file (size %llu) (tensor '%s')",
                             f->path, (unsigned long long)t->nbytes, (unsigned long long)t->offset,
                             (unsigned long long)f->size, tname(t->name, name));
        t->data = f->base + start;
        /* start + nbytes fits, so offset + nbytes does too. */
        if (!align_up(t->offset + t->nbytes, f->alignment, &expect))
            return core_fail(r->err, MICA_EFORMAT, "%s: data offsets overflow (tensor '%s')",
                             f->path, tname(t->name, name));
    }
    return MICA_OK;
}

static mica_status parse_header(gguf_rd *r)
{
    gguf_file *f = r->f;
    if (f->size < 4 || memcmp(f->base, GGUF_MAGIC, 4) != 0)
        return core_fail(r->err, MICA_EFORMAT, "%s: not a GGUF file (bad magic)", f->path);
    if (f->size < GGUF_HEADER_SIZE)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: truncated: header needs %d bytes, file has %llu (offset 0)", f->path,
                         GGUF_HEADER_SIZE, (unsigned long long)f->size);
    r->pos = 4;
    /* The size check above makes these reads succeed. */
    (void)rd_u32(r, "version", "", &f->version);
    (void)rd_u64(r, "tensor count", "", &f->n_tensors);
    (void)rd_u64(r, "key count", "", &f->n_kv);
    if (f->version == 2 || f->version == 3) return MICA_OK;
    if (f->version == 1)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: GGUF version 1 is not supported (32-bit counts); only versions 2 "
                         "and 3 (offset 4)",
                         f->path);
    bool swapped = f->version == 0x02000000u || f->version == 0x03000000u;
    return core_fail(r->err, MICA_EFORMAT,
                     "%s: GGUF version %u is not supported; only versions 2 and 3%s (offset 4)",
                     f->path, f->version, swapped ? " (this looks like a big-endian file)" : "");
}

/* Parses f->base[0..size) into f; on failure f holds whatever was allocated so far. */
static mica_status gguf_parse(gguf_file_int *fi, mica_err *err)
{
    mica_err local;
    gguf_rd r = {&fi->pub, 0, err ? err : &local};
    if (parse_header(&r) || parse_kvs(&r, fi) || read_alignment(&fi->pub, r.err) ||
        parse_tensors(&r, fi) || place_data_section(&r) || place_tensors(&r))
        return r.err->status;
    return MICA_OK;
}

/* ---- open / close -------------------------------------------------------------------- */

static gguf_file_int *file_new(const char *path)
{
    gguf_file_int *fi = calloc(1, sizeof *fi);
    if (!fi) return NULL;
    fi->pub.path = strdup(path);
    if (!fi->pub.path) {
        free(fi);
        return NULL;
    }
    return fi;
}

void gguf_close(gguf_file *f)
{
    if (!f) return;
    gguf_file_int *fi = (gguf_file_int *)f;
    if (f->mapped && f->base) munmap((void *)f->base, (size_t)f->size);
    if (fi->str_elems)
        for (uint64_t i = 0; i < f->n_kv; i++) free(fi->str_elems[i]);
    free(fi->str_elems);
    free(fi->kv_index.slots);
    free(fi->tensor_index.slots);
    free(f->kv);
    free(f->tensors);
    free(f->path);
    free(fi);
}

void gguf_drop_pages(const gguf_file *f, const void *p, size_t n)
{
    if (!f->mapped) return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)p + page - 1) / page * page,
                    hi = ((uintptr_t)p + n) / page * page;
    assert((const uint8_t *)p >= f->base && (const uint8_t *)p + n <= f->base + f->size);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED); /* a hint: failure is harmless */
}

static mica_status finish_open(gguf_file_int *fi, gguf_file **out, mica_err *err)
{
    mica_status st = gguf_parse(fi, err);
    if (st) {
        gguf_close(&fi->pub);
        return st;
    }
    *out = &fi->pub;
    return MICA_OK;
}

mica_status gguf_open_memory(gguf_file **out, const void *buf, size_t size, const char *name,
                             mica_err *err)
{
    *out = NULL;
    if (!name) name = "<memory>";
    if (!buf && size > 0) return core_fail(err, MICA_EINVAL, "%s: NULL buffer", name);
    if (size == 0) return core_fail(err, MICA_EFORMAT, "%s: empty file (not a GGUF file)", name);
    gguf_file_int *fi = file_new(name);
    if (!fi) return core_fail(err, MICA_ENOMEM, "%s: out of memory", name);
    fi->pub.base = buf;
    fi->pub.size = size;
    return finish_open(fi, out, err);
}

/* Maps an open regular file read-only; directories, empty and special files are refused. */
static mica_status map_fd(int fd, const char *path, const uint8_t **base, uint64_t *size,
                          mica_err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return core_fail(err, MICA_EIO, "%s: cannot stat: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return core_fail(err, MICA_EIO, "%s: is a directory", path);
    if (!S_ISREG(st.st_mode)) return core_fail(err, MICA_EIO, "%s: not a regular file", path);
    if (st.st_size == 0)
        return core_fail(err, MICA_EFORMAT, "%s: empty file (not a GGUF file)", path);
    if ((uint64_t)st.st_size > SIZE_MAX)
        return core_fail(err, MICA_EIO, "%s: too large to map (%lld bytes)", path,
                         (long long)st.st_size);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        return core_fail(err, MICA_EIO, "%s: cannot map: %s", path, strerror(errno));
    *base = p;
    *size = (uint64_t)st.st_size;
    return MICA_OK;
}

mica_status gguf_open(gguf_file **out, const char *path, mica_err *err)
{
    *out = NULL;
    /* O_NONBLOCK: a FIFO must not hang the open; fstat then refuses it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return core_fail(err, MICA_EIO, "%s: cannot open: %s", path, strerror(errno));
    gguf_file_int *fi = file_new(path);
    if (!fi) {
        close(fd);
        return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    }
    mica_status st = map_fd(fd, path, &fi->pub.base, &fi->pub.size, err);
    close(fd); /* the mapping keeps the file alive */
    if (st) {
        gguf_close(&fi->pub);
        return st;
    }
    fi->pub.mapped = true;
    return finish_open(fi, out, err);
}
