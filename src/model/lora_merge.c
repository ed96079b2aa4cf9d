/*
 * lora_merge.c - merging LoRA adapters into a model file: W' = W + s * B A for every adapted
 * weight (s as lora_weight_scale; token_embd: row t gets s * B a_t, A being stored
 * transposed). Each merged tensor keeps the base's type: its rows are dequantized, merged in
 * float and converted back with tensor_from_f32 (for Q8_0/Q4_0 llama-quantize's quantizer,
 * as mica quantize writes them). Every key and every other tensor is copied unchanged, in
 * order. Called by `mica lora merge`.
 */
#include "model/lora.h"

#include <stdlib.h>
#include <string.h>

/* One adapter's product for one matrix, in float: delta row o = sum_k p[o][k] * q[k][:]. */
typedef struct merge_term {
    float s;
    int32_t rank;
    float *p; /* (n_expert, n_rows, rank) */
    float *q; /* (n_expert, rank, ne0) */
} merge_term;

typedef struct merge_job {
    const gguf_tensor *src;
    uint8_t *dst;
    size_t row_bytes;
    int64_t ne0, n_rows; /* rows per matrix */
    const merge_term *terms;
    int32_t n_terms;
    float *scratch; /* (n_threads, 2 * ne0) */
} merge_job;

static void merge_rows(void *ctx, int64_t r0, int64_t r1, int thread)
{
    const merge_job *j = ctx;
    float *row = j->scratch + (size_t)thread * 2 * (size_t)j->ne0, *d = row + j->ne0;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t e = r / j->n_rows, o = r % j->n_rows;
        tensor_to_f32(j->src->type, (const uint8_t *)j->src->data + (size_t)r * j->row_bytes, row,
                      j->ne0);
        for (int32_t t = 0; t < j->n_terms; t++) {
            const merge_term *m = &j->terms[t];
            const float *p = m->p + ((size_t)e * (size_t)j->n_rows + (size_t)o) * (size_t)m->rank;
            const float *q = m->q + (size_t)e * (size_t)m->rank * (size_t)j->ne0;
            for (int64_t i = 0; i < j->ne0; i++) d[i] = 0.0f;
            for (int32_t k = 0; k < m->rank; k++)
                for (int64_t i = 0; i < j->ne0; i++) d[i] += p[k] * q[(size_t)k * j->ne0 + i];
            for (int64_t i = 0; i < j->ne0; i++) row[i] += m->s * d[i];
        }
        tensor_from_f32(j->src->type, row, j->dst + (size_t)r * j->row_bytes, j->ne0);
    }
}

/* A whole view as floats: ne[1] * ne[2] rows of ne[0]. */
static float *view_f32(const tensor_view *v)
{
    const int64_t n_rows = v->ne[1] * v->ne[2];
    float *f = malloc((size_t)(n_rows * v->ne[0]) * sizeof *f);
    for (int64_t r = 0; f && r < n_rows; r++)
        tensor_to_f32(v->type, (const uint8_t *)v->data + (size_t)r * v->row_bytes,
                      f + r * v->ne[0], v->ne[0]);
    return f;
}

/* p and q of one adapted weight: B and A for a matmul weight; for token_embd A^T as stored
 * ([r, n_vocab]: row t is a_t) and B transposed to (r, n_embd). */
static mica_status merge_term_make(const lora_adapter *a, const lora_weight *w, lora_target t,
                                   float scale, merge_term *m)
{
    m->s = lora_weight_scale(a, w, scale);
    m->rank = w->rank;
    if (t != LORA_TOKEN_EMBD) {
        m->p = view_f32(&w->b);
        m->q = view_f32(&w->a);
        return m->p && m->q ? MICA_OK : MICA_ENOMEM;
    }
    m->p = view_f32(&w->a);
    float *b = view_f32(&w->b);
    const int64_t ne = w->b.ne[1], r = w->rank;
    m->q = b ? malloc((size_t)(ne * r) * sizeof *m->q) : NULL;
    for (int64_t j = 0; m->q && j < ne; j++)
        for (int64_t k = 0; k < r; k++) m->q[k * ne + j] = b[j * r + k];
    free(b);
    return m->p && m->q ? MICA_OK : MICA_ENOMEM;
}

typedef struct merge_ctx {
    const model *m;
    lora_adapter **ad;
    const float *scales;
    int32_t n;
    tensor_pool *pool;
} merge_ctx;

