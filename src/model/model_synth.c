/*
 * model_synth.c - writes random-weight "llama" (dense or Mixtral-style MoE) and "qwen2"
 * models as GGUF files for `mica synth`, benchmarks and tests. An architecture is a row of
 * synth_archs, a preset a row of synth_presets. The tensor list is one indexed table
 * (synth_spec, built from the per-layer slots of synth_slots) that both the parameter count
 * and the writer walk, so the two cannot disagree. Each tensor draws its values from its
 * own xorshift stream seeded by (seed, index), so a file does not depend on the order the
 * tensors are generated in. Matrices and biases are uniform in +-1/sqrt(fan_in) (fan_in =
 * ne[0], the input size), embeddings in +-1, norm weights are 1: activations stay O(1).
 *
 * Does not own: the GGUF layout (gguf/ writes it), quantization (tensor_from_f32, and
 * llama-quantize's mix: quant_model_file), checking that the file loads
 * (tests/model/test_model_synth.c does). Called by `mica synth`, bench/ and tests.
 * Never prints and never exits: errors come back as mica_status with a message.
 */
#include "model_synth.h"

#include "gguf/gguf.h"
#include "quant/quant.h"
#include "tensor/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Loader limits (model_load.c, tok_vocab.c) that a synthetic model must stay inside. */
#define SYNTH_MAX_VOCAB    (1 << 22)
#define SYNTH_MAX_CTX      (1 << 24)
#define SYNTH_MAX_EMBD     (1 << 18)
#define SYNTH_MAX_LAYER    4096
#define SYNTH_MAX_HEAD     4096
#define SYNTH_MAX_HEAD_DIM 1024
#define SYNTH_MAX_FF       (1 << 20)
#define SYNTH_MAX_EXPERT   1024

#define SYNTH_N_SPECIAL 3 /* <unk>, <s>, </s> */
#define SYNTH_PIECE_MAX 16

/* llama.cpp's token types (llama_token_type). */
enum { SYNTH_TT_NORMAL = 1, SYNTH_TT_UNKNOWN = 2, SYNTH_TT_CONTROL = 3, SYNTH_TT_BYTE = 6 };

/* ---- architectures and presets ------------------------------------------------------- */

typedef struct synth_arch {
    const char *name;
    bool tied, qkv_bias, experts; /* experts: MoE layers are this architecture's */
    float rope_base, norm_eps;
} synth_arch;

/* The defaults of llama.cpp's converters for these architectures (Qwen2.5's config). */
static const synth_arch synth_archs[MODEL_SYNTH_N_ARCH] = {
    [MODEL_SYNTH_LLAMA] = {"llama", false, false, true, 1e4f, 1e-5f},
    [MODEL_SYNTH_QWEN2] = {"qwen2", true, true, false, 1e6f, 1e-6f},
};

static void synth_set_arch(model_synth_params *p, model_synth_arch a)
{
    p->arch = a;
    p->tied = synth_archs[a].tied;
    p->qkv_bias = synth_archs[a].qkv_bias;
    p->rope_base = synth_archs[a].rope_base;
    p->norm_eps = synth_archs[a].norm_eps;
}

const char *model_synth_arch_name(model_synth_arch a)
{
    return (unsigned)a < MODEL_SYNTH_N_ARCH ? synth_archs[a].name : "?";
}

mica_status model_synth_arch_from_name(model_synth_params *p, const char *name, mica_err *err)
{
    for (int a = 0; a < MODEL_SYNTH_N_ARCH; a++)
        if (!strcmp(name, synth_archs[a].name)) {
            synth_set_arch(p, (model_synth_arch)a);
            return MICA_OK;
        }
    return core_fail(err, MICA_EINVAL, "unknown architecture '%s' (architectures: llama, qwen2)",
                     name);
}

/* The shapes of llamacpp-bench.md (make_test_models.py's BIG_SPECS). */
typedef struct synth_preset {
    const char *name;
    model_synth_arch arch;
    int32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_expert, n_expert_used;
} synth_preset;

