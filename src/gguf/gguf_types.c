/*
 * gguf_types.c - the GGUF and GGML type tables: storage layout and names of tensor types,
 * sizes and names of metadata value types, element access for arrays (unaligned-safe) and
 * the text form of a kv for `mica info`. Pure functions over validated bytes; parsing and
 * validation live in gguf_read.c, writing in gguf_write.c. Called by tensor/, model/, cli/.
 */
#include "gguf_int.h"

#include <assert.h>
#include <stdio.h>

/* ---- tensor types -------------------------------------------------------------------- */

typedef struct gguf_ttype_info {
    const char *name;
    uint32_t block_size; /* elements per block */
    uint32_t type_size;  /* bytes per block */
} gguf_ttype_info;

/* Indexed by enum gguf_ttype; a NULL name marks a number mica does not know (removed
 * Q4_2/Q4_3, IQ and TQ types), which a file must not use. Sizes are ggml-common.h's. */
static const gguf_ttype_info gguf_ttypes[GGUF_T_COUNT] = {
    [GGUF_T_F32] = {"F32", 1, 4},
    [GGUF_T_F16] = {"F16", 1, 2},
    [GGUF_T_Q4_0] = {"Q4_0", 32, 18},
    [GGUF_T_Q4_1] = {"Q4_1", 32, 20},
    [GGUF_T_Q5_0] = {"Q5_0", 32, 22},
    [GGUF_T_Q5_1] = {"Q5_1", 32, 24},
    [GGUF_T_Q8_0] = {"Q8_0", 32, 34},
    [GGUF_T_Q8_1] = {"Q8_1", 32, 36},
    [GGUF_T_Q2_K] = {"Q2_K", 256, 84},
    [GGUF_T_Q3_K] = {"Q3_K", 256, 110},
    [GGUF_T_Q4_K] = {"Q4_K", 256, 144},
    [GGUF_T_Q5_K] = {"Q5_K", 256, 176},
    [GGUF_T_Q6_K] = {"Q6_K", 256, 210},
    [GGUF_T_Q8_K] = {"Q8_K", 256, 292},
    [GGUF_T_I8] = {"I8", 1, 1},
    [GGUF_T_I16] = {"I16", 1, 2},
    [GGUF_T_I32] = {"I32", 1, 4},
    [GGUF_T_I64] = {"I64", 1, 8},
    [GGUF_T_F64] = {"F64", 1, 8},
    [GGUF_T_BF16] = {"BF16", 1, 2},
    [GGUF_T_FP8_E4M3] = {"FP8_E4M3", 32, 34}, /* mica extension (docs/fp8.md) */
};

bool gguf_ttype_layout(uint32_t type, uint32_t *block_size, uint32_t *type_size)
{
    if (type >= GGUF_T_COUNT || !gguf_ttypes[type].name) return false;
    if (block_size) *block_size = gguf_ttypes[type].block_size;
    if (type_size) *type_size = gguf_ttypes[type].type_size;
    return true;
}

bool gguf_ttype_is_extension(uint32_t type)
{
    return type == GGUF_T_FP8_E4M3;
}

const char *gguf_ttype_name(uint32_t type)
{
    if (type < GGUF_T_COUNT && gguf_ttypes[type].name) return gguf_ttypes[type].name;
    static _Thread_local char buf[24];
    snprintf(buf, sizeof buf, "type %u", type);
    return buf;
}

int64_t gguf_tensor_nelements(const gguf_tensor *t)
{
    /* gguf_open checked that this product fits; unused dims are 1. */
    int64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) n *= t->ne[d];
    return n;
}

/* ---- value types --------------------------------------------------------------------- */

