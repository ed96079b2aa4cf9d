/*
 * lora.c - loading a LoRA adapter GGUF and binding it to a base model, with llama.cpp's
 * rules (llama_adapter_lora_init): the adapter's metadata, every tensor a `.lora_a` /
 * `.lora_b` half of a base tensor that exists, shapes that fit the base weight. mica also
 * refuses a rank larger than the weight and weights it does not adapt (see docs/lora.md).
 * The tensors stay in the adapter's mapping. Applying adapters is lora_apply.c; merging and
 * writing are lora_merge.c and lora_write.c. Called by the engine (mica_lora_load), merge.
 */
#include "model/lora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lora_adapter {
    const model *base;
    gguf_file *gguf;
    float alpha;
    lora_weight *w; /* (n_layer * LORA_N_LAYER_TARGETS + 2); absent when a.data is NULL */
};

static const char *const target_suffix[LORA_N_TARGETS] = {
    [LORA_ATTN_Q] = "attn_q.weight",
    [LORA_ATTN_K] = "attn_k.weight",
    [LORA_ATTN_V] = "attn_v.weight",
    [LORA_ATTN_OUT] = "attn_output.weight",
    [LORA_FFN_GATE] = "ffn_gate.weight",
    [LORA_FFN_UP] = "ffn_up.weight",
    [LORA_FFN_DOWN] = "ffn_down.weight",
    [LORA_FFN_GATE_INP] = "ffn_gate_inp.weight",
    [LORA_FFN_GATE_EXPS] = "ffn_gate_exps.weight",
    [LORA_FFN_UP_EXPS] = "ffn_up_exps.weight",
    [LORA_FFN_DOWN_EXPS] = "ffn_down_exps.weight",
    [LORA_FFN_GATE_INP_SHEXP] = "ffn_gate_inp_shexp.weight",
    [LORA_FFN_GATE_SHEXP] = "ffn_gate_shexp.weight",
    [LORA_FFN_UP_SHEXP] = "ffn_up_shexp.weight",
    [LORA_FFN_DOWN_SHEXP] = "ffn_down_shexp.weight",
    [LORA_OUTPUT] = "output.weight",
    [LORA_TOKEN_EMBD] = "token_embd.weight",
};

const char *lora_target_suffix(lora_target t)
{
    return target_suffix[t];
}

static size_t slot_index(const model *m, int il, lora_target t)
{
    if (t >= LORA_N_LAYER_TARGETS)
        return (size_t)m->hp.n_layer * LORA_N_LAYER_TARGETS + (size_t)(t - LORA_N_LAYER_TARGETS);
    return (size_t)il * LORA_N_LAYER_TARGETS + (size_t)t;
}

const lora_weight *lora_find(const lora_adapter *a, int il, lora_target t)
{
    const lora_weight *w = &a->w[slot_index(a->base, il, t)];
    return w->a.data ? w : NULL;
}

const model *lora_base(const lora_adapter *a)
{
    return a->base;
}

const char *lora_path(const lora_adapter *a)
{
    return a->gguf->path;
}

float lora_alpha(const lora_adapter *a)
{
    return a->alpha;
}

float lora_weight_scale(const lora_adapter *a, const lora_weight *w, float scale)
{
    /* Left to right in float, as llama.cpp: adapter_scale * alpha / rank. */
    return a->alpha != 0.0f ? scale * a->alpha / (float)w->rank : scale;
}

/* ---- metadata ------------------------------------------------------------------------ */

static mica_status expect_str(const gguf_file *f, const char *key, const char *want, mica_err *err)
{
    gguf_str v = {"", 0};
    const gguf_kv *kv = gguf_find(f, key);
    if (kv && kv->type == GGUF_VT_STRING) gguf_get_str(f, key, &v, NULL);
    if (kv && kv->type == GGUF_VT_STRING && gguf_str_eq(v, want)) return MICA_OK;
    if (!kv)
        return core_fail(err, MICA_EFORMAT, "%s: not a LoRA adapter: key '%s' is missing", f->path,
                         key);
    return core_fail(err, MICA_EFORMAT, "%s: not a LoRA adapter: key '%s' is '%.*s', expected '%s'",
                     f->path, key, (int)(v.len > 64 ? 64 : v.len), v.ptr, want);
}

