/*
 * matmul.c - weight views over GGUF tensors and the matrix product y = W x that every
 * projection of the forward pass runs: activations are converted once to the weight type's
 * vec_dot type, then the output rows (weight rows) are split across the thread pool, and
 * each small tile of weight rows is dotted with every activation row while it is in cache.
 *
 * Does not own: the dot kernels (dot.c, dot_avx2.c), the pool (pool.c), binding tensors by
 * name (model/). Called by: model/ (forward pass), train/, tests.
 */
#include "tensor/tensor_int.h"

#include <stdlib.h>
#include <string.h>

/* Weight rows per tile: about this many bytes, so that the tile stays in L1/L2 while the
 * activation rows stream past it. */
#define MATMUL_TILE_BYTES    (32 * 1024)
#define MATMUL_TILE_MAX_ROWS 64
/* Below this many multiply-adds a matmul runs on the caller: waking workers costs more. */
#define MATMUL_MIN_PARALLEL_WORK (32 * 1024)
/* Elements per slice in tensor_matmul_chunked (a multiple of every block size). */
#define MATMUL_CHUNK 1024

/* ---- views --------------------------------------------------------------------------- */

mica_status tensor_view_from_gguf(tensor_view *v, const gguf_tensor *t, const char *path,
                                  mica_err *err)
{
    memset(v, 0, sizeof *v);
    if (!tensor_type_supported(t->type))
        return core_fail(err, MICA_EUNSUPPORTED,
                         "%s: tensor '%s' has type %s, which mica cannot compute with", path,
                         t->name, gguf_ttype_name(t->type));
    uint32_t bs = 1;
    gguf_ttype_layout(t->type, &bs, NULL);
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] < 1)
            return core_fail(err, MICA_EFORMAT, "%s: tensor '%s' has dimension %d of size %lld",
                             path, t->name, d, (long long)t->ne[d]);
    }
    if (t->ne[0] % bs != 0)
        return core_fail(err, MICA_EFORMAT,
                         "%s: tensor '%s' has rows of %lld elements, not a multiple of the %s "
                         "block size %u",
                         path, t->name, (long long)t->ne[0], gguf_ttype_name(t->type), bs);
    const size_t row_bytes = tensor_row_size(t->type, t->ne[0]);
    uint64_t need = row_bytes;
    for (int d = 1; d < GGUF_MAX_DIMS; d++) {
        if (!core_mul_ok(need, (uint64_t)t->ne[d], &need))
            return core_fail(err, MICA_EFORMAT, "%s: tensor '%s' is too large", path, t->name);
    }
    if (need != t->nbytes)
        return core_fail(err, MICA_EFORMAT,
                         "%s: tensor '%s' holds %llu bytes but its type %s and shape need %llu",
                         path, t->name, (unsigned long long)t->nbytes, gguf_ttype_name(t->type),
                         (unsigned long long)need);
    if (!t->data) return core_fail(err, MICA_EFORMAT, "%s: tensor '%s' has no data", path, t->name);
    v->data = t->data;
    v->type = t->type;
    memcpy(v->ne, t->ne, sizeof v->ne);
    v->row_bytes = row_bytes;
    v->name = t->name;
    return MICA_OK;
}

tensor_view tensor_view_matrix(const tensor_view *v, int64_t i2)
{
    assert(i2 >= 0 && i2 < v->ne[2] && v->ne[3] == 1);
    tensor_view m = *v;
    m.data = (const uint8_t *)v->data + (size_t)i2 * (size_t)v->ne[1] * v->row_bytes;
    m.ne[2] = 1;
    return m;
}

tensor_view tensor_view_rows(const tensor_view *v, int64_t r0, int64_t n)
{
    assert(r0 >= 0 && n >= 0 && r0 + n <= v->ne[1] && v->ne[2] == 1);
    tensor_view m = *v;
    m.data = (const uint8_t *)v->data + (size_t)r0 * v->row_bytes;
    m.ne[1] = n;
    return m;
}

void tensor_get_row(const tensor_view *v, int64_t row, float *dst)
{
    assert(row >= 0 && row < v->ne[1]);
    tensor_to_f32(v->type, (const uint8_t *)v->data + (size_t)row * v->row_bytes, dst, v->ne[0]);
}

/* ---- matmul -------------------------------------------------------------------------- */