static const synth_preset synth_presets[] = {
    {"qwen2-0.5b", MODEL_SYNTH_QWEN2, 512, 896, 24, 14, 2, 4864, 0, 0},
    {"moe-8x", MODEL_SYNTH_LLAMA, 512, 512, 8, 8, 8, 1408, 8, 2},
};
#define SYNTH_N_PRESETS    (sizeof synth_presets / sizeof synth_presets[0])
#define SYNTH_PRESET_N_CTX 4096

void model_synth_preset_names(char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < SYNTH_N_PRESETS && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", synth_presets[i].name);
}

mica_status model_synth_preset(model_synth_params *p, const char *name, mica_err *err)
{
    for (size_t i = 0; i < SYNTH_N_PRESETS; i++) {
        const synth_preset *r = &synth_presets[i];
        if (strcmp(name, r->name)) continue;
        synth_set_arch(p, r->arch);
        p->n_vocab = r->n_vocab;
        p->n_ctx = SYNTH_PRESET_N_CTX;
        p->n_embd = r->n_embd;
        p->n_layer = r->n_layer;
        p->n_head = r->n_head;
        p->n_head_kv = r->n_head_kv;
        p->n_ff = r->n_ff;
        p->n_expert = r->n_expert;
        p->n_expert_used = r->n_expert_used;
        return MICA_OK;
    }
    char names[128];
    model_synth_preset_names(names, sizeof names);
    return core_fail(err, MICA_EINVAL, "unknown preset '%s' (presets: %s)", name, names);
}

model_synth_params model_synth_default_params(void)
{
    model_synth_params p = {
        .n_vocab = 320,
        .n_ctx = 256,
        .n_embd = 64,
        .n_layer = 2,
        .n_head = 4,
        .n_head_kv = 4,
        .n_ff = 128,
        .type = GGUF_T_Q8_0,
        .seed = 1,
    };
    synth_set_arch(&p, MODEL_SYNTH_LLAMA);
    return p;
}

/* ---- parameters ----------------------------------------------------------------------- */

static mica_status synth_range(mica_err *err, const char *what, int64_t v, int64_t lo, int64_t hi)
{
    if (v >= lo && v <= hi) return MICA_OK;
    return core_fail(err, MICA_EINVAL, "synthetic model: %s %lld is out of range [%lld, %lld]",
                     what, (long long)v, (long long)lo, (long long)hi);
}

#define SYNTH_TRY(x)                                                                               \
    do {                                                                                           \
        mica_status st_ = (x);                                                                     \
        if (st_) return st_;                                                                       \
    } while (0)

static mica_status synth_check_experts(const model_synth_params *p, mica_err *err)
{
    SYNTH_TRY(synth_range(err, "n_expert", p->n_expert, 0, SYNTH_MAX_EXPERT));
    if (p->n_expert && !synth_archs[p->arch].experts)
        return core_fail(err, MICA_EINVAL,
                         "synthetic model: architecture %s has no experts here (n_expert %d; "
                         "use llama for a Mixtral-style MoE)",
                         synth_archs[p->arch].name, p->n_expert);
    if (p->n_expert == 0) {
        if (p->n_expert_used != 0)
            return core_fail(err, MICA_EINVAL,
                             "synthetic model: n_expert_used %d without experts (n_expert 0)",
                             p->n_expert_used);
        return MICA_OK;
    }
    if (p->n_expert_used < 1 || p->n_expert_used > p->n_expert)
        return core_fail(err, MICA_EINVAL,
                         "synthetic model: n_expert_used %d must be in [1, n_expert %d]",
                         p->n_expert_used, p->n_expert);
    return MICA_OK;
}

/* With llama_mix, a block type is reached through an F16 file that quant/ converts. */
static bool synth_via_f16(const model_synth_params *p)
{
    return p->llama_mix && !quant_type_is_float(p->type);
}