/* The merged bytes of tensor src into *out, or *out = NULL when no adapter touches it. */
static mica_status merge_tensor(const merge_ctx *mc, const gguf_tensor *src, void **out,
                                mica_err *err)
{
    merge_term terms[LORA_MAX_PER_SEQ];
    int32_t n_terms = 0;
    mica_status st = MICA_OK;
    *out = NULL;
    for (int32_t i = 0; i < mc->n && !st; i++) {
        lora_target t;
        const lora_weight *w = lora_find_name(mc->ad[i], src->name, &t);
        if (!w || mc->scales[i] == 0.0f) continue;
        memset(&terms[n_terms], 0, sizeof terms[n_terms]);
        st = merge_term_make(mc->ad[i], w, t, mc->scales[i], &terms[n_terms++]);
    }
    merge_job j = {src,        NULL,       tensor_row_size(src->type, src->ne[0]),
                   src->ne[0], src->ne[1], terms,
                   n_terms,    NULL};
    if (!st && n_terms) {
        j.dst = malloc((size_t)src->nbytes);
        j.scratch = malloc((size_t)tensor_pool_size(mc->pool) * 2 * (size_t)j.ne0 * sizeof(float));
        if (j.dst && j.scratch)
            tensor_pool_for(mc->pool, src->ne[1] * src->ne[2], merge_rows, &j);
        else
            st = MICA_ENOMEM;
    }
    for (int32_t i = 0; i < n_terms; i++) {
        free(terms[i].p);
        free(terms[i].q);
    }
    free(j.scratch);
    if (st) {
        free(j.dst);
        return core_fail(err, st, "tensor '%s': out of memory for merging", src->name);
    }
    *out = j.dst;
    return MICA_OK;
}

/* Merging token_embd into a model whose output is the embedding would change the output
 * projection too, which the adapter applied at run time does not. */
static mica_status check_tied(const merge_ctx *mc, mica_err *err)
{
    if (mc->m->output.data != mc->m->tok_embd.data) return MICA_OK;
    for (int32_t i = 0; i < mc->n; i++)
        if (lora_find(mc->ad[i], 0, LORA_TOKEN_EMBD) && mc->scales[i] != 0.0f)
            return core_fail(err, MICA_EUNSUPPORTED,
                             "%s: the adapter changes token_embd.weight, which this model also "
                             "uses as its output; merging it is not supported",
                             lora_path(mc->ad[i]));
    return MICA_OK;
}

static mica_status merge_write(const merge_ctx *mc, const char *out_path, mica_err *err)
{
    const gguf_file *f = mc->m->gguf;
    void **bufs = core_calloc(f->n_tensors + 1, sizeof *bufs);
    gguf_writer *gw = gguf_writer_new();
    mica_status st = MICA_OK;
    if (!bufs || !gw || gguf_writer_copy_kv(gw, f))
        st = core_fail(err, MICA_ENOMEM, "%s: out of memory", out_path);
    for (uint64_t i = 0; !st && i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        st = merge_tensor(mc, t, &bufs[i], err);
        if (!st)
            st = gguf_writer_add_tensor(gw, t->name, t->type, t->n_dims, t->ne,
                                        bufs[i] ? bufs[i] : t->data, err);
    }
    if (!st) st = gguf_writer_write(gw, out_path, err);
    for (uint64_t i = 0; bufs && i < f->n_tensors; i++) free(bufs[i]);
    free(bufs);
    gguf_writer_free(gw);
    return st;
}

mica_status lora_merge_file(const char *base_path, const char *const *adapter_paths,
                            const float *scales, int32_t n, const char *out_path, int n_threads,
                            mica_err *err)
{
    if (n < 1 || n > LORA_MAX_PER_SEQ)
        return core_fail(err, MICA_EINVAL, "%d adapters to merge (1 to %d)", n, LORA_MAX_PER_SEQ);
    merge_ctx mc = {.scales = scales, .n = n};
    lora_adapter *ad[LORA_MAX_PER_SEQ] = {0};
    model *m = NULL;
    mica_status st = model_load(&m, base_path, err);
    for (int32_t i = 0; !st && i < n; i++) st = lora_load(&ad[i], m, adapter_paths[i], err);
    if (!st) st = tensor_pool_new(&mc.pool, n_threads > 0 ? n_threads : core_n_cpus(), err);
    mc.m = m;
    mc.ad = ad;
    if (!st) st = check_tied(&mc, err);
    if (!st) st = merge_write(&mc, out_path, err);
    tensor_pool_free(mc.pool);
    for (int32_t i = 0; i < n; i++) lora_free(ad[i]);
    model_free(m);
    return st;
}
