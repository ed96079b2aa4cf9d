/*
 * model_synth.c - writes random-weight "llama" models (dense or Mixtral-style MoE) as GGUF
 * files for benchmarks and tests. The tensor list is one indexed table (synth_spec) that both
 * the parameter count and the writer walk, so the two cannot disagree. Each tensor draws its
 * values from its own xorshift stream seeded by (seed, index), so a file does not depend on
 * the order the tensors are generated in. Matrices are uniform in +-1/sqrt(fan_in) (fan_in =
 * ne[0], the input size), embeddings in +-1, norm weights are 1: activations stay O(1).
 *
 * Does not own: the GGUF layout (gguf/ writes it), quantization (tensor_from_f32), checking
 * that the file loads (tests/model/test_model_synth.c does). Called by bench/ and tests.
 * Never prints and never exits: errors come back as mica_status with a message.
 */
#include "model_synth.h"

#include "gguf/gguf.h"
#include "tensor/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#define SYNTH_NORM_EPS  1e-5f

/* llama.cpp's token types (llama_token_type). */
enum { SYNTH_TT_NORMAL = 1, SYNTH_TT_UNKNOWN = 2, SYNTH_TT_CONTROL = 3, SYNTH_TT_BYTE = 6 };

model_synth_params model_synth_default_params(void)
{
    return (model_synth_params){
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

/* Every matrix row (ne[0]) is n_embd or n_ff long, so both must fill whole blocks. */
static mica_status synth_check_type(const model_synth_params *p, mica_err *err)
{
    uint32_t bs = 1;
    if (!tensor_type_supported(p->type) || !gguf_ttype_layout(p->type, &bs, NULL))
        return core_fail(err, MICA_EINVAL, "synthetic model: weight type %s is not supported",
                         gguf_ttype_name(p->type));
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

mica_status model_synth_check(const model_synth_params *p, mica_err *err)
{
    SYNTH_TRY(synth_range(err, "n_vocab", p->n_vocab, MODEL_SYNTH_MIN_VOCAB, SYNTH_MAX_VOCAB));
    SYNTH_TRY(synth_range(err, "n_ctx", p->n_ctx, 1, SYNTH_MAX_CTX));
    SYNTH_TRY(synth_range(err, "n_embd", p->n_embd, 1, SYNTH_MAX_EMBD));
    SYNTH_TRY(synth_range(err, "n_layer", p->n_layer, 1, SYNTH_MAX_LAYER));
    SYNTH_TRY(synth_range(err, "n_ff", p->n_ff, 1, SYNTH_MAX_FF));
    SYNTH_TRY(synth_check_heads(p, err));
    SYNTH_TRY(synth_check_experts(p, err));
    return synth_check_type(p, err);
}

/* ---- the tensor table ----------------------------------------------------------------- */

typedef enum synth_kind { SYNTH_EMBEDDING, SYNTH_NORM, SYNTH_MATRIX } synth_kind;

typedef struct synth_spec {
    char name[GGUF_MAX_NAME];
    synth_kind kind;
    uint32_t n_dims;
    int64_t ne[3];   /* ne[0] contiguous */
    bool per_expert; /* ne[2] experts, of which one token reads n_expert_used */
} synth_spec;

static int64_t synth_per_layer(const model_synth_params *p)
{
    return p->n_expert ? 10 : 9;
}

/* token_embd, the layers, output_norm, output (the order llama.cpp's converters write). */
static int64_t synth_n_tensors(const model_synth_params *p)
{
    return 3 + (int64_t)p->n_layer * synth_per_layer(p);
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

/* The k-th tensor of a layer: llama.cpp's names; MoE replaces the three dense FFN matrices
 * by the router and the stacked expert matrices (Mixtral's layout). */
static void synth_layer_spec(const model_synth_params *p, int il, int64_t k, synth_spec *s)
{
    static const char *const dense[] = {"attn_norm", "attn_q",   "attn_k", "attn_v",  "attn_output",
                                        "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
    static const char *const moe[] = {
        "attn_norm", "attn_q",       "attn_k",        "attn_v",      "attn_output",
        "ffn_norm",  "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
    const int64_t e = p->n_embd, ff = p->n_ff, nx = p->n_expert;
    const int64_t nkv = (int64_t)p->n_head_kv * (p->n_embd / p->n_head);
    snprintf(s->name, sizeof s->name, "blk.%d.%s.weight", il, p->n_expert ? moe[k] : dense[k]);
    switch (k) {
    case 0:
        synth_set(s, SYNTH_NORM, e, 1, 1);
        return;
    case 1:
        synth_set(s, SYNTH_MATRIX, e, e, 1);
        return;
    case 2:
    case 3:
        synth_set(s, SYNTH_MATRIX, e, nkv, 1);
        return;
    case 4:
        synth_set(s, SYNTH_MATRIX, e, e, 1);
        return;
    case 5:
        synth_set(s, SYNTH_NORM, e, 1, 1);
        return;
    default:
        break;
    }
    if (!p->n_expert) {
        if (k == 8)
            synth_set(s, SYNTH_MATRIX, ff, e, 1);
        else
            synth_set(s, SYNTH_MATRIX, e, ff, 1);
        return;
    }
    if (k == 6)
        synth_set(s, SYNTH_MATRIX, e, nx, 1);
    else if (k == 9)
        synth_set(s, SYNTH_MATRIX, ff, e, nx);
    else
        synth_set(s, SYNTH_MATRIX, e, ff, nx);
    /* One expert is still a stack of one, as llama.cpp writes it. */
    if (k != 6) {
        s->n_dims = 3;
        s->per_expert = true;
    }
}

static void synth_spec_at(const model_synth_params *p, int64_t i, synth_spec *s)
{
    const int64_t n = synth_n_tensors(p);
    memset(s, 0, sizeof *s);
    if (i == 0) {
        snprintf(s->name, sizeof s->name, "token_embd.weight");
        synth_set(s, SYNTH_EMBEDDING, p->n_embd, p->n_vocab, 1);
    } else if (i == n - 2) {
        snprintf(s->name, sizeof s->name, "output_norm.weight");
        synth_set(s, SYNTH_NORM, p->n_embd, 1, 1);
    } else if (i == n - 1) {
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
    const uint32_t type = s.kind == SYNTH_NORM ? GGUF_T_F32 : p->type;
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

static mica_status synth_model_keys(gguf_writer *w, const model_synth_params *p, mica_err *err)
{
    char name[96];
    if (p->n_expert)
        snprintf(name, sizeof name, "mica synthetic MoE %dx top-%d", p->n_expert, p->n_expert_used);
    else
        snprintf(name, sizeof name, "mica synthetic dense");
    const uint32_t head_dim = (uint32_t)(p->n_embd / p->n_head);
    mica_status st;
    if ((st = gguf_writer_set_str(w, "general.architecture", "llama")) ||
        (st = gguf_writer_set_str(w, "general.name", name)) ||
        (st = gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)p->n_vocab)) ||
        (st = gguf_writer_set_u32(w, "llama.context_length", (uint32_t)p->n_ctx)) ||
        (st = gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)p->n_embd)) ||
        (st = gguf_writer_set_u32(w, "llama.block_count", (uint32_t)p->n_layer)) ||
        (st = gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)p->n_ff)) ||
        (st = gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)p->n_head)) ||
        (st = gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)p->n_head_kv)) ||
        (st = gguf_writer_set_u32(w, "llama.rope.dimension_count", head_dim)) ||
        (st = gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f)) ||
        (st = gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", SYNTH_NORM_EPS)))
        goto fail;
    if (p->n_expert &&
        ((st = gguf_writer_set_u32(w, "llama.expert_count", (uint32_t)p->n_expert)) ||
         (st = gguf_writer_set_u32(w, "llama.expert_used_count", (uint32_t)p->n_expert_used))))
        goto fail;
    return synth_tokenizer_keys(w, p->n_vocab, err);
fail:
    return core_fail(err, st, "synthetic model: cannot store its metadata (%s)",
                     mica_status_str(st));
}

/* ---- the file ------------------------------------------------------------------------- */

static void synth_progress(const model_synth_params *p, int64_t done, int64_t total)
{
    if (p->progress) p->progress(p->progress_ctx, done, total);
}

mica_status model_synth_write(const char *path, const model_synth_params *p, mica_err *err)
{
    mica_status st = model_synth_check(p, err);
    if (st) return st;
    const int64_t n = synth_n_tensors(p);
    const int32_t row_max = p->n_embd > p->n_ff ? p->n_embd : p->n_ff;
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
        synth_progress(p, i + 1, n + 1);
    }
    if ((st = gguf_writer_write(w, path, err))) goto done;
    synth_progress(p, n + 1, n + 1);
done:
    if (data)
        for (int64_t i = 0; i < n; i++) free(data[i]);
    free(data);
    free(row);
    gguf_writer_free(w);
    return st;
}
