/*
 * cli_dims.c - the --dims KEY=N,... list of `mica synth` and `mica train`: a model's shape
 * into model_synth_params (which also carries the architecture's defaults and checks).
 */
#include "cli.h"
#include "model/model_synth.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct dims_key {
    const char *name;
    size_t offset; /* of an int32_t in model_synth_params */
} dims_key;

static const dims_key dims_keys[] = {
    {"n_vocab", offsetof(model_synth_params, n_vocab)},
    {"n_ctx", offsetof(model_synth_params, n_ctx)},
    {"n_embd", offsetof(model_synth_params, n_embd)},
    {"n_layer", offsetof(model_synth_params, n_layer)},
    {"n_head", offsetof(model_synth_params, n_head)},
    {"n_head_kv", offsetof(model_synth_params, n_head_kv)},
    {"n_ff", offsetof(model_synth_params, n_ff)},
    {"n_expert", offsetof(model_synth_params, n_expert)},
    {"n_expert_used", offsetof(model_synth_params, n_expert_used)},
};

static const dims_key *dims_key_find(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof dims_keys / sizeof dims_keys[0]; i++)
        if (strlen(dims_keys[i].name) == len && !strncmp(s, dims_keys[i].name, len))
            return &dims_keys[i];
    return NULL;
}

/* One "KEY=N" item of len bytes at s; *kv_set says whether it was n_head_kv. */
static int dims_item(const char *cmd, const char *s, size_t len, model_synth_params *p,
                     bool *kv_set)
{
    const char *eq = memchr(s, '=', len);
    const dims_key *k = eq ? dims_key_find(s, (size_t)(eq - s)) : NULL;
    if (!eq || !k)
        return cli_fail("%s: --dims: '%.*s' is not KEY=N with a known KEY (keys: n_vocab, "
                        "n_ctx, n_embd, n_layer, n_head, n_head_kv, n_ff, n_expert, "
                        "n_expert_used)",
                        cmd, (int)len, s);
    char num[32];
    const size_t n = len - (size_t)(eq + 1 - s);
    char *end = NULL;
    long v = -1;
    if (n > 0 && n < sizeof num) {
        memcpy(num, eq + 1, n);
        num[n] = '\0';
        errno = 0;
        v = strtol(num, &end, 10);
        if (errno || *end) v = -1;
    }
    if (v < 0 || v > INT32_MAX)
        return cli_fail("%s: --dims: '%.*s': the value is not a non-negative integer", cmd,
                        (int)len, s);
    *(int32_t *)((char *)p + k->offset) = (int32_t)v;
    *kv_set |= k->offset == offsetof(model_synth_params, n_head_kv);
    return 0;
}

int cli_dims(const char *cmd, const char *list, model_synth_params *p, bool from_preset)
{
    bool kv_set = from_preset;
    if (!*list) return cli_fail("%s: --dims: empty list", cmd);
    for (const char *s = list; *s;) {
        const size_t len = strcspn(s, ",");
        if (dims_item(cmd, s, len, p, &kv_set)) return 1;
        s += len + (s[len] == ',');
    }
    if (!kv_set) p->n_head_kv = p->n_head;
    return 0;
}
