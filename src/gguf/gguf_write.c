/*
 * gguf_write.c - builds GGUF v3 files: metadata in insertion order (a repeated key replaces
 * its value in place), tensor infos with offsets computed in add order, zero padding to the
 * alignment (general.alignment when set, else 32), written to PATH.tmp and renamed so that
 * a failure never leaves a partial file at PATH. Values are kept already serialized, so a
 * kv copied from an open file is a byte copy. Tensor data is referenced, not copied.
 * Does not read files (gguf_read.c does). Called by quantize/train tools and tests.
 */
#define _POSIX_C_SOURCE 200809L
#include "gguf_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW_MAX_KV        (1u << 20) /* caps (STYLE 6): far above any real model */
#define GW_MAX_TENSORS   (1u << 20)
#define GW_MAX_KEY       65535
#define GW_MAX_ALIGNMENT (1 << 20)

typedef struct gw_kv {
    char *key;
    uint32_t type;
    uint8_t *val; /* serialized value as it follows the type field in the file */
    size_t val_len;
} gw_kv;

typedef struct gw_tensor {
    char name[GGUF_MAX_NAME];
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    uint64_t nbytes;
    const void *data;
} gw_tensor;

struct gguf_writer {
    gw_kv *kv;
    size_t n_kv, cap_kv;
    gw_tensor *tensors;
    size_t n_tensors, cap_tensors;
};

gguf_writer *gguf_writer_new(void)
{
    return calloc(1, sizeof(gguf_writer));
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    free(w->kv);
    free(w->tensors);
    free(w);
}

/* Grows an array of elem-sized items to hold one more, up to max items. */
static bool gw_grow(void **arr, size_t *cap, size_t n, size_t elem, size_t max)
{
    if (n < *cap) return true;
    if (n >= max) return false;
    size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap > max) ncap = max;
    void *p = realloc(*arr, ncap * elem);
    if (!p) return false;
    *arr = p;
    *cap = ncap;
    return true;
}

/* Stores key = (type, serialized val), taking ownership of val. */
static mica_status gw_put(gguf_writer *w, const char *key, uint32_t type, uint8_t *val,
                          size_t val_len)
{
    size_t klen = key ? strlen(key) : 0;
    if (!w || klen == 0 || klen > GW_MAX_KEY) goto invalid;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].val_len = val_len;
            return MICA_OK;
        }
    }
    char *k = malloc(klen + 1);
    if (!k || !gw_grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv, GW_MAX_KV)) {
        free(k);
        free(val);
        return MICA_ENOMEM;
    }
    memcpy(k, key, klen + 1);
    w->kv[w->n_kv++] = (gw_kv){k, type, val, val_len};
    return MICA_OK;
invalid:
    free(val);
    return MICA_EINVAL;
}

/* Copies n bytes into a new value buffer (at least 1 byte, so malloc never sees 0). */
static mica_status gw_put_bytes(gguf_writer *w, const char *key, uint32_t type, const void *p,
                                size_t n)
{
    uint8_t *val = malloc(n ? n : 1);
    if (!val) return MICA_ENOMEM;
    if (n) memcpy(val, p, n);
    return gw_put(w, key, type, val, n);
}

mica_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
    return gw_put_bytes(w, key, GGUF_VT_U32, &v, sizeof v);
}

mica_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    return gw_put_bytes(w, key, GGUF_VT_I32, &v, sizeof v);
}

mica_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v)
{
    return gw_put_bytes(w, key, GGUF_VT_U64, &v, sizeof v);
}

mica_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v)
{
    return gw_put_bytes(w, key, GGUF_VT_F32, &v, sizeof v);
}

mica_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return gw_put_bytes(w, key, GGUF_VT_BOOL, &b, 1);
}

mica_status gguf_writer_set_val(gguf_writer *w, const char *key, uint32_t type, const void *v)
{
    uint32_t size = gguf_vtype_size(type);
    if (size == 0 || !v) return MICA_EINVAL;
    return gw_put_bytes(w, key, type, v, size);
}

mica_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v)
{
    if (!v) return MICA_EINVAL;
    uint64_t len = strlen(v);
    uint8_t *val = malloc(8 + len);
    if (!val) return MICA_ENOMEM;
    memcpy(val, &len, 8);
    memcpy(val + 8, v, len);
    return gw_put(w, key, GGUF_VT_STRING, val, 8 + len);
}

/* An array value: u32 element type, u64 count, then body_len bytes of elements. */
static uint8_t *gw_arr_new(uint32_t elem_type, uint64_t n, size_t body_len)
{
    uint8_t *val = malloc(12 + body_len);
    if (!val) return NULL;
    memcpy(val, &elem_type, 4);
    memcpy(val + 4, &n, 8);
    return val;
}

