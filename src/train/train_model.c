/*
 * train_model.c - the parameters of a model in training: F32 tensors with gradients, made
 * fresh (train_model_init) or dequantized from a loaded model (train_model_from_model), and
 * written back as an F32 GGUF file. Owns the tensor list that the optimizer walks.
 * Does not own: the passes (train_forward.c, train_backward.c), LoRA (train_lora.c).
 */
#include "train/train_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRAIN_INIT_STD 0.02f
#define TRAIN_PI       3.14159265358979323846

train_tensor *train_tensor_add(train_model *tm, const char *name, int n_dims, int64_t ne0,
                               int64_t ne1, int64_t ne2)
{
    train_tensor **grown = realloc(tm->tensors, (size_t)(tm->n_tensors + 1) * sizeof *grown);
    if (!grown) return NULL;
    tm->tensors = grown;
    train_tensor *t = core_calloc(1, sizeof *t);
    if (!t) return NULL;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->n = ne0 * ne1 * ne2;
    t->decay = n_dims >= 2;
    t->w = core_calloc((size_t)t->n, sizeof(float));
    t->g = core_calloc((size_t)t->n, sizeof(float));
    tm->tensors[tm->n_tensors++] = t;
    return t->w && t->g ? t : NULL;
}

static void tensor_free(train_tensor *t)
{
    if (!t) return;
    free(t->w);
    free(t->g);
    free(t->adam_m);
    free(t->adam_v);
    free(t);
}

void train_model_free(train_model *tm)
{
    if (!tm) return;
    for (int i = 0; i < tm->n_tensors; i++) tensor_free(tm->tensors[i]);
    free(tm->tensors);
    free(tm->layers);
    free(tm);
}

void train_model_zero_grad(train_model *tm)
{
    for (int i = 0; i < tm->n_tensors; i++)
        if (tm->tensors[i]->g) memset(tm->tensors[i]->g, 0, (size_t)tm->tensors[i]->n * 4);
}

/* ---- structure ----------------------------------------------------------------------- */

typedef struct layout {
    train_model *tm;
    bool ok;
} layout;

static train_tensor *lay_add(layout *L, int il, const char *suffix, int n_dims, int64_t ne0,
                             int64_t ne1, int64_t ne2)
{
    char name[GGUF_MAX_NAME];
    if (il < 0)
        snprintf(name, sizeof name, "%s", suffix);
    else
        snprintf(name, sizeof name, "blk.%d.%s", il, suffix);
    train_tensor *t = L->ok ? train_tensor_add(L->tm, name, n_dims, ne0, ne1, ne2) : NULL;
    L->ok = t != NULL;
    return t;
}

static void lay_layer(layout *L, int il, bool qkv_bias)
{
    const model_hparams *hp = &L->tm->hp;
    const int64_t e = hp->n_embd, nq = (int64_t)hp->n_head * hp->head_dim;
    const int64_t nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    train_layer *l = &L->tm->layers[il];
    l->attn_norm = lay_add(L, il, "attn_norm.weight", 1, e, 1, 1);
    l->wq = lay_add(L, il, "attn_q.weight", 2, e, nq, 1);
    l->wk = lay_add(L, il, "attn_k.weight", 2, e, nkv, 1);
    l->wv = lay_add(L, il, "attn_v.weight", 2, e, nkv, 1);
    if (qkv_bias) {
        l->bq = lay_add(L, il, "attn_q.bias", 1, nq, 1, 1);
        l->bk = lay_add(L, il, "attn_k.bias", 1, nkv, 1, 1);
        l->bv = lay_add(L, il, "attn_v.bias", 1, nkv, 1, 1);
    }
    l->wo = lay_add(L, il, "attn_output.weight", 2, nq, e, 1);
    l->ffn_norm = lay_add(L, il, "ffn_norm.weight", 1, e, 1, 1);
    if (hp->n_expert) {
        const int64_t ff = hp->n_ff_exp, nx = hp->n_expert;
        l->gate_inp = lay_add(L, il, "ffn_gate_inp.weight", 2, e, nx, 1);
        l->gate_exps = lay_add(L, il, "ffn_gate_exps.weight", 3, e, ff, nx);
        l->up_exps = lay_add(L, il, "ffn_up_exps.weight", 3, e, ff, nx);
        l->down_exps = lay_add(L, il, "ffn_down_exps.weight", 3, ff, e, nx);
    } else {
        l->ffn_gate = lay_add(L, il, "ffn_gate.weight", 2, e, hp->n_ff, 1);
        l->ffn_up = lay_add(L, il, "ffn_up.weight", 2, e, hp->n_ff, 1);
        l->ffn_down = lay_add(L, il, "ffn_down.weight", 2, hp->n_ff, e, 1);
    }
}