typedef struct matmul_job {
    const tensor_view *w;
    tensor_dot_fn dot;
    const uint8_t *act; /* n_rows converted activation rows, act_bytes apart */
    size_t act_bytes;
    int64_t n_rows;
    float *y; /* (n_rows, w->ne[1]), ne[1] contiguous */
} matmul_job;

static int64_t matmul_tile_rows(size_t row_bytes)
{
    int64_t t = (int64_t)(MATMUL_TILE_BYTES / (row_bytes ? row_bytes : 1));
    if (t < 1) t = 1;
    if (t > MATMUL_TILE_MAX_ROWS) t = MATMUL_TILE_MAX_ROWS;
    return t;
}

/* Output rows [o0, o1) of every activation row. */
static void matmul_range(void *ctx, int64_t o0, int64_t o1, int thread)
{
    const matmul_job *j = ctx;
    const int64_t k = j->w->ne[0], n_out = j->w->ne[1];
    const size_t rb = j->w->row_bytes;
    const uint8_t *wdata = j->w->data;
    const int64_t tile = matmul_tile_rows(rb);
    for (int64_t t0 = o0; t0 < o1; t0 += tile) {
        const int64_t t1 = t0 + tile < o1 ? t0 + tile : o1;
        for (int64_t r = 0; r < j->n_rows; r++) {
            const void *a = j->act + (size_t)r * j->act_bytes;
            float *yr = j->y + r * n_out;
            for (int64_t o = t0; o < t1; o++) yr[o] = j->dot(wdata + (size_t)o * rb, a, k);
        }
    }
}

void tensor_matmul(tensor_pool *p, const tensor_view *w, const float *x, int64_t n_rows, float *y)
{
    const int64_t k = w->ne[0], n_out = w->ne[1];
    if (n_rows <= 0 || n_out <= 0) return;
    tensor_pool_count_matmul(p, w, n_rows);
    const uint32_t vtype = tensor_vec_dot_type(w->type);
    const size_t act_bytes = tensor_row_size(vtype, k);
    matmul_job job = {.w = w,
                      .dot = tensor_dot_kernel(w->type),
                      .act_bytes = act_bytes,
                      .n_rows = n_rows,
                      .y = y};
    void *owned = NULL;
    if (vtype == GGUF_T_F32) {
        job.act = (const uint8_t *)x; /* already the vec_dot type */
    } else {
        uint64_t total;
        if (!core_mul_ok((uint64_t)n_rows, act_bytes, &total) || total > SIZE_MAX) {
            tensor_matmul_chunked(w, x, n_rows, y);
            return;
        }
        uint8_t *buf = tensor_pool_scratch(p, (size_t)total);
        if (!buf && !p) buf = owned = malloc((size_t)total);
        if (!buf) {
            tensor_matmul_chunked(w, x, n_rows, y);
            return;
        }
        for (int64_t r = 0; r < n_rows; r++)
            tensor_convert_act(w->type, x + r * k, buf + r * act_bytes, k);
        job.act = buf;
    }
    const double work = (double)k * (double)n_out * (double)n_rows;
    tensor_pool_for(work < MATMUL_MIN_PARALLEL_WORK ? NULL : p, n_out, matmul_range, &job);
    free(owned);
}

void tensor_matmul_chunked(const tensor_view *w, const float *x, int64_t n_rows, float *y)
{
    const int64_t k = w->ne[0], n_out = w->ne[1];
    const tensor_dot_fn dot = tensor_dot_kernel(w->type);
    const uint8_t *wdata = w->data;
    /* Big enough for MATMUL_CHUNK elements of any vec_dot type (F32 is the widest). */
    _Alignas(32) uint8_t buf[MATMUL_CHUNK * sizeof(float)];
    for (int64_t r = 0; r < n_rows; r++) {
        float *yr = y + r * n_out;
        for (int64_t o = 0; o < n_out; o++) yr[o] = 0.0f;
        for (int64_t k0 = 0; k0 < k; k0 += MATMUL_CHUNK) {
            const int64_t len = k - k0 < MATMUL_CHUNK ? k - k0 : MATMUL_CHUNK;
            /* Q8_0 blocks never straddle slices (k0 and k are multiples of 32), so each
             * slice quantizes exactly as the whole row would. */
            tensor_convert_act(w->type, x + r * k + k0, buf, len);
            const size_t woff = tensor_row_size(w->type, k0);
            for (int64_t o = 0; o < n_out; o++)
                yr[o] += dot(wdata + (size_t)o * w->row_bytes + woff, buf, len);
        }
    }
}
