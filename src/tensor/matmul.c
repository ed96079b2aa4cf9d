/*
 * matmul.c - weight views over GGUF tensors and the matrix product y = W x that every
 * projection of the forward pass runs. When the kernel family in use has a batched (gemm)
 * kernel for the weight type, activations are packed once into its layout and tiles of
 * output rows (weight rows) are split across the thread pool, each tile computed against
 * every activation row by the kernel. Otherwise activations are converted once to the
 * weight type's vec_dot type and each small tile of weight rows is dotted with every
 * activation row by the dot kernel while it is in cache. Both give the same bits.
 * tensor_matmul_multi does this for several weights that share the input (q/k/v, gate/up)
 * with one conversion and one job on the pool.
 *
 * Does not own: the kernels (dot.c, dot_avx2.c, dot_avx512.c), the pool (pool.c), binding
 * tensors by name (model/). Called by: model/ (forward pass), quant/, tests.
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
/* Below this many activation elements packing runs on the caller. */
#define MATMUL_MIN_PARALLEL_PACK (16 * 1024)
/* Most weights one tensor_matmul_multi shares its input between. */
#define MATMUL_MAX_W 8

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
    assert(v->layout == TENSOR_LAYOUT_GGUF ||
           (r0 % TENSOR_X16_ROWS == 0 && n % TENSOR_X16_ROWS == 0));
    tensor_view m = *v;
    m.data = (const uint8_t *)v->data + (size_t)r0 * v->row_bytes;
    m.ne[1] = n;
    return m;
}

/* Row o of w as the file holds it: in place, or unpacked into tmp (row_bytes; only needed
 * for an interleaved view, whose rows are at most TENSOR_X16_MAX_BLOCKS blocks). */
static const uint8_t *matmul_file_row(const tensor_view *w, int64_t o, uint8_t *tmp)
{
    if (w->layout == TENSOR_LAYOUT_GGUF) return (const uint8_t *)w->data + (size_t)o * w->row_bytes;
    tensor_x16_unpack_row(w, o, tmp);
    return tmp;
}

void tensor_get_row(const tensor_view *v, int64_t row, float *dst)
{
    assert(row >= 0 && row < v->ne[1]);
    _Alignas(64) uint8_t tmp[TENSOR_X16_MAX_BLOCKS * sizeof(block_q4_0)];
    tensor_to_f32(v->type, matmul_file_row(v, row, tmp), dst, v->ne[0]);
}

/* ---- matmul -------------------------------------------------------------------------- */

/* One dispatch over the output rows of up to MATMUL_MAX_W weights that share the input. Work
 * items are output rows (dot path) or gemm tiles, numbered across the weights in turn. */
typedef struct matmul_job {
    int n_w;
    const tensor_view *w[MATMUL_MAX_W];
    float *y[MATMUL_MAX_W];          /* (n_rows, w[i]->ne[1]), ne[1] contiguous */
    int64_t start[MATMUL_MAX_W + 1]; /* first item of each weight; start[n_w]: the total */
    int64_t item;                    /* output rows per item */
    const tensor_gemm *g;            /* NULL: the dot path */
    tensor_dot_fn dot;
    const float *x; /* (n_rows, k) */
    int64_t n_rows, k;
    const uint8_t *act; /* dot path: converted rows act_bytes apart; gemm path: packed */
    size_t act_bytes;
} matmul_job;

static int64_t matmul_tile_rows(size_t row_bytes)
{
    int64_t t = (int64_t)(MATMUL_TILE_BYTES / (row_bytes ? row_bytes : 1));
    if (t < 1) t = 1;
    if (t > MATMUL_TILE_MAX_ROWS) t = MATMUL_TILE_MAX_ROWS;
    return t;
}

/* Output rows [o0, o1) of weight m for every activation row, with the dot kernel: a small
 * tile of weight rows against all activation rows while it is in cache. */