/* Every matrix row (ne[0]) is n_embd or n_ff long, so both must fill whole blocks of the
 * type written here (llama_mix's quantization falls back as llama-quantize does). */
static mica_status synth_check_type(const model_synth_params *p, mica_err *err)
{
    uint32_t bs = 1;
    if (!tensor_type_supported(p->type) || !gguf_ttype_layout(p->type, &bs, NULL))
        return core_fail(err, MICA_EINVAL, "synthetic model: weight type %s is not supported",
                         gguf_ttype_name(p->type));
    if (synth_via_f16(p)) return MICA_OK;
    if (p->n_embd % (int32_t)bs || p->n_ff % (int32_t)bs)
        return core_fail(err, MICA_EINVAL,
                         "synthetic model: n_embd %d and n_ff %d must be multiples of the %s "
                         "block size %u",
                         p->n_embd, p->n_ff, gguf_ttype_name(p->type), bs);
    return MICA_OK;
}

static mica_status synth_check_heads(const model_synth_params *p, mica_err *err)
{
    SYNTH_TRY(synth_range(err, "n_head", p->n_head, 1, SYNTH_MAX_HEAD));
    SYNTH_TRY(synth_range(err, "n_head_kv", p->n_head_kv, 1, p->n_head));
    if (p->n_head % p->n_head_kv)
        return core_fail(err, MICA_EINVAL,
                         "synthetic model: n_head %d is not a multiple of n_head_kv %d", p->n_head,
                         p->n_head_kv);
    const int32_t head_dim = p->n_embd / p->n_head;
    if (p->n_embd % p->n_head || head_dim % 2 || head_dim > SYNTH_MAX_HEAD_DIM)
        return core_fail(err, MICA_EINVAL,
                         "synthetic model: n_embd %d / n_head %d must give an even head size "
                         "of at most %d",
                         p->n_embd, p->n_head, SYNTH_MAX_HEAD_DIM);
    return MICA_OK;
}

static mica_status synth_check_floats(const model_synth_params *p, mica_err *err)
{
    if (!(p->rope_base > 0 && p->rope_base < 1e30f))
        return core_fail(err, MICA_EINVAL,
                         "synthetic model: rope base %g must be positive and finite",
                         (double)p->rope_base);
    if (!(p->norm_eps > 0 && p->norm_eps < 1))
        return core_fail(err, MICA_EINVAL, "synthetic model: norm eps %g must be in (0, 1)",
                         (double)p->norm_eps);
    return MICA_OK;
}

mica_status model_synth_check(const model_synth_params *p, mica_err *err)
{
    if ((unsigned)p->arch >= MODEL_SYNTH_N_ARCH)
        return core_fail(err, MICA_EINVAL, "synthetic model: architecture %d is unknown",
                         (int)p->arch);
    SYNTH_TRY(synth_range(err, "n_vocab", p->n_vocab, MODEL_SYNTH_MIN_VOCAB, SYNTH_MAX_VOCAB));
    SYNTH_TRY(synth_range(err, "n_ctx", p->n_ctx, 1, SYNTH_MAX_CTX));
    SYNTH_TRY(synth_range(err, "n_embd", p->n_embd, 1, SYNTH_MAX_EMBD));
    SYNTH_TRY(synth_range(err, "n_layer", p->n_layer, 1, SYNTH_MAX_LAYER));
    SYNTH_TRY(synth_range(err, "n_ff", p->n_ff, 1, SYNTH_MAX_FF));
    SYNTH_TRY(synth_check_heads(p, err));
    SYNTH_TRY(synth_check_experts(p, err));
    SYNTH_TRY(synth_check_floats(p, err));
    return synth_check_type(p, err);
}

/* ---- the tensor table ----------------------------------------------------------------- */

/* How a tensor is filled and stored: embeddings uniform in +-1, norms all 1, the rest
 * uniform in +-1/sqrt(ne[0]); norms, biases and the router stay F32. */
