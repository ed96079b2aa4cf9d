/*
 * model_load.c - the architecture table, hyper-parameters from GGUF metadata, and binding of
 * every tensor by name with its shape checked. Weights stay in the GGUF mapping.
 * Called by the engine (mica_model_load) and by tools that need a bound model.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp hard-codes these choices per architecture (llama_model_rope_type, build_moe_ffn
 * callers); see ../shared/testdata/llamacpp/README.md section 4. */
static const model_arch model_archs[] = {
    {"llama", MODEL_ROPE_NORM, MODEL_QK_NORM_NONE, true, false, false, NULL},
    {"qwen2", MODEL_ROPE_NEOX, MODEL_QK_NORM_NONE, false, false, false, NULL},
    {"qwen3", MODEL_ROPE_NEOX, MODEL_QK_NORM_HEAD, false, false, false, NULL},
    {"qwen2moe", MODEL_ROPE_NEOX, MODEL_QK_NORM_NONE, false, false, true,
     "expert_feed_forward_length"},
    {"qwen3moe", MODEL_ROPE_NEOX, MODEL_QK_NORM_HEAD, true, false, false,
     "expert_feed_forward_length"},
    {"olmoe", MODEL_ROPE_NEOX, MODEL_QK_NORM_FULL, false, false, true, NULL},
    {"granite", MODEL_ROPE_NORM, MODEL_QK_NORM_NONE, true, true, false, NULL},
    {"granitemoe", MODEL_ROPE_NORM, MODEL_QK_NORM_NONE, true, true, false, NULL},
};

const model_arch *model_arch_find(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof model_archs / sizeof model_archs[0]; i++)
        if (strlen(model_archs[i].name) == len && !memcmp(model_archs[i].name, name, len))
            return &model_archs[i];
    return NULL;
}

/* ---- hyper-parameters ---------------------------------------------------------------- */

typedef struct hp_reader {
    const gguf_file *f;
    const char *arch;
    mica_err *err;
} hp_reader;

static void hp_key(const hp_reader *r, const char *suffix, char *key, size_t cap)
{
    snprintf(key, cap, "%s.%s", r->arch, suffix);
}

/* An integer key that may also be a per-layer array (llama.cpp accepts both); mica needs
 * the layers to agree. Absent keys leave *out as it is unless required. */
static mica_status hp_int(const hp_reader *r, const char *suffix, bool required, int64_t *out)
{
    char key[128];
    hp_key(r, suffix, key, sizeof key);
    const gguf_kv *kv = gguf_find(r->f, key);
    if (!kv) {
        if (required)
            return core_fail(r->err, MICA_EFORMAT, "%s: key '%s': missing", r->f->path, key);
        return MICA_OK;
    }
    if (kv->type == GGUF_VT_ARRAY && gguf_vtype_is_int(kv->arr_type) && kv->arr_n > 0) {
        int64_t v0 = gguf_arr_int(kv, 0);
        for (uint64_t i = 1; i < kv->arr_n; i++)
            if (gguf_arr_int(kv, i) != v0)
                return core_fail(r->err, MICA_EUNSUPPORTED,
                                 "%s: key '%s': per-layer values differ, which mica does not "
                                 "support",
                                 r->f->path, key);
        *out = v0;
        return MICA_OK;
    }
    return gguf_get_int(r->f, key, out, r->err);
}

static mica_status hp_float(const hp_reader *r, const char *suffix, bool required, float *out)
{
    char key[128];
    hp_key(r, suffix, key, sizeof key);
    double v = *out;
    mica_status st = required ? gguf_get_float(r->f, key, &v, r->err)
                              : gguf_get_float_opt(r->f, key, &v, r->err);
    if (st == MICA_OK) *out = (float)v;
    return st;
}

