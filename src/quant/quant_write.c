/*
 * quant_write.c - turns a plan into a file: converts each tensor's rows to its planned type
 * on a thread pool, copies the metadata as llama-quantize does (every key in order, then
 * general.quantization_version = 2 and general.file_type appended at the end), and writes
 * through the GGUF writer (PATH.tmp, renamed only when complete). Also the whole command:
 * plan, measure sensitivity under a budget, write.
 *
 * Does not own: the type rules (quant_rules.c), sensitivity (quant_sens.c), the row
 * quantizers (tensor/) or the file format (gguf/). Called by `mica quantize`, tests.
 */
#include "quant/quant_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- converting one tensor ----------------------------------------------------------- */

typedef struct quant_conv {
    const uint8_t *src;
    uint32_t src_type, type;
    int64_t ne0;
    size_t src_row, dst_row;
    uint8_t *dst;
    float *scratch; /* (n_threads, ne0) */
} quant_conv;

static void quant_conv_rows(void *ctx, int64_t r0, int64_t r1, int thread)
{
    const quant_conv *c = ctx;
    float *row = c->scratch + (size_t)thread * (size_t)c->ne0;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = c->src + (size_t)r * c->src_row;
        const float *x = (const float *)s; /* F32 rows are 4-byte aligned in the mapping */
        if (c->src_type != GGUF_T_F32) {
            tensor_to_f32(c->src_type, s, row, c->ne0);
            x = row;
        }
        tensor_from_f32(c->type, x, c->dst + (size_t)r * c->dst_row, c->ne0);
    }
}

mica_status quant_convert(tensor_pool *pool, const gguf_tensor *src, uint32_t type, void *dst,
                          mica_err *err)
{
    const int n_threads = pool ? tensor_pool_size(pool) : 1;
    quant_conv c = {
        .src = src->data,
        .src_type = src->type,
        .type = type,
        .ne0 = src->ne[0],
        .src_row = tensor_row_size(src->type, src->ne[0]),
        .dst_row = tensor_row_size(type, src->ne[0]),
        .dst = dst,
        .scratch = core_calloc((size_t)n_threads * (size_t)src->ne[0], sizeof(float)),
    };
    if (!c.scratch)
        return core_fail(err, MICA_ENOMEM, "tensor '%s': out of memory for %lld floats", src->name,
                         (long long)src->ne[0]);
    const int64_t n_rows = gguf_tensor_nelements(src) / src->ne[0];
    tensor_pool_for(pool, n_rows, quant_conv_rows, &c);
    free(c.scratch);
    return MICA_OK;
}

/* ---- metadata ------------------------------------------------------------------------ */

static uint64_t quant_vsize(uint32_t t)
{
    static const uint8_t sizes[GGUF_VT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_VT_COUNT ? sizes[t] : 0;
}

/* Where a validated kv's bytes end in the mapping. */
static const uint8_t *quant_kv_end(const gguf_file *f, const gguf_kv *kv)
{
    if (kv->type == GGUF_VT_STRING) {
        uint64_t len;
        memcpy(&len, kv->val, sizeof len);
        return kv->val + 8 + len;
    }
    if (kv->type != GGUF_VT_ARRAY) return kv->val + quant_vsize(kv->type);
    if (kv->arr_type != GGUF_VT_STRING) return kv->val + kv->arr_n * quant_vsize(kv->arr_type);
    if (kv->arr_n == 0) return kv->val;
    const gguf_str last = gguf_arr_str(f, kv, kv->arr_n - 1);
    return (const uint8_t *)last.ptr + last.len;
}

static bool quant_kv_moved(const gguf_kv *kv)
{
    return gguf_str_eq(kv->key, "general.quantization_version") ||
           gguf_str_eq(kv->key, "general.file_type");
}

/* The writer copies keys byte for byte only from an open file, and cannot drop one; so the
 * keys to keep are laid out as a GGUF image without tensors, opened and copied from. */
static mica_status quant_copy_kv(gguf_writer *w, const gguf_file *f, mica_err *err)
{
    uint64_t size = 24, n = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (quant_kv_moved(&f->kv[i])) continue;
        size += (uint64_t)(quant_kv_end(f, &f->kv[i]) - (f->base + f->kv[i].offset));
        n++;
    }
    size = (size + 31) / 32 * 32;
    uint8_t *img = core_calloc(1, (size_t)size);
    if (!img) return core_fail(err, MICA_ENOMEM, "%s: out of memory for metadata", f->path);
    const uint32_t version = 3;
    const uint64_t n_tensors = 0;
    memcpy(img, "GGUF", 4);
    memcpy(img + 4, &version, 4);
    memcpy(img + 8, &n_tensors, 8);
    memcpy(img + 16, &n, 8);
    uint8_t *p = img + 24;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (quant_kv_moved(&f->kv[i])) continue;
        const uint8_t *start = f->base + f->kv[i].offset;
        const size_t len = (size_t)(quant_kv_end(f, &f->kv[i]) - start);
        memcpy(p, start, len);
        p += len;
    }
    gguf_file *g = NULL;
    mica_status st = gguf_open_memory(&g, img, (size_t)size, f->path, err);
    if (!st && gguf_writer_copy_kv(w, g))
        st = core_fail(err, MICA_ENOMEM, "%s: cannot copy the metadata", f->path);
    gguf_close(g);
    free(img);
    return st;
}