typedef enum synth_kind {
    SYNTH_EMBEDDING,
    SYNTH_NORM,
    SYNTH_BIAS,
    SYNTH_ROUTER,
    SYNTH_MATRIX
} synth_kind;

static bool synth_kind_f32(synth_kind k)
{
    return k == SYNTH_NORM || k == SYNTH_BIAS || k == SYNTH_ROUTER;
}

typedef struct synth_spec {
    char name[GGUF_MAX_NAME];
    synth_kind kind;
    uint32_t n_dims;
    int64_t ne[3];   /* ne[0] contiguous */
    bool per_expert; /* ne[2] experts, of which one token reads n_expert_used */
} synth_spec;

/* Symbolic sizes of the slots below. */
typedef enum synth_dim { D_1, D_EMBD, D_KV, D_FF, D_EXPERT } synth_dim;

/* When a layer slot exists. */
typedef enum synth_when { W_ALWAYS, W_BIAS, W_DENSE, W_MOE } synth_when;

typedef struct synth_slot {
    const char *name; /* after "blk.N." */
    synth_kind kind;
    synth_when when;
    synth_dim ne[3];
} synth_slot;

/* One layer in make_test_models.py's order; MoE replaces the three dense FFN matrices by the
 * router and the stacked expert matrices (Mixtral's layout; one expert is still a stack of
 * one, as llama.cpp writes it). */
static const synth_slot synth_slots[] = {
    {"attn_norm.weight", SYNTH_NORM, W_ALWAYS, {D_EMBD, D_1, D_1}},
    {"attn_q.weight", SYNTH_MATRIX, W_ALWAYS, {D_EMBD, D_EMBD, D_1}},
    {"attn_k.weight", SYNTH_MATRIX, W_ALWAYS, {D_EMBD, D_KV, D_1}},
    {"attn_v.weight", SYNTH_MATRIX, W_ALWAYS, {D_EMBD, D_KV, D_1}},
    {"attn_q.bias", SYNTH_BIAS, W_BIAS, {D_EMBD, D_1, D_1}},
    {"attn_k.bias", SYNTH_BIAS, W_BIAS, {D_KV, D_1, D_1}},
    {"attn_v.bias", SYNTH_BIAS, W_BIAS, {D_KV, D_1, D_1}},
    {"attn_output.weight", SYNTH_MATRIX, W_ALWAYS, {D_EMBD, D_EMBD, D_1}},
    {"ffn_norm.weight", SYNTH_NORM, W_ALWAYS, {D_EMBD, D_1, D_1}},
    {"ffn_gate.weight", SYNTH_MATRIX, W_DENSE, {D_EMBD, D_FF, D_1}},
    {"ffn_up.weight", SYNTH_MATRIX, W_DENSE, {D_EMBD, D_FF, D_1}},
    {"ffn_down.weight", SYNTH_MATRIX, W_DENSE, {D_FF, D_EMBD, D_1}},
    {"ffn_gate_inp.weight", SYNTH_ROUTER, W_MOE, {D_EMBD, D_EXPERT, D_1}},
    {"ffn_gate_exps.weight", SYNTH_MATRIX, W_MOE, {D_EMBD, D_FF, D_EXPERT}},
    {"ffn_up_exps.weight", SYNTH_MATRIX, W_MOE, {D_EMBD, D_FF, D_EXPERT}},
    {"ffn_down_exps.weight", SYNTH_MATRIX, W_MOE, {D_FF, D_EMBD, D_EXPERT}},
};
#define SYNTH_N_SLOTS (sizeof synth_slots / sizeof synth_slots[0])

static bool synth_slot_used(const model_synth_params *p, const synth_slot *s)
{
    switch (s->when) {
    case W_BIAS:
        return p->qkv_bias;
    case W_DENSE:
        return p->n_expert == 0;
    case W_MOE:
        return p->n_expert > 0;
    default:
        return true;
    }
}