/* Allocates every tensor of the architecture (values zero). */
static mica_status train_model_alloc(train_model **out, const model_arch *arch,
                                     const model_hparams *hp, bool tied, bool qkv_bias,
                                     mica_err *err)
{
    train_model *tm = core_calloc(1, sizeof *tm);
    if (!tm) return core_fail(err, MICA_ENOMEM, "out of memory for the training model");
    tm->arch = arch;
    tm->hp = *hp;
    tm->layers = core_calloc((size_t)hp->n_layer, sizeof *tm->layers);
    layout L = {tm, tm->layers != NULL};
    tm->tok_embd = lay_add(&L, -1, "token_embd.weight", 2, hp->n_embd, hp->n_vocab, 1);
    tm->output_norm = lay_add(&L, -1, "output_norm.weight", 1, hp->n_embd, 1, 1);
    tm->output =
        tied ? tm->tok_embd : lay_add(&L, -1, "output.weight", 2, hp->n_embd, hp->n_vocab, 1);
    for (int il = 0; L.ok && il < hp->n_layer; il++) lay_layer(&L, il, qkv_bias);
    if (!L.ok) {
        train_model_free(tm);
        return core_fail(err, MICA_ENOMEM, "out of memory for the training model");
    }
    *out = tm;
    return MICA_OK;
}

/* ---- a fresh model ------------------------------------------------------------------- */

/* A standard normal value (Box-Muller on two uniforms). */
static float rng_normal(core_rng *r)
{
    const double u1 = 1.0 - core_rng_uniform(r), u2 = core_rng_uniform(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * TRAIN_PI * u2));
}