static mica_status quant_set_kv(gguf_writer *w, const gguf_file *f, uint32_t target, mica_err *err)
{
    mica_status st = quant_copy_kv(w, f, err);
    if (st) return st;
    const int32_t ftype = quant_file_type(target);
    if (gguf_writer_set_u32(w, "general.quantization_version", 2) ||
        (ftype >= 0 && gguf_writer_set_u32(w, "general.file_type", (uint32_t)ftype)))
        return core_fail(err, MICA_ENOMEM, "out of memory for metadata");
    return MICA_OK;
}

/* ---- writing ------------------------------------------------------------------------- */

/* Converts tensor i (or points at the input's bytes when its type is unchanged). */
static mica_status quant_add(gguf_writer *w, tensor_pool *pool, const gguf_file *f,
                             const quant_tensor *t, void **buf, mica_err *err)
{
    const gguf_tensor *src = &f->tensors[t->src_index];
    const void *data = src->data;
    if (t->type != src->type) {
        *buf = malloc(t->bytes ? (size_t)t->bytes : 1);
        if (!*buf)
            return core_fail(err, MICA_ENOMEM, "tensor '%s': out of memory for %llu bytes", t->name,
                             (unsigned long long)t->bytes);
        mica_status st = quant_convert(pool, src, t->type, *buf, err);
        if (st) return st;
        data = *buf;
    }
    return gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, data, err);
}

mica_status quant_write(const gguf_file *f, const quant_plan *plan, const char *path, int n_threads,
                        quant_progress_fn progress, void *progress_ctx, mica_err *err)
{
    mica_status st;
    tensor_pool *pool = NULL;
    void **bufs = core_calloc(plan->n ? plan->n : 1, sizeof *bufs);
    gguf_writer *w = gguf_writer_new();
    if (!bufs || !w) {
        st = core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((st = tensor_pool_new(&pool, n_threads > 0 ? n_threads : core_n_cpus(), err))) goto done;
    if ((st = quant_set_kv(w, f, plan->target, err))) goto done;
    for (size_t i = 0; i < plan->n; i++) {
        if (progress)
            progress(progress_ctx, "quantizing", plan->t[i].name, (int64_t)i, (int64_t)plan->n);
        if ((st = quant_add(w, pool, f, &plan->t[i], &bufs[i], err))) goto done;
    }
    if (progress) progress(progress_ctx, "writing", path, (int64_t)plan->n, (int64_t)plan->n);
    st = gguf_writer_write(w, path, err);
done:
    for (size_t i = 0; bufs && i < plan->n; i++) free(bufs[i]);
    free(bufs);
    gguf_writer_free(w);
    tensor_pool_free(pool);
    return st;
}

/* ---- the whole command --------------------------------------------------------------- */

/* True when out names the same file as in (out may not exist yet). */
static bool quant_same_file(const char *in, const char *out)
{
    struct stat a, b;
    if (stat(in, &a) != 0 || stat(out, &b) != 0) return false;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

mica_status quant_model_file(const char *in, const char *out, const quant_params *p,
                             quant_plan *plan, mica_err *err)
{
    memset(plan, 0, sizeof *plan);
    if (!strcmp(in, out) || quant_same_file(in, out))
        return core_fail(err, MICA_EINVAL, "%s: the output file is the input file", out);
    if (p->budget && !p->calib)
        return core_fail(err, MICA_EINVAL, "--budget-mb needs a calibration text (--calib)");
    if (p->budget && quant_type_is_float(p->type))
        return core_fail(err, MICA_EINVAL,
                         "--budget-mb: type %s is not quantized; nothing to keep in F16",
                         gguf_ttype_name(p->type));
    gguf_file *f = NULL;
    mica_status st = gguf_open(&f, in, err);
    if (st) return st;
    if ((st = quant_plan_make(f, p->type, p->keep_f16, plan, err))) goto done;
    if (p->budget) {
        const quant_eval_params ep = {
            .n_ctx = p->calib_ctx,
            .n_threads = p->n_threads,
            .progress = p->progress,
            .progress_ctx = p->progress_ctx,
            .text_name = p->calib_name,
        };
        if ((st = quant_sensitivity(in, f, plan, p->calib, p->calib_len, &ep, err))) goto done;
        if ((st = quant_budget_apply(plan, p->budget, err))) {
            core_fail_prefix(err, in);
            goto done;
        }
    }
    st = quant_write(f, plan, out, p->n_threads, p->progress, p->progress_ctx, err);
done:
    if (st) quant_plan_free(plan);
    gguf_close(f);
    return st;
}
