/*
 * train_ckpt.c - checkpoints: the trainable tensors of a train_model with their AdamW moments
 * and the number of updates done, in a GGUF file (tensors NAME, NAME.adam_m, NAME.adam_v in
 * F32; key mica.checkpoint.step), written to PATH.tmp and renamed, so an interrupted run always
 * leaves the last complete checkpoint. Restoring checks that every trainable tensor is there
 * with its shape: a checkpoint of another model or adapter configuration is refused.
 */
#include "train/train_int.h"

#include <stdio.h>
#include <string.h>

#define CKPT_STEP_KEY  "mica.checkpoint.step"
#define CKPT_COUNT_KEY "mica.checkpoint.tensors"

mica_status train_opt_alloc(train_model *tm, mica_err *err)
{
    for (int i = 0; i < tm->n_tensors; i++) {
        train_tensor *t = tm->tensors[i];
        if (!t->g || t->adam_m) continue;
        t->adam_m = core_calloc((size_t)t->n, sizeof(float));
        t->adam_v = core_calloc((size_t)t->n, sizeof(float));
        if (!t->adam_m || !t->adam_v)
            return core_fail(err, MICA_ENOMEM, "out of memory for the optimizer state of '%s'",
                             t->name);
    }
    return MICA_OK;
}

static mica_status add_f32(gguf_writer *g, const train_tensor *t, const char *suffix,
                           const float *data, mica_err *err)
{
    char name[GGUF_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s%s", t->name, suffix);
    if (strlen(name) >= GGUF_MAX_NAME)
        return core_fail(err, MICA_EINVAL, "tensor name '%s' is too long for a checkpoint", name);
    return gguf_writer_add_tensor(g, name, GGUF_T_F32, (uint32_t)t->n_dims, t->ne, data, err);
}

mica_status train_checkpoint_write(train_model *tm, int64_t step, const char *path, mica_err *err)
{
    mica_status st = train_opt_alloc(tm, err);
    if (st) return st;
    gguf_writer *g = gguf_writer_new();
    if (!g) return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    int64_t n = 0;
    for (int i = 0; i < tm->n_tensors; i++) n += tm->tensors[i]->g != NULL;
    st = gguf_writer_set_str(g, "general.type", "mica-checkpoint");
    if (!st) st = gguf_writer_set_u64(g, CKPT_STEP_KEY, (uint64_t)step);
    if (!st) st = gguf_writer_set_u64(g, CKPT_COUNT_KEY, (uint64_t)n);
    if (st) st = core_fail(err, st, "%s: out of memory", path);
    for (int i = 0; i < tm->n_tensors && !st; i++) {
        const train_tensor *t = tm->tensors[i];
        if (!t->g) continue;
        st = add_f32(g, t, "", t->w, err);
        if (!st) st = add_f32(g, t, ".adam_m", t->adam_m, err);
        if (!st) st = add_f32(g, t, ".adam_v", t->adam_v, err);
    }
    if (!st) st = gguf_writer_write(g, path, err);
    gguf_writer_free(g);
    return st;
}

/* Copies the checkpoint's tensor NAME+suffix into dst after checking its type and shape. */
static mica_status read_f32(const gguf_file *f, const train_tensor *t, const char *suffix,
                            float *dst, mica_err *err)
{
    char name[GGUF_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s%s", t->name, suffix);
    const gguf_tensor *c = gguf_find_tensor(f, name);
    if (!c)
        return core_fail(err, MICA_EFORMAT,
                         "%s: no tensor '%s': the checkpoint is of another model or adapter "
                         "configuration",
                         f->path, name);
    bool same = c->type == GGUF_T_F32 && (int)c->n_dims == t->n_dims;
    for (int d = 0; same && d < t->n_dims; d++) same = c->ne[d] == t->ne[d];
    if (!same)
        return core_fail(err, MICA_EFORMAT,
                         "%s: tensor '%s' has another shape or type than the "
                         "model's",
                         f->path, name);
    memcpy(dst, c->data, (size_t)t->n * sizeof(float));
    return MICA_OK;
}

mica_status train_checkpoint_read(train_model *tm, const char *path, int64_t *step, mica_err *err)
{
    gguf_file *f = NULL;
    mica_status st = gguf_open(&f, path, err);
    if (st) return st;
    int64_t s = 0, n = 0, n_trainable = 0;
    st = gguf_get_int(f, CKPT_STEP_KEY, &s, err);
    if (!st) st = gguf_get_int(f, CKPT_COUNT_KEY, &n, err);
    for (int i = 0; i < tm->n_tensors; i++) n_trainable += tm->tensors[i]->g != NULL;
    if (!st && (s < 0 || n != n_trainable))
        st = core_fail(err, MICA_EFORMAT,
                       "%s: the checkpoint holds %lld trainable tensors, the run has %lld", path,
                       (long long)n, (long long)n_trainable);
    if (!st) st = train_opt_alloc(tm, err);
    for (int i = 0; i < tm->n_tensors && !st; i++) {
        train_tensor *t = tm->tensors[i];
        if (!t->g) continue;
        st = read_f32(f, t, "", t->w, err);
        if (!st) st = read_f32(f, t, ".adam_m", t->adam_m, err);
        if (!st) st = read_f32(f, t, ".adam_v", t->adam_v, err);
    }
    gguf_close(f);
    if (!st) *step = s;
    return st;
}