/* A count must be positive and small enough that products of counts cannot overflow. */
static mica_status hp_check_range(const hp_reader *r, const char *what, int64_t v, int64_t lo,
                                  int64_t hi, int32_t *out)
{
    if (v < lo || v > hi)
        return core_fail(r->err, MICA_EFORMAT, "%s: %s.%s = %lld is out of range [%lld, %lld]",
                         r->f->path, r->arch, what, (long long)v, (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return MICA_OK;
}

#define HP_TRY(x)                                                                                  \
    do {                                                                                           \
        mica_status st_ = (x);                                                                     \
        if (st_) return st_;                                                                       \
    } while (0)

static mica_status hp_read_attention(const hp_reader *r, model_hparams *hp)
{
    int64_t n_head = 0, n_head_kv = -1, key_len = -1, val_len = -1, n_rot = -1;
    HP_TRY(hp_int(r, "attention.head_count", true, &n_head));
    HP_TRY(hp_check_range(r, "attention.head_count", n_head, 1, 4096, &hp->n_head));
    HP_TRY(hp_int(r, "attention.head_count_kv", false, &n_head_kv));
    if (n_head_kv < 0) n_head_kv = n_head;
    HP_TRY(hp_check_range(r, "attention.head_count_kv", n_head_kv, 1, n_head, &hp->n_head_kv));
    if (hp->n_head % hp->n_head_kv)
        return core_fail(r->err, MICA_EFORMAT,
                         "%s: attention.head_count %d is not a multiple of head_count_kv %d",
                         r->f->path, hp->n_head, hp->n_head_kv);
    HP_TRY(hp_int(r, "attention.key_length", false, &key_len));
    HP_TRY(hp_int(r, "attention.value_length", false, &val_len));
    if (key_len < 0) key_len = hp->n_embd / hp->n_head;
    if (val_len < 0) val_len = key_len;
    if (val_len != key_len)
        return core_fail(r->err, MICA_EUNSUPPORTED,
                         "%s: attention.key_length %lld != value_length %lld is not supported",
                         r->f->path, (long long)key_len, (long long)val_len);
    HP_TRY(hp_check_range(r, "attention.key_length", key_len, 2, 1024, &hp->head_dim));
    HP_TRY(hp_int(r, "rope.dimension_count", false, &n_rot));
    if (n_rot < 0) n_rot = hp->head_dim;
    HP_TRY(hp_check_range(r, "rope.dimension_count", n_rot, 0, hp->head_dim, &hp->n_rot));
    if (hp->n_rot % 2)
        return core_fail(r->err, MICA_EFORMAT, "%s: rope.dimension_count %d is odd", r->f->path,
                         hp->n_rot);
    hp->rope_base = 10000.0f;
    HP_TRY(hp_float(r, "rope.freq_base", false, &hp->rope_base));
    hp->rope_on = true;
    return MICA_OK;
}

static mica_status hp_read_experts(const hp_reader *r, const model_arch *arch, model_hparams *hp)
{
    int64_t n_expert = 0, n_used = 0, ff_exp = -1, ff_sh = 0;
    HP_TRY(hp_int(r, "expert_count", false, &n_expert));
    HP_TRY(hp_int(r, "expert_used_count", false, &n_used));
    HP_TRY(hp_check_range(r, "expert_count", n_expert, 0, 1024, &hp->n_expert));
    HP_TRY(hp_check_range(r, "expert_used_count", n_used, n_expert ? 1 : 0, n_expert,
                          &hp->n_expert_used));
    if (arch->expert_ff_key) {
        HP_TRY(hp_int(r, arch->expert_ff_key, false, &ff_exp));
        if (ff_exp < 0 && hp->n_expert_used) ff_exp = hp->n_ff / hp->n_expert_used;
    }
    if (ff_exp < 0) ff_exp = hp->n_ff;
    HP_TRY(hp_check_range(r, "expert feed-forward length", ff_exp, 0, 1 << 20, &hp->n_ff_exp));
    HP_TRY(hp_int(r, "expert_shared_feed_forward_length", false, &ff_sh));
    HP_TRY(
        hp_check_range(r, "expert_shared_feed_forward_length", ff_sh, 0, 1 << 20, &hp->n_ff_shexp));
    return MICA_OK;
}

static mica_status hp_read_granite(const hp_reader *r, const model_arch *arch, model_hparams *hp)
{
    hp->embd_scale = hp->residual_scale = hp->logit_scale = 1.0f;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    if (!arch->granite) return MICA_OK;
    HP_TRY(hp_float(r, "embedding_scale", false, &hp->embd_scale));
    HP_TRY(hp_float(r, "residual_scale", false, &hp->residual_scale));
    HP_TRY(hp_float(r, "logit_scale", true, &hp->logit_scale));
    HP_TRY(hp_float(r, "attention.scale", false, &hp->attn_scale));
    if (hp->logit_scale == 0.0f)
        return core_fail(r->err, MICA_EFORMAT, "%s: %s.logit_scale is 0", r->f->path, r->arch);
    char key[128];
    hp_key(r, "rope.scaling.finetuned", key, sizeof key);
    /* llama.cpp turns rope off for granite when this is false. */
    return gguf_get_bool_opt(r->f, key, &hp->rope_on, r->err);
}

static mica_status hp_read(const gguf_file *f, const model_arch *arch, int32_t n_vocab,
                           model_hparams *hp, mica_err *err)
{
    hp_reader r = {f, arch->name, err};
    int64_t ctx = 0, embd = 0, layers = 0, ff = 0;
    memset(hp, 0, sizeof *hp);
    hp->n_vocab = n_vocab;
    HP_TRY(hp_int(&r, "context_length", true, &ctx));
    HP_TRY(hp_check_range(&r, "context_length", ctx, 1, 1 << 24, &hp->n_ctx_train));
    HP_TRY(hp_int(&r, "embedding_length", true, &embd));
    HP_TRY(hp_check_range(&r, "embedding_length", embd, 1, 1 << 18, &hp->n_embd));
    HP_TRY(hp_int(&r, "block_count", true, &layers));
    HP_TRY(hp_check_range(&r, "block_count", layers, 1, 4096, &hp->n_layer));
    HP_TRY(hp_int(&r, "feed_forward_length", false, &ff));
    HP_TRY(hp_check_range(&r, "feed_forward_length", ff, 0, 1 << 20, &hp->n_ff));
    HP_TRY(hp_float(&r, "attention.layer_norm_rms_epsilon", true, &hp->norm_eps));
    HP_TRY(hp_read_attention(&r, hp));
    HP_TRY(hp_read_experts(&r, arch, hp));
    return hp_read_granite(&r, arch, hp);
}

/* ---- tensor binding ------------------------------------------------------------------ */

typedef struct binder {
    model *m;
    mica_err *err;
} binder;

static void shape_str(const int64_t *ne, int n_dims, char *buf, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < n_dims && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Looks a tensor up and checks its shape; trailing dimensions of 1 do not count
 * (llama-quantize writes [64, 1] as [64]). Absent optional tensors give *t = NULL. */
static mica_status bind_find(binder *b, const char *name, const int64_t *ne, int n_dims,
                             bool required, const gguf_tensor **t)
{
    const gguf_file *f = b->m->gguf;
    *t = gguf_find_tensor(f, name);
    if (!*t) {
        if (!required) return MICA_OK;
        return core_fail(b->err, MICA_EFORMAT, "%s: tensor '%s': missing", f->path, name);
    }
    for (int i = 0; i < GGUF_MAX_DIMS; i++) {
        int64_t want = i < n_dims ? ne[i] : 1;
        if ((*t)->ne[i] != want) {
            char got_s[96], want_s[96];
            shape_str((*t)->ne, (int)(*t)->n_dims, got_s, sizeof got_s);
            shape_str(ne, n_dims, want_s, sizeof want_s);
            return core_fail(b->err, MICA_EFORMAT, "%s: tensor '%s' has shape %s, expected %s",
                             f->path, name, got_s, want_s);
        }
    }
    return MICA_OK;
}

static mica_status bind_matrix(binder *b, tensor_view *v, const char *name, int64_t ne0,
                               int64_t ne1, int64_t ne2, bool required)
{
    const int64_t ne[3] = {ne0, ne1, ne2};
    const gguf_tensor *t;
    memset(v, 0, sizeof *v);
    mica_status st = bind_find(b, name, ne, ne2 > 1 ? 3 : 2, required, &t);
    if (st || !t) return st;
    return tensor_view_from_gguf(v, t, b->m->gguf->path, b->err);
}

/* Norm weights and biases are used as plain float arrays, so they must be F32 (they are in
 * every converter's output). */
static mica_status bind_vector(binder *b, const float **p, const char *name, int64_t n,
                               bool required)
{
    const gguf_tensor *t;
    *p = NULL;
    mica_status st = bind_find(b, name, &n, 1, required, &t);
    if (st || !t) return st;
    if (t->type != GGUF_T_F32)
        return core_fail(b->err, MICA_EUNSUPPORTED, "%s: tensor '%s' has type %s, expected F32",
                         b->m->gguf->path, name, gguf_ttype_name(t->type));
    *p = t->data;
    return MICA_OK;
}

static const char *layer_name(char *buf, size_t cap, int il, const char *suffix)
{
    snprintf(buf, cap, "blk.%d.%s", il, suffix);
    return buf;
}

static mica_status bind_attention(binder *b, int il, model_layer *l)
{
    const model_hparams *hp = &b->m->hp;
    const int64_t e = hp->n_embd, nq = (int64_t)hp->n_head * hp->head_dim;
    const int64_t nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    char n[GGUF_MAX_NAME];
    HP_TRY(bind_vector(b, &l->attn_norm, layer_name(n, sizeof n, il, "attn_norm.weight"), e, true));
    HP_TRY(bind_matrix(b, &l->wq, layer_name(n, sizeof n, il, "attn_q.weight"), e, nq, 1, true));
    HP_TRY(bind_matrix(b, &l->wk, layer_name(n, sizeof n, il, "attn_k.weight"), e, nkv, 1, true));
    HP_TRY(bind_matrix(b, &l->wv, layer_name(n, sizeof n, il, "attn_v.weight"), e, nkv, 1, true));
    HP_TRY(
        bind_matrix(b, &l->wo, layer_name(n, sizeof n, il, "attn_output.weight"), nq, e, 1, true));
    HP_TRY(bind_vector(b, &l->bq, layer_name(n, sizeof n, il, "attn_q.bias"), nq, false));
    HP_TRY(bind_vector(b, &l->bk, layer_name(n, sizeof n, il, "attn_k.bias"), nkv, false));
    HP_TRY(bind_vector(b, &l->bv, layer_name(n, sizeof n, il, "attn_v.bias"), nkv, false));
    HP_TRY(bind_vector(b, &l->bo, layer_name(n, sizeof n, il, "attn_output.bias"), e, false));
    model_qk_norm qk = b->m->arch->qk_norm;
    if (qk != MODEL_QK_NORM_NONE) {
        const int64_t nqn = qk == MODEL_QK_NORM_HEAD ? hp->head_dim : nq;
        const int64_t nkn = qk == MODEL_QK_NORM_HEAD ? hp->head_dim : nkv;
        HP_TRY(bind_vector(b, &l->q_norm, layer_name(n, sizeof n, il, "attn_q_norm.weight"), nqn,
                           true));
        HP_TRY(bind_vector(b, &l->k_norm, layer_name(n, sizeof n, il, "attn_k_norm.weight"), nkn,
                           true));
    }
    return MICA_OK;
}

/* Appends the metadata an expert tensor's shape comes from to a shape error, so the user
 * sees whether the tensor or the key is wrong. */
static mica_status moe_shape_hint(binder *b, mica_status st)
{
    if (st != MICA_EFORMAT || !strstr(b->err->msg, "has shape")) return st;
    const model_hparams *hp = &b->m->hp;
    const size_t len = strlen(b->err->msg);
    snprintf(b->err->msg + len, sizeof b->err->msg - len,
             " (%s.expert_count = %d, expert feed-forward length = %d)", b->m->arch->name,
             hp->n_expert, hp->n_ff_exp);
    return st;
}

/* Routed experts: gate and up as two tensors, or merged into one (gate rows first). */
static mica_status bind_experts(binder *b, int il, model_layer *l)
{
    const model_hparams *hp = &b->m->hp;
    const int64_t e = hp->n_embd, ne = hp->n_expert, ff = hp->n_ff_exp;
    char n[GGUF_MAX_NAME];
    HP_TRY(bind_matrix(b, &l->gate_inp, layer_name(n, sizeof n, il, "ffn_gate_inp.weight"), e, ne,
                       1, true));
    HP_TRY(bind_matrix(b, &l->gate_up_exps, layer_name(n, sizeof n, il, "ffn_gate_up_exps.weight"),
                       e, 2 * ff, ne, false));
    if (!l->gate_up_exps.data) {
        HP_TRY(bind_matrix(b, &l->gate_exps, layer_name(n, sizeof n, il, "ffn_gate_exps.weight"), e,
                           ff, ne, true));
        HP_TRY(bind_matrix(b, &l->up_exps, layer_name(n, sizeof n, il, "ffn_up_exps.weight"), e, ff,
                           ne, true));
    }
    return bind_matrix(b, &l->down_exps, layer_name(n, sizeof n, il, "ffn_down_exps.weight"), ff, e,
                       ne, true);
}

static mica_status bind_shared_expert(binder *b, int il, model_layer *l)
{
    const model_hparams *hp = &b->m->hp;
    const int64_t e = hp->n_embd, sh = hp->n_ff_shexp;
    char n[GGUF_MAX_NAME];
    HP_TRY(bind_vector(b, &l->gate_inp_shexp,
                       layer_name(n, sizeof n, il, "ffn_gate_inp_shexp.weight"), e, false));
    HP_TRY(bind_matrix(b, &l->gate_shexp, layer_name(n, sizeof n, il, "ffn_gate_shexp.weight"), e,
                       sh, 1, false));
    HP_TRY(bind_matrix(b, &l->up_shexp, layer_name(n, sizeof n, il, "ffn_up_shexp.weight"), e, sh,
                       1, !!l->gate_shexp.data));
    return bind_matrix(b, &l->down_shexp, layer_name(n, sizeof n, il, "ffn_down_shexp.weight"), sh,
                       e, 1, !!l->gate_shexp.data);
}

static mica_status bind_moe(binder *b, int il, model_layer *l)
{
    char n[GGUF_MAX_NAME];
    if (b->m->hp.n_expert < 1)
        return core_fail(b->err, MICA_EFORMAT,
                         "%s: tensor '%s' present but key '%s.expert_count' is missing or 0",
                         b->m->gguf->path, layer_name(n, sizeof n, il, "ffn_gate_inp.weight"),
                         b->m->arch->name);
    HP_TRY(moe_shape_hint(b, bind_experts(b, il, l)));
    if (!b->m->hp.n_ff_shexp) return MICA_OK;
    return bind_shared_expert(b, il, l);
}

static mica_status bind_ffn(binder *b, int il, model_layer *l)
{
    const model_hparams *hp = &b->m->hp;
    char n[GGUF_MAX_NAME];
    HP_TRY(bind_vector(b, &l->ffn_norm, layer_name(n, sizeof n, il, "ffn_norm.weight"), hp->n_embd,
                       true));
    if (gguf_find_tensor(b->m->gguf, layer_name(n, sizeof n, il, "ffn_gate_inp.weight")))
        return bind_moe(b, il, l);
    if (hp->n_expert)
        return core_fail(b->err, MICA_EFORMAT,
                         "%s: tensor '%s': missing (key '%s.expert_count' is %d)", b->m->gguf->path,
                         n, b->m->arch->name, hp->n_expert);
    if (hp->n_ff < 1)
        return core_fail(b->err, MICA_EFORMAT, "%s: key '%s.feed_forward_length': missing",
                         b->m->gguf->path, b->m->arch->name);
    HP_TRY(bind_matrix(b, &l->ffn_gate, layer_name(n, sizeof n, il, "ffn_gate.weight"), hp->n_embd,
                       hp->n_ff, 1, true));
    HP_TRY(bind_matrix(b, &l->ffn_up, layer_name(n, sizeof n, il, "ffn_up.weight"), hp->n_embd,
                       hp->n_ff, 1, true));
    return bind_matrix(b, &l->ffn_down, layer_name(n, sizeof n, il, "ffn_down.weight"), hp->n_ff,
                       hp->n_embd, 1, true);
}

static mica_status bind_all(binder *b)
{
    model *m = b->m;
    const model_hparams *hp = &m->hp;
    HP_TRY(bind_matrix(b, &m->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, 1, true));
    HP_TRY(bind_vector(b, &m->output_norm, "output_norm.weight", hp->n_embd, true));
    HP_TRY(bind_matrix(b, &m->output, "output.weight", hp->n_embd, hp->n_vocab, 1,
                       m->arch->output_required));
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    HP_TRY(bind_vector(b, &m->output_bias, "output.bias", hp->n_vocab, false));
    m->layers = core_calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return core_fail(b->err, MICA_ENOMEM, "%s: out of memory", m->gguf->path);
    for (int il = 0; il < hp->n_layer; il++) {
        HP_TRY(bind_attention(b, il, &m->layers[il]));
        HP_TRY(bind_ffn(b, il, &m->layers[il]));
    }
    return MICA_OK;
}

static mica_status model_read_arch(model *m, mica_err *err)
{
    gguf_str name;
    mica_status st = gguf_get_str(m->gguf, "general.architecture", &name, err);
    if (st) return st;
    m->arch = model_arch_find(name.ptr, name.len);
    if (!m->arch)
        return core_fail(err, MICA_EUNSUPPORTED, "%s: unsupported architecture '%.*s'",
                         m->gguf->path, (int)(name.len > 64 ? 64 : name.len), name.ptr);
    return MICA_OK;
}

mica_status model_load(model **out, const char *path, mica_err *err)
{
    *out = NULL;
    model *m = core_calloc(1, sizeof *m);
    if (!m) return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    mica_status st = gguf_open(&m->gguf, path, err);
    if (st) goto fail;
    if ((st = model_read_arch(m, err))) goto fail;
    if ((st = tok_load(&m->vocab, m->gguf, err))) goto fail;
    if ((st = hp_read(m->gguf, m->arch, tok_n_vocab(m->vocab), &m->hp, err))) goto fail;
    binder b = {m, err};
    if ((st = bind_all(&b))) goto fail;
    *out = m;
    return MICA_OK;
fail:
    model_free(m);
    return st;
}

void model_free(model *m)
{
    if (!m) return;
    free(m->layers);
    free(m->repacked);
    tok_free(m->vocab);
    gguf_close(m->gguf);
    free(m);
}