static void matmul_dot_rows(const matmul_job *j, int m, int64_t o0, int64_t o1)
{
    const tensor_view *w = j->w[m];
    const int64_t n_out = w->ne[1];
    const size_t rb = w->row_bytes;
    const uint8_t *wdata = w->data;
    const int64_t tile = matmul_tile_rows(rb);
    if (w->layout != TENSOR_LAYOUT_GGUF) { /* interleaved, but no kernel for it: row by row */
        _Alignas(64) uint8_t tmp[TENSOR_X16_MAX_BLOCKS * sizeof(block_q4_0)];
        for (int64_t o = o0; o < o1; o++) {
            const uint8_t *row = matmul_file_row(w, o, tmp);
            for (int64_t r = 0; r < j->n_rows; r++)
                j->y[m][r * n_out + o] = j->dot(row, j->act + (size_t)r * j->act_bytes, j->k);
        }
        return;
    }
    for (int64_t t0 = o0; t0 < o1; t0 += tile) {
        const int64_t t1 = t0 + tile < o1 ? t0 + tile : o1;
        for (int64_t r = 0; r < j->n_rows; r++) {
            const void *a = j->act + (size_t)r * j->act_bytes;
            float *yr = j->y[m] + r * n_out;
            for (int64_t o = t0; o < t1; o++) yr[o] = j->dot(wdata + (size_t)o * rb, a, j->k);
        }
    }
}

/* Work items [i0, i1), which may span weights. */
static void matmul_items(void *ctx, int64_t i0, int64_t i1, int thread)
{
    const matmul_job *j = ctx;
    for (int m = 0; m < j->n_w && i0 < i1; m++) {
        const int64_t s = j->start[m], e = j->start[m + 1];
        if (i0 >= e) continue;
        const int64_t a = i0 - s, b = (i1 < e ? i1 : e) - s, n_out = j->w[m]->ne[1];
        const int64_t o0 = a * j->item, o1 = b * j->item < n_out ? b * j->item : n_out;
        if (j->g && j->w[m]->layout == TENSOR_LAYOUT_Q4_0_X16)
            j->g->run_x16(j->w[m], o0, o1, j->act, j->n_rows, j->y[m]);
        else if (j->g)
            j->g->run(j->w[m], o0, o1, j->act, j->n_rows, j->y[m]);
        else
            matmul_dot_rows(j, m, o0, o1);
        i0 = s + b;
    }
}

/* Activation groups [g0, g1) into the gemm kernel's layout. */
static void matmul_pack_range(void *ctx, int64_t g0, int64_t g1, int thread)
{
    const matmul_job *j = ctx;
    const int64_t grp = j->g->act_group;
    const int64_t r1 = g1 * grp < j->n_rows ? g1 * grp : j->n_rows;
    j->g->pack_act(j->x, j->n_rows, j->k, (void *)j->act, g0 * grp, r1);
}

/* A buffer of `bytes` (64-byte aligned): the pool's scratch, or without a pool a new one
 * that *owned receives. NULL when none can be had. */
static uint8_t *matmul_buffer(tensor_pool *p, size_t bytes, void **owned)
{
    *owned = NULL;
    if (bytes > SIZE_MAX - 64) return NULL;
    uint8_t *buf = tensor_pool_scratch(p, bytes + 64);
    if (!buf && !p) buf = *owned = malloc(bytes + 64);
    return buf ? buf + (64 - (uintptr_t)buf % 64) % 64 : NULL;
}

/* Packs the activations for the gemm kernel; false when there is no memory for them. */
static bool matmul_prepare_gemm(tensor_pool *p, matmul_job *j, void **owned)
{
    uint8_t *buf = matmul_buffer(p, j->g->act_bytes(j->k, j->n_rows), owned);
    if (!buf) return false;
    j->act = buf;
    const int64_t n_groups = (j->n_rows + j->g->act_group - 1) / j->g->act_group;
    const double elems = (double)j->n_rows * (double)j->k;
    tensor_pool_for(elems < MATMUL_MIN_PARALLEL_PACK ? NULL : p, n_groups, matmul_pack_range, j);
    return true;
}

/* Converts the activations to the vec_dot type for the dot kernel; false when there is no
 * memory for them. */