static mica_status read_meta(lora_adapter *a, mica_err *err)
{
    const gguf_file *f = a->gguf;
    mica_status st = expect_str(f, "general.type", "adapter", err);
    if (!st) st = expect_str(f, "adapter.type", "lora", err);
    if (st) return st;
    gguf_str arch;
    if ((st = gguf_get_str(f, "general.architecture", &arch, err))) return st;
    if (!gguf_str_eq(arch, a->base->arch->name))
        return core_fail(err, MICA_EINVAL,
                         "%s: the adapter is for architecture '%.*s', the model is '%s'", f->path,
                         (int)(arch.len > 64 ? 64 : arch.len), arch.ptr, a->base->arch->name);
    if (gguf_find(f, "adapter.alora.invocation_tokens"))
        return core_fail(err, MICA_EUNSUPPORTED,
                         "%s: activated LoRA (adapter.alora.invocation_tokens) is not supported",
                         f->path);
    const gguf_kv *alpha = gguf_find(f, "adapter.lora.alpha");
    a->alpha = 0.0f; /* llama.cpp: missing means 0, i.e. the scale is used as is */
    if (!alpha) return MICA_OK;
    /* llama.cpp reads it with gguf_get_val_f32, which aborts on any other type. */
    if (alpha->type != GGUF_VT_F32)
        return core_fail(err, MICA_EFORMAT, "%s: key 'adapter.lora.alpha' is %s, expected f32",
                         f->path, gguf_vtype_name(alpha->type));
    memcpy(&a->alpha, alpha->val, sizeof a->alpha);
    return MICA_OK;
}

/* ---- tensors ------------------------------------------------------------------------- */

/* The target of a base tensor name, or -1. *il receives the layer of a per-layer target. */
static int parse_target(const model *m, const char *name, int *il)
{
    *il = 0;
    for (int t = LORA_N_LAYER_TARGETS; t < LORA_N_TARGETS; t++)
        if (!strcmp(name, target_suffix[t])) return t;
    int n = 0;
    if (sscanf(name, "blk.%d.%n", il, &n) != 1 || n == 0 || *il < 0 || *il >= m->hp.n_layer)
        return -1;
    for (int t = 0; t < LORA_N_LAYER_TARGETS; t++)
        if (!strcmp(name + n, target_suffix[t])) return t;
    return -1;
}

const lora_weight *lora_find_name(const lora_adapter *a, const char *base_name, lora_target *t)
{
    int il;
    const int target = parse_target(a->base, base_name, &il);
    if (target < 0) return NULL;
    *t = (lora_target)target;
    return lora_find(a, il, *t);
}

static bool ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Records tensor t as the A or B half of its base weight. */
static mica_status bind_half(lora_adapter *a, const gguf_tensor *t, mica_err *err)
{
    const char *path = a->gguf->path;
    const bool is_a = ends_with(t->name, ".lora_a");
    if (!is_a && !ends_with(t->name, ".lora_b")) {
        if (ends_with(t->name, "_norm.weight")) return MICA_OK; /* mergekit's; llama.cpp skips */
        return core_fail(err, MICA_EFORMAT,
                         "%s: tensor '%s': unexpected name (expected '<base>.lora_a' or "
                         "'<base>.lora_b')",
                         path, t->name);
    }
    char base[GGUF_MAX_NAME];
    snprintf(base, sizeof base, "%.*s", (int)(strlen(t->name) - 7), t->name);
    int il;
    const int target = parse_target(a->base, base, &il);
    if (target < 0 || !gguf_find_tensor(a->base->gguf, base)) {
        if (gguf_find_tensor(a->base->gguf, base))
            return core_fail(err, MICA_EUNSUPPORTED, "%s: tensor '%s': mica does not adapt '%s'",
                             path, t->name, base);
        return core_fail(err, MICA_EINVAL, "%s: tensor '%s': '%s' does not exist in the model %s",
                         path, t->name, base, a->base->gguf->path);
    }
    lora_weight *w = &a->w[slot_index(a->base, il, (lora_target)target)];
    tensor_view *v = is_a ? &w->a : &w->b;
    if (v->data)
        return core_fail(err, MICA_EFORMAT, "%s: tensor '%s' appears twice", path, t->name);
    return tensor_view_from_gguf(v, t, path, err);
}

static void shape_str(const int64_t *ne, char *buf, size_t cap)
{
    if (ne[2] > 1)
        snprintf(buf, cap, "[%lld, %lld, %lld]", (long long)ne[0], (long long)ne[1],
                 (long long)ne[2]);
    else
        snprintf(buf, cap, "[%lld, %lld]", (long long)ne[0], (long long)ne[1]);
}