mica_status gguf_writer_set_arr(gguf_writer *w, const char *key, uint32_t elem_type,
                                const void *data, uint64_t n)
{
    uint32_t size = gguf_vtype_size(elem_type);
    uint64_t body;
    if (size == 0 || (n > 0 && !data)) return MICA_EINVAL;
    if (!core_mul_ok(n, size, &body) || body > SIZE_MAX - 12) return MICA_ENOMEM;
    uint8_t *val = gw_arr_new(elem_type, n, (size_t)body);
    if (!val) return MICA_ENOMEM;
    if (body) memcpy(val + 12, data, (size_t)body);
    return gw_put(w, key, GGUF_VT_ARRAY, val, 12 + (size_t)body);
}

mica_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v,
                                    uint64_t n)
{
    uint64_t body = 0;
    if (n > 0 && !v) return MICA_EINVAL;
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) return MICA_EINVAL;
        if (!core_add_ok(body, 8 + (uint64_t)strlen(v[i]), &body) || body > SIZE_MAX - 12)
            return MICA_ENOMEM;
    }
    uint8_t *val = gw_arr_new(GGUF_VT_STRING, n, (size_t)body);
    if (!val) return MICA_ENOMEM;
    uint8_t *p = val + 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = strlen(v[i]);
        memcpy(p, &len, 8);
        memcpy(p + 8, v[i], (size_t)len);
        p += 8 + len;
    }
    return gw_put(w, key, GGUF_VT_ARRAY, val, 12 + (size_t)body);
}

/* Bytes a validated kv's value takes in its file, after the type field. */
static uint64_t gw_kv_value_len(const gguf_kv *kv)
{
    if (kv->type == GGUF_VT_STRING) return 8 + gguf_load_u64(kv->val);
    if (kv->type != GGUF_VT_ARRAY) return gguf_vtype_size(kv->type);
    uint64_t len = 12;
    if (kv->arr_type != GGUF_VT_STRING) return len + kv->arr_n * gguf_vtype_size(kv->arr_type);
    const uint8_t *p = kv->val;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint64_t s = 8 + gguf_load_u64(p);
        p += s;
        len += s;
    }
    return len;
}

mica_status gguf_writer_copy_kv(gguf_writer *w, const gguf_file *f)
{
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (gguf_str_eq(kv->key, "general.alignment")) continue;
        /* The key needs a NUL; a key with one inside cannot be set by name. */
        if (kv->key.len == 0 || kv->key.len > GW_MAX_KEY ||
            memchr(kv->key.ptr, 0, (size_t)kv->key.len))
            return MICA_EINVAL;
        char *key = malloc((size_t)kv->key.len + 1);
        if (!key) return MICA_ENOMEM;
        memcpy(key, kv->key.ptr, (size_t)kv->key.len);
        key[kv->key.len] = '\0';
        /* An array's value starts 12 bytes before its first element. */
        const uint8_t *start = kv->type == GGUF_VT_ARRAY ? kv->val - 12 : kv->val;
        mica_status st = gw_put_bytes(w, key, kv->type, start, (size_t)gw_kv_value_len(kv));
        free(key);
        if (st) return st;
    }
    return MICA_OK;
}

mica_status gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                   const int64_t *ne, const void *data, mica_err *err)
{
    size_t len = name ? strlen(name) : 0;
    uint32_t bs, ts;
    if (len == 0 || len >= GGUF_MAX_NAME)
        return core_fail(err, MICA_EINVAL, "tensor '%s': name must be 1 to %d bytes",
                         name ? name : "(null)", GGUF_MAX_NAME - 1);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return core_fail(err, MICA_EINVAL, "tensor '%s': added twice", name);
    if (!gguf_ttype_layout(type, &bs, &ts))
        return core_fail(err, MICA_EINVAL, "tensor '%s': unknown type %u", name, type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return core_fail(err, MICA_EINVAL, "tensor '%s': n_dims = %u, must be 1 to %d", name,
                         n_dims, GGUF_MAX_DIMS);
    gw_tensor t = {.n_dims = n_dims, .type = type, .data = data};
    memcpy(t.name, name, len + 1);
    uint64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0)
            return core_fail(err, MICA_EINVAL, "tensor '%s': ne[%d] = %lld is negative", name, d,
                             (long long)t.ne[d]);
        if (!core_mul_ok(n, (uint64_t)t.ne[d], &n) || n > (uint64_t)INT64_MAX)
            return core_fail(err, MICA_EINVAL, "tensor '%s': element count overflows", name);
    }
    if (t.ne[0] % bs != 0)
        return core_fail(err, MICA_EINVAL,
                         "tensor '%s': ne[0] = %lld is not a multiple of the %s block size %u",
                         name, (long long)t.ne[0], gguf_ttype_name(type), bs);
    if (!core_mul_ok(n / bs, ts, &t.nbytes))
        return core_fail(err, MICA_EINVAL, "tensor '%s': byte size overflows", name);
    if (t.nbytes > 0 && !data)
        return core_fail(err, MICA_EINVAL, "tensor '%s': no data for %llu bytes", name,
                         (unsigned long long)t.nbytes);
    if (!gw_grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, sizeof *w->tensors,
                 GW_MAX_TENSORS))
        return core_fail(err, MICA_ENOMEM, "tensor '%s': too many tensors or out of memory", name);
    w->tensors[w->n_tensors++] = t;
    return MICA_OK;
}