static const char *const gguf_vtype_names[GGUF_VT_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

static const uint8_t gguf_vtype_sizes[GGUF_VT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_vtype_name(uint32_t t)
{
    return t < GGUF_VT_COUNT ? gguf_vtype_names[t] : "unknown";
}

uint32_t gguf_vtype_size(uint32_t t)
{
    return t < GGUF_VT_COUNT ? gguf_vtype_sizes[t] : 0;
}

bool gguf_vtype_is_int(uint32_t t)
{
    switch (t) {
    case GGUF_VT_U8:
    case GGUF_VT_I8:
    case GGUF_VT_U16:
    case GGUF_VT_I16:
    case GGUF_VT_U32:
    case GGUF_VT_I32:
    case GGUF_VT_U64:
    case GGUF_VT_I64:
        return true;
    default:
        return false;
    }
}

bool gguf_int_value(uint32_t t, const uint8_t *p, int64_t *out)
{
    switch (t) {
    case GGUF_VT_U8:
    case GGUF_VT_BOOL:
        *out = p[0];
        return true;
    case GGUF_VT_I8:
        *out = (int8_t)p[0];
        return true;
    case GGUF_VT_U16: {
        uint16_t v;
        memcpy(&v, p, sizeof v);
        *out = v;
        return true;
    }
    case GGUF_VT_I16: {
        int16_t v;
        memcpy(&v, p, sizeof v);
        *out = v;
        return true;
    }
    case GGUF_VT_U32:
        *out = gguf_load_u32(p);
        return true;
    case GGUF_VT_I32: {
        int32_t v;
        memcpy(&v, p, sizeof v);
        *out = v;
        return true;
    }
    case GGUF_VT_U64: {
        uint64_t v = gguf_load_u64(p);
        if (v > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)v;
        return true;
    }
    case GGUF_VT_I64: {
        int64_t v;
        memcpy(&v, p, sizeof v);
        *out = v;
        return true;
    }
    default:
        return false;
    }
}

/* A float or double value at p as double; false for other types. */
static bool gguf_float_value(uint32_t t, const uint8_t *p, double *out)
{
    if (t == GGUF_VT_F32) {
        float v;
        memcpy(&v, p, sizeof v);
        *out = v;
        return true;
    }
    if (t == GGUF_VT_F64) {
        double v;
        memcpy(&v, p, sizeof v);
        *out = v;
        return true;
    }
    return false;
}

int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i)
{
    assert(kv->type == GGUF_VT_ARRAY && i < kv->arr_n);
    uint32_t size = gguf_vtype_size(kv->arr_type);
    int64_t v = 0;
    if (size == 0) return 0;
    if (!gguf_int_value(kv->arr_type, kv->val + i * size, &v)) {
        double d;
        /* A u64 above INT64_MAX saturates; a float array reads truncated. */
        if (kv->arr_type == GGUF_VT_U64) return INT64_MAX;
        if (gguf_float_value(kv->arr_type, kv->val + i * size, &d) && d > -9.2e18 && d < 9.2e18)
            return (int64_t)d;
    }
    return v;
}

double gguf_arr_float(const gguf_kv *kv, uint64_t i)
{
    assert(kv->type == GGUF_VT_ARRAY && i < kv->arr_n);
    uint32_t size = gguf_vtype_size(kv->arr_type);
    double d = 0;
    int64_t v;
    if (size == 0) return 0;
    if (gguf_float_value(kv->arr_type, kv->val + i * size, &d)) return d;
    if (kv->arr_type == GGUF_VT_U64) return (double)gguf_load_u64(kv->val + i * size);
    if (gguf_int_value(kv->arr_type, kv->val + i * size, &v)) return (double)v;
    return 0;
}

bool gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

uint64_t gguf_hash(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

const char *gguf_printable(const char *name, uint64_t len, char *buf, size_t cap)
{
    assert(cap >= 8);
    size_t keep = len < cap - 1 ? (size_t)len : cap - 4;
    for (size_t i = 0; i < keep; i++) {
        unsigned char c = (unsigned char)name[i];
        buf[i] = (c >= 0x20 && c != 0x7f) ? (char)c : '?';
    }
    if (keep < len)
        memcpy(buf + keep, "...", 4);
    else
        buf[keep] = '\0';
    return buf;
}

/* ---- text form of a kv --------------------------------------------------------------- */

/* Appends to a fixed buffer, keeping it NUL-terminated; further text is dropped once full. */
typedef struct gguf_out {
    char *buf;
    size_t cap, len;
} gguf_out;

static void gguf_out_printf(gguf_out *o, const char *fmt, ...) CORE_PRINTF(2, 3);

static void gguf_out_printf(gguf_out *o, const char *fmt, ...)
{
    if (o->len + 1 >= o->cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    o->len += (size_t)n;
    if (o->len >= o->cap) o->len = o->cap - 1;
}

#define GGUF_FORMAT_STR_MAX 48 /* bytes of a string value shown before "..." */
#define GGUF_FORMAT_ARR_MAX 4  /* array elements shown */

/* A string in double quotes with escapes, so that a chat template stays on one line; a
 * long one is cut at a UTF-8 boundary and marked with "...". */
static void gguf_format_str(gguf_out *o, const char *s, uint64_t len)
{
    uint64_t shown = len;
    if (shown > GGUF_FORMAT_STR_MAX) {
        shown = GGUF_FORMAT_STR_MAX;
        while (shown > 0 && ((unsigned char)s[shown] & 0xC0) == 0x80) shown--;
    }
    gguf_out_printf(o, "\"");
    for (uint64_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            gguf_out_printf(o, "\\%c", c);
        else if (c == '\n')
            gguf_out_printf(o, "\\n");
        else if (c < 0x20 || c == 0x7f)
            gguf_out_printf(o, "\\x%02x", c);
        else
            gguf_out_printf(o, "%c", c);
    }
    gguf_out_printf(o, shown < len ? "\"..." : "\"");
}

/* One fixed-size value of type t at p. */
static void gguf_format_scalar(gguf_out *o, uint32_t t, const uint8_t *p)
{
    int64_t v;
    double d;
    if (t == GGUF_VT_BOOL)
        gguf_out_printf(o, "%s", p[0] ? "true" : "false");
    else if (t == GGUF_VT_U64)
        gguf_out_printf(o, "%llu", (unsigned long long)gguf_load_u64(p));
    else if (gguf_int_value(t, p, &v))
        gguf_out_printf(o, "%lld", (long long)v);
    else if (gguf_float_value(t, p, &d))
        gguf_out_printf(o, "%g", d);
}

/* "[type x n: e0, e1, e2, e3, ...]"; string elements are walked from the first one, whose
 * lengths gguf_open validated. */
static void gguf_format_arr(gguf_out *o, const gguf_kv *kv)
{
    gguf_out_printf(o, "[%s x %llu", gguf_vtype_name(kv->arr_type), (unsigned long long)kv->arr_n);
    uint64_t shown = kv->arr_n < GGUF_FORMAT_ARR_MAX ? kv->arr_n : GGUF_FORMAT_ARR_MAX;
    const uint8_t *p = kv->val;
    for (uint64_t i = 0; i < shown; i++) {
        gguf_out_printf(o, i ? ", " : ": ");
        if (kv->arr_type == GGUF_VT_STRING) {
            uint64_t len = gguf_load_u64(p);
            gguf_format_str(o, (const char *)p + 8, len);
            p += 8 + len;
        } else {
            gguf_format_scalar(o, kv->arr_type, p);
            p += gguf_vtype_size(kv->arr_type);
        }
    }
    gguf_out_printf(o, "%s]", shown < kv->arr_n ? ", ..." : "");
}

void gguf_kv_format(const gguf_kv *kv, char *buf, size_t cap)
{
    if (cap == 0) return;
    gguf_out o = {buf, cap, 0};
    buf[0] = '\0';
    if (kv->type == GGUF_VT_ARRAY)
        gguf_format_arr(&o, kv);
    else if (kv->type == GGUF_VT_STRING)
        gguf_format_str(&o, (const char *)kv->val + 8, gguf_load_u64(kv->val));
    else
        gguf_format_scalar(&o, kv->type, kv->val);
}