static int64_t synth_dim_size(const model_synth_params *p, synth_dim d)
{
    switch (d) {
    case D_EMBD:
        return p->n_embd;
    case D_KV:
        return (int64_t)p->n_head_kv * (p->n_embd / p->n_head);
    case D_FF:
        return p->n_ff;
    case D_EXPERT:
        return p->n_expert;
    default:
        return 1;
    }
}

static int64_t synth_per_layer(const model_synth_params *p)
{
    int64_t n = 0;
    for (size_t k = 0; k < SYNTH_N_SLOTS; k++) n += synth_slot_used(p, &synth_slots[k]);
    return n;
}

/* token_embd, the layers, output_norm, output unless tied (make_test_models.py's order). */
static int64_t synth_n_tensors(const model_synth_params *p)
{
    return (p->tied ? 2 : 3) + (int64_t)p->n_layer * synth_per_layer(p);
}

static void synth_set(synth_spec *s, synth_kind kind, int64_t ne0, int64_t ne1, int64_t ne2)
{
    s->kind = kind;
    s->ne[0] = ne0;
    s->ne[1] = ne1;
    s->ne[2] = ne2;
    s->n_dims = ne2 > 1 ? 3 : ne1 > 1 ? 2 : 1;
    s->per_expert = ne2 > 1;
}

/* The k-th slot in use of layer il. */
static void synth_layer_spec(const model_synth_params *p, int il, int64_t k, synth_spec *s)
{
    size_t j = 0;
    for (int64_t seen = -1;; j++) {
        seen += synth_slot_used(p, &synth_slots[j]);
        if (seen == k) break;
    }
    const synth_slot *sl = &synth_slots[j];
    snprintf(s->name, sizeof s->name, "blk.%d.%s", il, sl->name);
    synth_set(s, sl->kind, synth_dim_size(p, sl->ne[0]), synth_dim_size(p, sl->ne[1]),
              synth_dim_size(p, sl->ne[2]));
    if (sl->ne[2] == D_EXPERT) {
        s->n_dims = 3;
        s->per_expert = true;
    }
}

static void synth_spec_at(const model_synth_params *p, int64_t i, synth_spec *s)
{
    const int64_t n_layer_tensors = (int64_t)p->n_layer * synth_per_layer(p);
    memset(s, 0, sizeof *s);
    if (i == 0) {
        snprintf(s->name, sizeof s->name, "token_embd.weight");
        synth_set(s, SYNTH_EMBEDDING, p->n_embd, p->n_vocab, 1);
    } else if (i == n_layer_tensors + 1) {
        snprintf(s->name, sizeof s->name, "output_norm.weight");
        synth_set(s, SYNTH_NORM, p->n_embd, 1, 1);
    } else if (i == n_layer_tensors + 2) {
        snprintf(s->name, sizeof s->name, "output.weight");
        synth_set(s, SYNTH_MATRIX, p->n_embd, p->n_vocab, 1);
    } else {
        const int64_t per = synth_per_layer(p);
        synth_layer_spec(p, (int)((i - 1) / per), (i - 1) % per, s);
    }
}

void model_synth_count(const model_synth_params *p, int64_t *n_total, int64_t *n_active)
{
    int64_t total = 0, active = 0;
    const int64_t n = synth_n_tensors(p);
    for (int64_t i = 0; i < n; i++) {
        synth_spec s;
        synth_spec_at(p, i, &s);
        const int64_t per_matrix = s.ne[0] * s.ne[1];
        total += per_matrix * s.ne[2];
        active += per_matrix * (s.per_expert ? p->n_expert_used : 1);
    }
    if (n_total) *n_total = total;
    if (n_active) *n_active = active;
}

/* ---- random values -------------------------------------------------------------------- */

static uint64_t synth_splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* xorshift64*: uniform in [-a, a) from the top 24 bits. */
static float synth_uniform(uint64_t *s, float a)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    const uint32_t top = (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 40);
    return ((float)top * (1.0f / 16777216.0f) * 2.0f - 1.0f) * a;
}

