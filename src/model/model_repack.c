/*
 * model_repack.c - after loading, the weight matrices whose kernels read an interleaved
 * layout faster (tensor_view_repack) are copied into it once, into one buffer the model owns,
 * and their pages of the file mapping are dropped, so resident memory does not double.
 * Only inference repacks (engine/'s mica_model_load): training, LoRA merging and
 * quantization read the file's rows. Nothing is repacked when the copy would not fit in the
 * memory available (the mapping can be paged, the copy cannot) or when MICA_NO_REPACK is set
 * to anything but 0 (to compare the layouts).
 *
 * Does not own: the layout and the copy (tensor/repack.c). Called by: engine/, quant/ (the
 * matrix list), tests.
 */
#include "model/model.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

const size_t model_layer_matrices[] = {
    offsetof(model_layer, wq),           offsetof(model_layer, wk),
    offsetof(model_layer, wv),           offsetof(model_layer, wo),
    offsetof(model_layer, ffn_gate),     offsetof(model_layer, ffn_up),
    offsetof(model_layer, ffn_down),     offsetof(model_layer, gate_inp),
    offsetof(model_layer, gate_exps),    offsetof(model_layer, up_exps),
    offsetof(model_layer, gate_up_exps), offsetof(model_layer, down_exps),
    offsetof(model_layer, gate_shexp),   offsetof(model_layer, up_shexp),
    offsetof(model_layer, down_shexp),
};
const size_t model_n_layer_matrices = sizeof model_layer_matrices / sizeof model_layer_matrices[0];

#define REPACK_ALIGN 64
/* Memory left free after the copy (KV caches, scratch, other processes). */
#define REPACK_MARGIN ((uint64_t)256 << 20)

/* The views to repack, in a fixed order; fills v (NULL: count only) and returns how many. */
static size_t repack_views(model *m, tensor_view **v)
{
    size_t n = 0;
    for (int32_t il = 0; il < m->hp.n_layer; il++) {
        model_layer *l = &m->layers[il];
        for (size_t k = 0; k < model_n_layer_matrices; k++) {
            tensor_view *t = (tensor_view *)((char *)l + model_layer_matrices[k]);
            /* The merged gate/up stack is split at n_ff_exp rows: a whole number of tiles. */
            if (t == &l->gate_up_exps && m->hp.n_ff_exp % TENSOR_X16_ROWS != 0) continue;
            if (!tensor_view_repackable(t)) continue;
            if (v) v[n] = t;
            n++;
        }
    }
    if (m->output.data != m->tok_embd.data && tensor_view_repackable(&m->output)) {
        if (v) v[n] = &m->output;
        n++;
    }
    return n;
}

static size_t repack_room(const tensor_view *v)
{
    return (tensor_view_bytes(v) + REPACK_ALIGN - 1) / REPACK_ALIGN * REPACK_ALIGN;
}

/* Whether the copy fits in memory: unlike the file's pages, the copy cannot be evicted, so
 * a model larger than the free memory keeps its mapped layout (and still runs). */
static bool repack_fits(size_t total)
{
    const uint64_t avail = core_mem_available();
    return avail == 0 || (uint64_t)total + REPACK_MARGIN <= avail;
}

mica_status model_repack(model *m, mica_err *err)
{
    const char *off = getenv("MICA_NO_REPACK"); /* benchmarks against the file's layout */
    if (off && *off && strcmp(off, "0")) return MICA_OK;
    assert(!m->repacked);
    const size_t n = repack_views(m, NULL);
    if (n == 0) return MICA_OK;
    tensor_view **v = malloc(n * sizeof *v);
    if (!v) return core_fail(err, MICA_ENOMEM, "%s: out of memory", m->gguf->path);
    repack_views(m, v);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += repack_room(v[i]);
    if (!repack_fits(total)) {
        free(v);
        return MICA_OK;
    }
    uint8_t *buf = aligned_alloc(REPACK_ALIGN, total);
    if (!buf) {
        free(v);
        return core_fail(err, MICA_ENOMEM, "%s: out of memory for %zu bytes of repacked weights",
                         m->gguf->path, total);
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const void *file = v[i]->data;
        const size_t bytes = tensor_view_bytes(v[i]);
        tensor_view_repack(v[i], buf + at);
        gguf_drop_pages(m->gguf, file, bytes);
        at += repack_room(v[i]);
    }
    free(v);
    m->repacked = buf;
    return MICA_OK;
}
