/*
 * lora_write.c - writing a LoRA adapter GGUF the way llama.cpp's convert_lora_to_gguf.py does:
 * the same keys in the same order (no hparams, no tokenizer, no general.file_type) and, per
 * adapted weight, `<base>.lora_a` then `<base>.lora_b` with llama.cpp's shapes. Called by
 * mica finetune (train/) and tests; reading is lora.c.
 */
#include "model/lora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mica_status write_meta(gguf_writer *gw, const char *arch, const char *name, float alpha)
{
    mica_status st = gguf_writer_set_str(gw, "general.architecture", arch);
    if (!st) st = gguf_writer_set_str(gw, "general.type", "adapter");
    if (!st) st = gguf_writer_set_str(gw, "adapter.type", "lora");
    if (!st) st = gguf_writer_set_str(gw, "general.name", name);
    if (!st) st = gguf_writer_set_f32(gw, "adapter.lora.alpha", alpha);
    if (!st) st = gguf_writer_set_u32(gw, "general.quantization_version", 2);
    return st;
}

/* Q8_0 needs rows of whole blocks; like the converters, other rows fall back to F16. */
static uint32_t half_type(uint32_t type, int64_t ne0)
{
    uint32_t bs = 1;
    gguf_ttype_layout(type, &bs, NULL);
    return ne0 % bs ? GGUF_T_F16 : type;
}

/* Adds `<base><suffix>` converted to type; *buf receives converted bytes to free later. */
static mica_status add_half(gguf_writer *gw, const char *base, const char *suffix,
                            const int64_t *ne, const float *data, uint32_t type, void **buf,
                            mica_err *err)
{
    char name[GGUF_MAX_NAME];
    if ((size_t)snprintf(name, sizeof name, "%s%s", base, suffix) >= sizeof name)
        return core_fail(err, MICA_EINVAL, "tensor name '%s%s' is too long", base, suffix);
    const uint32_t n_dims = ne[2] > 1 ? 3 : 2;
    type = half_type(type, ne[0]);
    const void *bytes = data;
    if (type != GGUF_T_F32) {
        const int64_t n_rows = ne[1] * ne[2];
        const size_t row = tensor_row_size(type, ne[0]);
        *buf = malloc(row * (size_t)n_rows);
        if (!*buf) return core_fail(err, MICA_ENOMEM, "tensor '%s': out of memory", name);
        for (int64_t r = 0; r < n_rows; r++)
            tensor_from_f32(type, data + r * ne[0], (uint8_t *)*buf + (size_t)r * row, ne[0]);
        bytes = *buf;
    }
    return gguf_writer_add_tensor(gw, name, type, n_dims, ne, bytes, err);
}

mica_status lora_write(const char *path, const char *arch, const char *name, float alpha,
                       uint32_t type, const lora_write_weight *w, size_t n, mica_err *err)
{
    if (type != GGUF_T_F32 && type != GGUF_T_F16 && type != GGUF_T_BF16 && type != GGUF_T_Q8_0)
        return core_fail(err, MICA_EINVAL,
                         "%s: adapter tensors cannot be %s (F32, F16, BF16 or "
                         "Q8_0)",
                         path, gguf_ttype_name(type));
    mica_status st = MICA_OK;
    void **bufs = core_calloc(2 * n + 1, sizeof *bufs);
    gguf_writer *gw = gguf_writer_new();
    if (!bufs || !gw || write_meta(gw, arch, name, alpha)) {
        st = core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < n && !st; i++) {
        st = add_half(gw, w[i].base_name, ".lora_a", w[i].a_ne, w[i].a, type, &bufs[2 * i], err);
        if (!st)
            st = add_half(gw, w[i].base_name, ".lora_b", w[i].b_ne, w[i].b, type, &bufs[2 * i + 1],
                          err);
    }
    if (!st) st = gguf_writer_write(gw, path, err);
done:
    for (size_t i = 0; bufs && i < 2 * n; i++) free(bufs[i]);
    free(bufs);
    gguf_writer_free(gw);
    return st;
}