static void synth_fill_row(const synth_spec *s, uint64_t *rng, float *row)
{
    const int64_t n = s->ne[0];
    if (s->kind == SYNTH_NORM) {
        for (int64_t i = 0; i < n; i++) row[i] = 1.0f;
        return;
    }
    const float a = s->kind == SYNTH_EMBEDDING ? 1.0f : 1.0f / sqrtf((float)n);
    for (int64_t i = 0; i < n; i++) row[i] = synth_uniform(rng, a);
}

/* Generates tensor i into a new buffer (*data, freed by the caller after the file is
 * written: the writer references it) and adds it to w. */
static mica_status synth_add_tensor(gguf_writer *w, const model_synth_params *p, int64_t i,
                                    float *row, void **data, mica_err *err)
{
    synth_spec s;
    synth_spec_at(p, i, &s);
    const uint32_t type = synth_kind_f32(s.kind) ? GGUF_T_F32
                          : synth_via_f16(p)     ? GGUF_T_F16
                                                 : p->type;
    const size_t row_bytes = tensor_row_size(type, s.ne[0]);
    const int64_t n_rows = s.ne[1] * s.ne[2];
    uint64_t bytes;
    if (!core_mul_ok(row_bytes, (uint64_t)n_rows, &bytes) || bytes > SIZE_MAX ||
        !(*data = malloc((size_t)bytes)))
        return core_fail(err, MICA_ENOMEM, "synthetic model: out of memory for tensor '%s'",
                         s.name);
    uint64_t rng = synth_splitmix64(p->seed ^ synth_splitmix64((uint64_t)i));
    if (!rng) rng = 1; /* xorshift's one fixed point */
    uint8_t *dst = *data;
    for (int64_t r = 0; r < n_rows; r++) {
        synth_fill_row(&s, &rng, row);
        tensor_from_f32(type, row, dst + (size_t)r * row_bytes, s.ne[0]);
    }
    return gguf_writer_add_tensor(w, s.name, type, s.n_dims, s.ne, *data, err);
}

/* ---- metadata ------------------------------------------------------------------------- */

/* Bijective base 26: 0 -> "a", 25 -> "z", 26 -> "aa". */
static void synth_filler_piece(int64_t k, char *out, size_t cap)
{
    char letters[SYNTH_PIECE_MAX];
    int n = 0;
    for (k++; k > 0 && n < (int)sizeof letters; k = (k - 1) / 26)
        letters[n++] = (char)('a' + (k - 1) % 26);
    size_t o = (size_t)snprintf(out, cap, "\xe2\x96\x81"); /* U+2581, SentencePiece's space */
    while (n > 0 && o + 1 < cap) out[o++] = letters[--n];
    out[o] = '\0';
}

typedef struct synth_vocab {
    char *pool;         /* n_vocab pieces of SYNTH_PIECE_MAX bytes */
    const char **texts; /* into pool */
    float *scores;
    int32_t *types;
} synth_vocab;

static void synth_vocab_free(synth_vocab *v)
{
    free(v->pool);
    free(v->texts);
    free(v->scores);
    free(v->types);
}