static bool matmul_prepare_dot(tensor_pool *p, matmul_job *j, void **owned)
{
    const uint32_t wtype = j->w[0]->type, vtype = tensor_vec_dot_type(wtype);
    j->act_bytes = tensor_row_size(vtype, j->k);
    if (vtype == GGUF_T_F32) {
        j->act = (const uint8_t *)j->x; /* already the vec_dot type */
        return true;
    }
    uint64_t total;
    if (!core_mul_ok((uint64_t)j->n_rows, j->act_bytes, &total) || total > SIZE_MAX) return false;
    uint8_t *buf = matmul_buffer(p, (size_t)total, owned);
    if (!buf) return false;
    for (int64_t r = 0; r < j->n_rows; r++)
        tensor_convert_act(wtype, j->x + r * j->k, buf + r * j->act_bytes, j->k);
    j->act = buf;
    return true;
}

/* Whether the weights can share one conversion of the input: same type and row length. */
static bool matmul_can_share(const tensor_view *const *w, int n_w)
{
    if (n_w > MATMUL_MAX_W) return false;
    for (int i = 1; i < n_w; i++)
        if (w[i]->type != w[0]->type || w[i]->ne[0] != w[0]->ne[0]) return false;
    return true;
}

/* The batched kernel for the weights, if one can read all of them in their layouts. */
static const tensor_gemm *matmul_gemm_for(const tensor_view *const *w, int n_w)
{
    const uint32_t type = w[0]->type;
    const tensor_gemm *g = type < TENSOR_MAX_TYPE ? tensor_kernels_get()->gemm[type] : NULL;
    if (!g || w[0]->ne[0] > g->max_k) return NULL;
    for (int i = 0; i < n_w; i++)
        if (w[i]->layout == TENSOR_LAYOUT_Q4_0_X16 && !g->run_x16) return NULL;
    return g;
}

void tensor_matmul_multi(tensor_pool *p, const tensor_view *const *w, int n_w, const float *x,
                         int64_t n_rows, float *const *y)
{
    if (n_rows <= 0 || n_w <= 0) return;
    if (!matmul_can_share(w, n_w)) {
        for (int i = 0; i < n_w; i++) tensor_matmul(p, w[i], x, n_rows, y[i]);
        return;
    }
    matmul_job j = {.n_w = n_w, .x = x, .n_rows = n_rows, .k = w[0]->ne[0]};
    const uint32_t type = w[0]->type;
    j.g = matmul_gemm_for(w, n_w);
    j.item = j.g ? j.g->tile : 1;
    double work = 0;
    for (int i = 0; i < n_w; i++) {
        if (w[i]->ne[1] > 0) tensor_pool_count_matmul(p, w[i], n_rows);
        j.w[i] = w[i];
        j.y[i] = y[i];
        j.start[i + 1] = j.start[i] + (w[i]->ne[1] + j.item - 1) / j.item;
        work += (double)j.k * (double)w[i]->ne[1] * (double)n_rows;
    }
    void *owned = NULL;
    bool ready = j.g && matmul_prepare_gemm(p, &j, &owned);
    if (!ready && j.g) { /* no memory for the packed layout: try the dot path */
        j.g = NULL;
        j.item = 1;
        for (int i = 0; i < n_w; i++) j.start[i + 1] = j.start[i] + w[i]->ne[1];
    }
    if (!ready) {
        j.dot = tensor_dot_kernel(type);
        ready = matmul_prepare_dot(p, &j, &owned);
    }
    if (!ready) {
        for (int i = 0; i < n_w; i++) tensor_matmul_chunked(w[i], x, n_rows, y[i]);
        return;
    }
    tensor_pool_for(work < MATMUL_MIN_PARALLEL_WORK ? NULL : p, j.start[n_w], matmul_items, &j);
    free(owned);
}

void tensor_matmul(tensor_pool *p, const tensor_view *w, const float *x, int64_t n_rows, float *y)
{
    tensor_matmul_multi(p, &w, 1, x, n_rows, &y);
}

void tensor_matmul_chunked(const tensor_view *w, const float *x, int64_t n_rows, float *y)
{
    const int64_t k = w->ne[0], n_out = w->ne[1];
    const tensor_dot_fn dot = tensor_dot_kernel(w->type);
    _Alignas(64) uint8_t tmp[TENSOR_X16_MAX_BLOCKS * sizeof(block_q4_0)];
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
                yr[o] += dot(matmul_file_row(w, o, tmp) + woff, buf, len);
        }
    }
}