static mica_status shape_error(const lora_adapter *a, const lora_weight *w, const gguf_tensor *bt,
                               mica_err *err)
{
    char sa[64], sb[64], sw[64];
    shape_str(w->a.ne, sa, sizeof sa);
    shape_str(w->b.ne, sb, sizeof sb);
    shape_str(bt->ne, sw, sizeof sw);
    return core_fail(err, MICA_EINVAL,
                     "%s: tensors '%s' %s and '%s' %s do not fit the model's '%s' %s",
                     a->gguf->path, w->a.name, sa, w->b.name, sb, bt->name, sw);
}

/* llama.cpp's shape rules, plus the rank bound: the weight's dimensions must match the two
 * halves, and the rank (b.ne[0]) is shared by both. */
static mica_status check_weight(const lora_adapter *a, lora_target t, lora_weight *w,
                                const gguf_tensor *bt, mica_err *err)
{
    const int64_t *an = w->a.ne, *bn = w->b.ne, *wn = bt->ne;
    bool ok = an[3] == 1 && bn[3] == 1;
    int64_t n_in = wn[0], n_out = wn[1];
    if (t == LORA_TOKEN_EMBD)
        ok = ok && an[0] == bn[0] && an[1] == wn[1] && bn[1] == wn[0] && an[2] == 1 && bn[2] == 1;
    else
        ok = ok && an[0] == wn[0] && bn[1] == wn[1] && an[1] == bn[0] && an[2] == wn[2] &&
             bn[2] == wn[2];
    if (!ok) return shape_error(a, w, bt, err);
    w->rank = (int32_t)bn[0];
    if (w->rank > n_in || w->rank > n_out)
        return core_fail(err, MICA_EINVAL,
                         "%s: tensor '%s': rank %d is larger than the model's '%s' (%lld x %lld)",
                         a->gguf->path, w->b.name, w->rank, bt->name, (long long)n_in,
                         (long long)n_out);
    return MICA_OK;
}

/* Every bound weight has both halves, the right shapes; at least one is there. */
static mica_status check_weights(lora_adapter *a, mica_err *err)
{
    const model *m = a->base;
    int n_found = 0;
    for (int il = 0; il < m->hp.n_layer; il++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            if (t >= LORA_N_LAYER_TARGETS && il > 0) continue;
            lora_weight *w = &a->w[slot_index(m, il, (lora_target)t)];
            if (!w->a.data && !w->b.data) continue;
            char base[GGUF_MAX_NAME];
            if (t >= LORA_N_LAYER_TARGETS)
                snprintf(base, sizeof base, "%s", target_suffix[t]);
            else
                snprintf(base, sizeof base, "blk.%d.%s", il, target_suffix[t]);
            if (!w->a.data || !w->b.data)
                return core_fail(err, MICA_EFORMAT,
                                 "%s: tensor '%s.%s' is missing (its pair is "
                                 "there)",
                                 a->gguf->path, base, w->a.data ? "lora_b" : "lora_a");
            mica_status st =
                check_weight(a, (lora_target)t, w, gguf_find_tensor(m->gguf, base), err);
            if (st) return st;
            n_found++;
        }
    if (!n_found)
        return core_fail(err, MICA_EFORMAT, "%s: the adapter has no LoRA tensors", a->gguf->path);
    return MICA_OK;
}

mica_status lora_load(lora_adapter **out, const model *base, const char *path, mica_err *err)
{
    *out = NULL;
    lora_adapter *a = core_calloc(1, sizeof *a);
    const size_t n_slots = slot_index(base, 0, LORA_N_TARGETS);
    if (a) a->w = core_calloc(n_slots, sizeof *a->w);
    if (!a || !a->w) {
        lora_free(a);
        return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    }
    a->base = base;
    mica_status st = gguf_open(&a->gguf, path, err);
    if (!st) st = read_meta(a, err);
    for (uint64_t i = 0; !st && i < a->gguf->n_tensors; i++)
        st = bind_half(a, &a->gguf->tensors[i], err);
    if (!st) st = check_weights(a, err);
    if (st) {
        lora_free(a);
        return st;
    }
    *out = a;
    return MICA_OK;
}

void lora_free(lora_adapter *a)
{
    if (!a) return;
    gguf_close(a->gguf);
    free(a->w);
    free(a);
}