static mica_status synth_vocab_build(synth_vocab *v, int32_t n_vocab, mica_err *err)
{
    static const char *const special[SYNTH_N_SPECIAL] = {"<unk>", "<s>", "</s>"};
    static const int32_t special_type[SYNTH_N_SPECIAL] = {SYNTH_TT_UNKNOWN, SYNTH_TT_CONTROL,
                                                          SYNTH_TT_CONTROL};
    const size_t n = (size_t)n_vocab;
    v->pool = core_calloc(n, SYNTH_PIECE_MAX);
    v->texts = core_calloc(n, sizeof *v->texts);
    v->scores = core_calloc(n, sizeof *v->scores);
    v->types = core_calloc(n, sizeof *v->types);
    if (!v->pool || !v->texts || !v->scores || !v->types)
        return core_fail(err, MICA_ENOMEM, "synthetic model: out of memory for %d tokens", n_vocab);
    for (int32_t i = 0; i < n_vocab; i++) {
        char *t = v->pool + (size_t)i * SYNTH_PIECE_MAX;
        const int32_t byte = i - SYNTH_N_SPECIAL;
        if (i < SYNTH_N_SPECIAL) {
            snprintf(t, SYNTH_PIECE_MAX, "%s", special[i]);
            v->types[i] = special_type[i];
        } else if (byte < 256) {
            snprintf(t, SYNTH_PIECE_MAX, "<0x%02X>", (unsigned)byte);
            v->types[i] = SYNTH_TT_BYTE;
        } else {
            synth_filler_piece(byte - 256, t, SYNTH_PIECE_MAX);
            v->types[i] = SYNTH_TT_NORMAL;
            v->scores[i] = -(float)(byte - 256 + 1); /* earlier pieces merge first */
        }
        v->texts[i] = t;
    }
    return MICA_OK;
}

static mica_status synth_tokenizer_keys(gguf_writer *w, int32_t n_vocab, mica_err *err)
{
    synth_vocab v = {0};
    mica_status st = synth_vocab_build(&v, n_vocab, err);
    if (st) goto done;
    if ((st = gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) ||
        (st = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", v.texts, (uint64_t)n_vocab)) ||
        (st = gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_F32, v.scores,
                                  (uint64_t)n_vocab)) ||
        (st = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_I32, v.types,
                                  (uint64_t)n_vocab)) ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0)) ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) ||
        (st = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true)) ||
        (st = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false)))
        st = core_fail(err, st, "synthetic model: cannot store the vocabulary (%s)",
                       mica_status_str(st));
done:
    synth_vocab_free(&v);
    return st;
}

/* "<arch>.<key>" */
static mica_status synth_arch_u32(gguf_writer *w, const model_synth_params *p, const char *key,
                                  uint32_t v)
{
    char k[96];
    snprintf(k, sizeof k, "%s.%s", synth_archs[p->arch].name, key);
    return gguf_writer_set_u32(w, k, v);
}

static mica_status synth_arch_f32(gguf_writer *w, const model_synth_params *p, const char *key,
                                  float v)
{
    char k[96];
    snprintf(k, sizeof k, "%s.%s", synth_archs[p->arch].name, key);
    return gguf_writer_set_f32(w, k, v);
}

static mica_status synth_model_keys(gguf_writer *w, const model_synth_params *p, mica_err *err)
{
    char name[96];
    if (p->n_expert)
        snprintf(name, sizeof name, "mica synthetic MoE %dx top-%d", p->n_expert, p->n_expert_used);
    else
        snprintf(name, sizeof name, "mica synthetic dense %s", synth_archs[p->arch].name);
    const uint32_t head_dim = (uint32_t)(p->n_embd / p->n_head);
    mica_status st;
    if ((st = gguf_writer_set_str(w, "general.architecture", synth_archs[p->arch].name)) ||
        (st = gguf_writer_set_str(w, "general.name", name)) ||
        (st = synth_arch_u32(w, p, "vocab_size", (uint32_t)p->n_vocab)) ||
        (st = synth_arch_u32(w, p, "context_length", (uint32_t)p->n_ctx)) ||
        (st = synth_arch_u32(w, p, "embedding_length", (uint32_t)p->n_embd)) ||
        (st = synth_arch_u32(w, p, "block_count", (uint32_t)p->n_layer)) ||
        (st = synth_arch_u32(w, p, "feed_forward_length", (uint32_t)p->n_ff)) ||
        (st = synth_arch_u32(w, p, "attention.head_count", (uint32_t)p->n_head)) ||
        (st = synth_arch_u32(w, p, "attention.head_count_kv", (uint32_t)p->n_head_kv)) ||
        (st = synth_arch_u32(w, p, "rope.dimension_count", head_dim)) ||
        (st = synth_arch_f32(w, p, "rope.freq_base", p->rope_base)) ||
        (st = synth_arch_f32(w, p, "attention.layer_norm_rms_epsilon", p->norm_eps)))
        goto fail;
    if (p->n_expert &&
        ((st = synth_arch_u32(w, p, "expert_count", (uint32_t)p->n_expert)) ||
         (st = synth_arch_u32(w, p, "expert_used_count", (uint32_t)p->n_expert_used))))
        goto fail;
    return synth_tokenizer_keys(w, p->n_vocab, err);
fail:
    return core_fail(err, st, "synthetic model: cannot store its metadata (%s)",
                     mica_status_str(st));
}