/* ---- writing ------------------------------------------------------------------------- */

/* A FILE with a running byte count (for padding) and the first error, so that a long
 * sequence of writes is checked once. */
typedef struct gw_out {
    FILE *fp;
    uint64_t pos;
    bool failed;
} gw_out;

static void gw_write(gw_out *o, const void *p, size_t n)
{
    if (o->failed || n == 0) return;
    if (fwrite(p, 1, n, o->fp) != n) o->failed = true;
    o->pos += n;
}

static void gw_u32(gw_out *o, uint32_t v)
{
    gw_write(o, &v, 4);
}

static void gw_u64(gw_out *o, uint64_t v)
{
    gw_write(o, &v, 8);
}

static void gw_str(gw_out *o, const char *s)
{
    uint64_t len = strlen(s);
    gw_u64(o, len);
    gw_write(o, s, (size_t)len);
}

static void gw_pad(gw_out *o, uint64_t alignment)
{
    static const uint8_t zeros[256];
    while (o->pos % alignment) {
        uint64_t n = alignment - o->pos % alignment;
        gw_write(o, zeros, n < sizeof zeros ? (size_t)n : sizeof zeros);
        if (o->failed) return;
    }
}

/* general.alignment as set (any integer type); 32 when absent. */
static mica_status gw_alignment(const gguf_writer *w, const char *path, uint64_t *out,
                                mica_err *err)
{
    *out = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        int64_t v = 0;
        if (!gguf_vtype_is_int(w->kv[i].type) || !gguf_int_value(w->kv[i].type, w->kv[i].val, &v) ||
            v <= 0 || (v & (v - 1)) != 0 || v > GW_MAX_ALIGNMENT)
            return core_fail(err, MICA_EINVAL,
                             "%s: key 'general.alignment' must be a power of two integer", path);
        *out = (uint64_t)v;
    }
    return MICA_OK;
}

static void gw_write_all(const gguf_writer *w, gw_out *o, uint64_t alignment)
{
    gw_write(o, "GGUF", 4);
    gw_u32(o, 3);
    gw_u64(o, w->n_tensors);
    gw_u64(o, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        gw_str(o, w->kv[i].key);
        gw_u32(o, w->kv[i].type);
        gw_write(o, w->kv[i].val, w->kv[i].val_len);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const gw_tensor *t = &w->tensors[i];
        gw_str(o, t->name);
        gw_u32(o, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) gw_u64(o, (uint64_t)t->ne[d]);
        gw_u32(o, t->type);
        gw_u64(o, offset);
        offset += (t->nbytes + alignment - 1) / alignment * alignment;
    }
    gw_pad(o, alignment);
    for (size_t i = 0; i < w->n_tensors; i++) {
        gw_write(o, w->tensors[i].data, (size_t)w->tensors[i].nbytes);
        gw_pad(o, alignment);
    }
}

mica_status gguf_writer_write(gguf_writer *w, const char *path, mica_err *err)
{
    uint64_t alignment;
    mica_status st = gw_alignment(w, path, &alignment, err);
    if (st) return st;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    gw_out o = {fopen(tmp, "wb"), 0, false};
    if (!o.fp) {
        st = core_fail(err, MICA_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto fail;
    }
    gw_write_all(w, &o, alignment);
    /* Flushed to disk before the rename, so PATH is never a file of zeros after a crash. */
    if (!o.failed && (fflush(o.fp) != 0 || fsync(fileno(o.fp)) != 0)) o.failed = true;
    int saved = errno;
    bool close_failed = fclose(o.fp) != 0;
    if (o.failed || close_failed) {
        st = core_fail(err, MICA_EIO, "%s: write failed at offset %llu: %s", tmp,
                       (unsigned long long)o.pos, strerror(o.failed ? saved : errno));
        remove(tmp);
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        st = core_fail(err, MICA_EIO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
        goto fail;
    }
    st = MICA_OK;
fail:
    free(tmp);
    return st;
}
