/*
 * gguf_get.c - typed metadata getters over an open gguf_file: find the key, check its type,
 * convert. Messages name the file, the key, the type wanted and the type found. Does not
 * parse or validate the file (gguf_read.c did). Called by model/ and tokenizer/.
 */
#include "gguf_int.h"

static mica_status get_missing(const gguf_file *f, const char *key, mica_err *err)
{
    return core_fail(err, MICA_EFORMAT, "%s: key '%s': missing", f->path, key);
}

static mica_status get_wrong_type(const gguf_file *f, const char *key, const gguf_kv *kv,
                                  const char *want, mica_err *err)
{
    if (kv->type == GGUF_VT_ARRAY)
        return core_fail(err, MICA_EFORMAT,
                         "%s: key '%s': expected %s, found an array of %s (offset %llu)", f->path,
                         key, want, gguf_vtype_name(kv->arr_type), (unsigned long long)kv->offset);
    return core_fail(err, MICA_EFORMAT, "%s: key '%s': expected %s, found %s (offset %llu)",
                     f->path, key, want, gguf_vtype_name(kv->type), (unsigned long long)kv->offset);
}

/* The kv of key, or NULL when absent (an error only when required). */
static mica_status get_kv(const gguf_file *f, const char *key, bool required, const gguf_kv **out,
                          mica_err *err)
{
    *out = gguf_find(f, key);
    if (!*out && required) return get_missing(f, key, err);
    return MICA_OK;
}

static mica_status get_int(const gguf_file *f, const char *key, bool required, int64_t *out,
                           mica_err *err)
{
    const gguf_kv *kv;
    int64_t v;
    if (get_kv(f, key, required, &kv, err)) return MICA_EFORMAT;
    if (!kv) return MICA_OK;
    if (!gguf_vtype_is_int(kv->type) && kv->type != GGUF_VT_BOOL)
        return get_wrong_type(f, key, kv, "an integer", err);
    if (!gguf_int_value(kv->type, kv->val, &v))
        return core_fail(err, MICA_ERANGE, "%s: key '%s': value %llu does not fit in int64",
                         f->path, key, (unsigned long long)gguf_load_u64(kv->val));
    *out = v;
    return MICA_OK;
}

mica_status gguf_get_int(const gguf_file *f, const char *key, int64_t *out, mica_err *err)
{
    return get_int(f, key, true, out, err);
}

mica_status gguf_get_int_opt(const gguf_file *f, const char *key, int64_t *out, mica_err *err)
{
    return get_int(f, key, false, out, err);
}

static mica_status get_float(const gguf_file *f, const char *key, bool required, double *out,
                             mica_err *err)
{
    const gguf_kv *kv;
    if (get_kv(f, key, required, &kv, err)) return MICA_EFORMAT;
    if (!kv) return MICA_OK;
    if (kv->type == GGUF_VT_F32) {
        float v;
        memcpy(&v, kv->val, sizeof v);
        *out = v;
    } else if (kv->type == GGUF_VT_F64) {
        memcpy(out, kv->val, sizeof *out);
    } else {
        return get_wrong_type(f, key, kv, "f32 or f64", err);
    }
    return MICA_OK;
}

mica_status gguf_get_float(const gguf_file *f, const char *key, double *out, mica_err *err)
{
    return get_float(f, key, true, out, err);
}

mica_status gguf_get_float_opt(const gguf_file *f, const char *key, double *out, mica_err *err)
{
    return get_float(f, key, false, out, err);
}

mica_status gguf_get_bool_opt(const gguf_file *f, const char *key, bool *out, mica_err *err)
{
    const gguf_kv *kv;
    (void)get_kv(f, key, false, &kv, err);
    if (!kv) return MICA_OK;
    if (kv->type != GGUF_VT_BOOL) return get_wrong_type(f, key, kv, "bool", err);
    *out = kv->val[0] != 0;
    return MICA_OK;
}

static mica_status get_str(const gguf_file *f, const char *key, bool required, gguf_str *out,
                           mica_err *err)
{
    const gguf_kv *kv;
    if (get_kv(f, key, required, &kv, err)) return MICA_EFORMAT;
    if (!kv) return MICA_OK;
    if (kv->type != GGUF_VT_STRING) return get_wrong_type(f, key, kv, "string", err);
    /* A string value is stored as its u64 length followed by the bytes. */
    out->len = gguf_load_u64(kv->val);
    out->ptr = (const char *)kv->val + 8;
    return MICA_OK;
}

mica_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, mica_err *err)
{
    return get_str(f, key, true, out, err);
}

mica_status gguf_get_str_opt(const gguf_file *f, const char *key, gguf_str *out, mica_err *err)
{
    return get_str(f, key, false, out, err);
}

mica_status gguf_get_arr(const gguf_file *f, const char *key, const gguf_kv **out, mica_err *err)
{
    const gguf_kv *kv;
    if (get_kv(f, key, true, &kv, err)) return MICA_EFORMAT;
    if (kv->type != GGUF_VT_ARRAY) return get_wrong_type(f, key, kv, "an array", err);
    *out = kv;
    return MICA_OK;
}