/* ---- the file ------------------------------------------------------------------------- */

/* Progress over both steps of llama_mix: writing the F16 file is the first half. */
typedef struct synth_steps {
    const model_synth_params *p;
    int64_t n; /* tensors */
    int n_steps;
} synth_steps;

static void synth_progress(const synth_steps *st, int step, int64_t done)
{
    const int64_t per = st->n + 1;
    if (st->p->progress) st->p->progress(st->p->progress_ctx, step * per + done, st->n_steps * per);
}

/* quant_write reports done = 0..n (n tensors, then the file): the second step's 1..n+1. */
static void synth_quant_progress(void *ctx, const char *what, const char *item, int64_t done,
                                 int64_t total)
{
    synth_progress(ctx, 1, done + 1);
}

/* Writes every tensor as model_synth writes it (F32, or F16 on the way to llama_mix). */
static mica_status synth_write_file(const char *path, const synth_steps *steps, mica_err *err)
{
    const model_synth_params *p = steps->p;
    const int64_t n = steps->n;
    const int32_t row_max = p->n_embd > p->n_ff ? p->n_embd : p->n_ff;
    mica_status st;
    gguf_writer *w = gguf_writer_new();
    void **data = core_calloc((size_t)n, sizeof *data);
    float *row = core_calloc((size_t)row_max, sizeof *row);
    if (!w || !data || !row) {
        st = core_fail(err, MICA_ENOMEM, "synthetic model: out of memory");
        goto done;
    }
    if ((st = synth_model_keys(w, p, err))) goto done;
    for (int64_t i = 0; i < n; i++) {
        if ((st = synth_add_tensor(w, p, i, row, &data[i], err))) goto done;
        synth_progress(steps, 0, i + 1);
    }
    if ((st = gguf_writer_write(w, path, err))) goto done;
    synth_progress(steps, 0, n + 1);
done:
    if (data)
        for (int64_t i = 0; i < n; i++) free(data[i]);
    free(data);
    free(row);
    gguf_writer_free(w);
    return st;
}

/* llama_mix: the F16 model to path.f16.tmp, then llama-quantize's mix of it to path. */
static mica_status synth_write_mix(const char *path, synth_steps *steps, mica_err *err)
{
    char f16[4096];
    if ((size_t)snprintf(f16, sizeof f16, "%s.f16.tmp", path) >= sizeof f16)
        return core_fail(err, MICA_EINVAL, "%s: path too long", path);
    mica_status st = synth_write_file(f16, steps, err);
    if (st) return st;
    const quant_params qp = {
        .type = steps->p->type,
        .n_threads = steps->p->n_threads,
        .progress = synth_quant_progress,
        .progress_ctx = steps,
    };
    quant_plan plan;
    st = quant_model_file(f16, path, &qp, &plan, err);
    quant_plan_free(&plan);
    unlink(f16);
    return st;
}

mica_status model_synth_write(const char *path, const model_synth_params *p, mica_err *err)
{
    mica_status st = model_synth_check(p, err);
    if (st) return st;
    synth_steps steps = {p, synth_n_tensors(p), synth_via_f16(p) ? 2 : 1};
    return steps.n_steps == 2 ? synth_write_mix(path, &steps, err)
                              : synth_write_file(path, &steps, err);
}