static bool is_suffix(const char *s, const char *suffix)
{
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static void init_tensor(train_tensor *t, core_rng *r, int n_layer)
{
    if (t->n_dims == 1) {
        const float v = is_suffix(t->name, "norm.weight") ? 1.0f : 0.0f;
        for (int64_t i = 0; i < t->n; i++) t->w[i] = v;
        return;
    }
    float std = TRAIN_INIT_STD;
    if (strstr(t->name, "attn_output") || strstr(t->name, "ffn_down"))
        std /= sqrtf(2.0f * (float)n_layer);
    for (int64_t i = 0; i < t->n; i++) t->w[i] = std * rng_normal(r);
}

static mica_status check_shape(const train_shape *s, const model_arch **arch, mica_err *err)
{
    *arch = s->arch ? model_arch_find(s->arch, strlen(s->arch)) : NULL;
    if (!*arch || (*arch)->qk_norm != MODEL_QK_NORM_NONE || (*arch)->granite)
        return core_fail(err, MICA_EINVAL, "architecture '%s': training supports llama, qwen2",
                         s->arch ? s->arch : "(none)");
    if (s->n_vocab < 1 || s->n_ctx < 1 || s->n_embd < 1 || s->n_layer < 1 || s->n_ff < 1)
        return core_fail(err, MICA_EINVAL,
                         "vocab, context, embedding, layers and FFN must be >= 1");
    if (s->n_head < 1 || s->n_head_kv < 1 || s->n_head % s->n_head_kv || s->n_embd % s->n_head ||
        (s->n_embd / s->n_head) % 2)
        return core_fail(err, MICA_EINVAL,
                         "heads %d / %d: n_head must be a multiple of n_head_kv and divide "
                         "n_embd %d into an even head size",
                         s->n_head, s->n_head_kv, s->n_embd);
    if (s->n_expert < 0 ||
        (s->n_expert && (s->n_expert_used < 1 || s->n_expert_used > s->n_expert)))
        return core_fail(err, MICA_EINVAL, "experts %d, used %d: need 1 <= used <= experts",
                         s->n_expert, s->n_expert_used);
    return MICA_OK;
}

mica_status train_model_init(train_model **out, const train_shape *s, uint64_t seed, mica_err *err)
{
    const model_arch *arch;
    *out = NULL;
    mica_status st = check_shape(s, &arch, err);
    if (st) return st;
    model_hparams hp = {0};
    hp.n_vocab = s->n_vocab;
    hp.n_ctx_train = s->n_ctx;
    hp.n_embd = s->n_embd;
    hp.n_layer = s->n_layer;
    hp.n_head = s->n_head;
    hp.n_head_kv = s->n_head_kv;
    hp.head_dim = hp.n_rot = s->n_embd / s->n_head;
    hp.n_ff = hp.n_ff_exp = s->n_ff;
    hp.n_expert = s->n_expert;
    hp.n_expert_used = s->n_expert ? s->n_expert_used : 0;
    hp.norm_eps = s->norm_eps;
    hp.rope_base = s->rope_base;
    hp.rope_on = true;
    hp.embd_scale = hp.residual_scale = hp.logit_scale = 1.0f;
    hp.attn_scale = 1.0f / sqrtf((float)hp.head_dim);
    if ((st = train_model_alloc(out, arch, &hp, s->tied, s->qkv_bias, err))) return st;
    core_rng r;
    core_rng_seed(&r, seed);
    for (int i = 0; i < (*out)->n_tensors; i++) init_tensor((*out)->tensors[i], &r, s->n_layer);
    return MICA_OK;
}

/* ---- from a loaded model ------------------------------------------------------------- */

static void copy_view(train_tensor *t, const tensor_view *v)
{
    const int64_t rows = v->ne[1] * v->ne[2];
    for (int64_t r = 0; r < rows; r++)
        tensor_to_f32(v->type, (const uint8_t *)v->data + (size_t)r * v->row_bytes,
                      t->w + r * v->ne[0], v->ne[0]);
}

static void copy_vec(train_tensor *t, const float *v)
{
    if (t) memcpy(t->w, v, (size_t)t->n * sizeof(float));
}

static mica_status check_supported(const model *m, mica_err *err)
{
    const char *what = NULL;
    if (m->arch->qk_norm != MODEL_QK_NORM_NONE) what = "q/k norms";
    if (m->arch->granite) what = "granite's scales";
    if (m->output_bias) what = "an output bias";
    for (int il = 0; !what && il < m->hp.n_layer; il++) {
        const model_layer *l = &m->layers[il];
        if (l->bo) what = "an attention output bias";
        if (l->gate_shexp.data) what = "shared experts";
        if (l->gate_up_exps.data) what = "merged gate/up experts";
        if ((l->bq != NULL) != (m->layers[0].bq != NULL) || !l->bq != !l->bk || !l->bq != !l->bv)
            what = "q/k/v biases on some layers only";
    }
    if (what)
        return core_fail(err, MICA_EUNSUPPORTED, "%s: training does not support %s (%s)",
                         m->gguf->path, what, m->arch->name);
    return MICA_OK;
}

static void copy_layer(train_layer *t, const model_layer *l)
{
    copy_vec(t->attn_norm, l->attn_norm);
    copy_view(t->wq, &l->wq);
    copy_view(t->wk, &l->wk);
    copy_view(t->wv, &l->wv);
    copy_vec(t->bq, l->bq);
    copy_vec(t->bk, l->bk);
    copy_vec(t->bv, l->bv);
    copy_view(t->wo, &l->wo);
    copy_vec(t->ffn_norm, l->ffn_norm);
    if (t->gate_inp) {
        copy_view(t->gate_inp, &l->gate_inp);
        copy_view(t->gate_exps, &l->gate_exps);
        copy_view(t->up_exps, &l->up_exps);
        copy_view(t->down_exps, &l->down_exps);
    } else {
        copy_view(t->ffn_gate, &l->ffn_gate);
        copy_view(t->ffn_up, &l->ffn_up);
        copy_view(t->ffn_down, &l->ffn_down);
    }
}

mica_status train_model_from_model(train_model **out, const model *m, mica_err *err)
{
    *out = NULL;
    mica_status st = check_supported(m, err);
    if (st) return st;
    const bool tied = m->output.data == m->tok_embd.data;
    st = train_model_alloc(out, m->arch, &m->hp, tied, m->layers[0].bq != NULL, err);
    if (st) return st;
    train_model *tm = *out;
    copy_view(tm->tok_embd, &m->tok_embd);
    copy_vec(tm->output_norm, m->output_norm);
    if (!tied) copy_view(tm->output, &m->output);
    for (int il = 0; il < m->hp.n_layer; il++) copy_layer(&tm->layers[il], &m->layers[il]);
    return MICA_OK;
}

/* ---- writing ------------------------------------------------------------------------- */

static mica_status set_u32(gguf_writer *g, const char *arch, const char *suffix, int64_t v)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_writer_set_u32(g, key, (uint32_t)v);
}

