/*
 * context_lora.c - the public LoRA API: loading an adapter against a model and choosing the
 * adapters each sequence of a context applies. The format and the arithmetic are model/'s
 * (lora.c, lora_apply.c); this file only wraps them in the public handles.
 */
#include "engine.h"

#include <stdlib.h>

mica_status mica_lora_load(mica_lora **out, mica_model *m, const char *path, mica_err *err)
{
    *out = NULL;
    mica_lora *l = core_calloc(1, sizeof *l);
    if (!l) return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    mica_status st = lora_load(&l->a, m->m, path, err);
    if (st) {
        free(l);
        return st;
    }
    *out = l;
    return MICA_OK;
}

void mica_lora_free(mica_lora *l)
{
    if (!l) return;
    lora_free(l->a);
    free(l);
}

float mica_lora_alpha(const mica_lora *l)
{
    return lora_alpha(l->a);
}

mica_status mica_context_set_loras(mica_context *c, int32_t seq, mica_lora *const *loras,
                                   const float *scales, int32_t n, mica_err *err)
{
    if (n < 0 || n > LORA_MAX_PER_SEQ || (n && !loras))
        return core_fail(err, MICA_EINVAL, "%d adapters (0 to %d per sequence)", n,
                         LORA_MAX_PER_SEQ);
    const lora_adapter *ad[LORA_MAX_PER_SEQ];
    for (int32_t i = 0; i < n; i++) {
        if (!loras[i]) return core_fail(err, MICA_EINVAL, "adapter %d is NULL", i);
        ad[i] = loras[i]->a;
    }
    return lora_work_set(c->lora, seq, ad, scales, n, err);
}