static mica_status set_f32(gguf_writer *g, const char *arch, const char *suffix, float v)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_writer_set_f32(g, key, v);
}

static mica_status write_hparams(gguf_writer *g, const train_model *tm)
{
    const model_hparams *hp = &tm->hp;
    const char *a = tm->arch->name;
    mica_status st = gguf_writer_set_str(g, "general.architecture", a);
    if (!st) st = set_u32(g, a, "context_length", hp->n_ctx_train);
    if (!st) st = set_u32(g, a, "embedding_length", hp->n_embd);
    if (!st) st = set_u32(g, a, "block_count", hp->n_layer);
    if (!st)
        st = set_u32(g, a, "feed_forward_length",
                     hp->n_expert && !tm->arch->expert_ff_key ? hp->n_ff_exp : hp->n_ff);
    if (!st) st = set_u32(g, a, "attention.head_count", hp->n_head);
    if (!st) st = set_u32(g, a, "attention.head_count_kv", hp->n_head_kv);
    if (!st) st = set_u32(g, a, "attention.key_length", hp->head_dim);
    if (!st) st = set_u32(g, a, "attention.value_length", hp->head_dim);
    if (!st) st = set_u32(g, a, "rope.dimension_count", hp->n_rot);
    if (!st) st = set_f32(g, a, "attention.layer_norm_rms_epsilon", hp->norm_eps);
    if (!st) st = set_f32(g, a, "rope.freq_base", hp->rope_base);
    if (!st && hp->n_expert) st = set_u32(g, a, "expert_count", hp->n_expert);
    if (!st && hp->n_expert) st = set_u32(g, a, "expert_used_count", hp->n_expert_used);
    if (!st && hp->n_expert && tm->arch->expert_ff_key)
        st = set_u32(g, a, tm->arch->expert_ff_key, hp->n_ff_exp);
    return st;
}

static bool is_lora_tensor(const train_tensor *t)
{
    return is_suffix(t->name, ".lora_a") || is_suffix(t->name, ".lora_b");
}

mica_status train_model_write(const train_model *tm, const char *path, const gguf_file *kv_src,
                              mica_err *err)
{
    gguf_writer *g = gguf_writer_new();
    if (!g) return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    mica_status st = kv_src ? gguf_writer_copy_kv(g, kv_src) : MICA_OK;
    if (!st) st = write_hparams(g, tm);
    if (st) {
        core_fail(err, st, "%s: cannot set the model's metadata", path);
        goto done;
    }
    for (int i = 0; i < tm->n_tensors && !st; i++) {
        const train_tensor *t = tm->tensors[i];
        if (!is_lora_tensor(t))
            st = gguf_writer_add_tensor(g, t->name, GGUF_T_F32, (uint32_t)t->n_dims, t->ne, t->w,
                                        err);
    }
    if (!st) st = gguf_writer_write(g, path, err);
done:
    gguf_writer_free(g);
    return st;
}
