/*
 * lora.h - LoRA adapters in llama.cpp's GGUF adapter format: loading one against a base model
 * (validated: architecture, tensor names, shapes, rank), applying adapters at inference as
 * llama.cpp's build_lora_mm does (y = W x + s * B (A x), s = scale * alpha / rank, or s = scale
 * when alpha is 0), per sequence of a batch; merging adapters into a model file; writing an
 * adapter file. The format is described in docs/lora.md and
 * ../shared/testdata/llamacpp/lora/README.md.
 *
 * Does not own: the forward pass (forward.c calls lora_work_apply after each adapted matmul),
 * sequences (engine/ says which adapters each sequence uses), training the matrices (train/).
 */
#ifndef MICA_LORA_H
#define MICA_LORA_H

#include "model/model.h"

/* The weights an adapter may adapt: per layer, then the model-level ones. */
typedef enum lora_target {
    LORA_ATTN_Q,
    LORA_ATTN_K,
    LORA_ATTN_V,
    LORA_ATTN_OUT,
    LORA_FFN_GATE,
    LORA_FFN_UP,
    LORA_FFN_DOWN,
    LORA_FFN_GATE_INP, /* MoE router */
    LORA_FFN_GATE_EXPS,
    LORA_FFN_UP_EXPS,
    LORA_FFN_DOWN_EXPS,
    LORA_FFN_GATE_INP_SHEXP, /* qwen2moe's shared-expert gate: one output */
    LORA_FFN_GATE_SHEXP,
    LORA_FFN_UP_SHEXP,
    LORA_FFN_DOWN_SHEXP,
    LORA_N_LAYER_TARGETS,
    LORA_OUTPUT = LORA_N_LAYER_TARGETS,
    LORA_TOKEN_EMBD,
    LORA_N_TARGETS
} lora_target;

/* The base tensor name suffix of a target ("attn_q.weight"; "output.weight" for LORA_OUTPUT). */
const char *lora_target_suffix(lora_target t);

/* One adapted weight. Matmul targets: a [n_in, r(, n_expert)], b [r, n_out(, n_expert)] (ne
 * order, ne[0] contiguous: a holds r rows of n_in = PEFT's lora_A). LORA_TOKEN_EMBD: a
 * [r, n_vocab] (A transposed, as convert_lora_to_gguf writes it), b [r, n_embd]. */
typedef struct lora_weight {
    tensor_view a, b;
    int32_t rank; /* b.ne[0], as llama.cpp takes it */
} lora_weight;

typedef struct lora_adapter lora_adapter;

/* Loads an adapter GGUF and binds it to base: general.type "adapter", adapter.type "lora",
 * general.architecture equal to base's, adapter.lora.alpha (F32; absent = 0), every tensor a
 * `<base tensor>.lora_a` / `.lora_b` pair whose base tensor exists, is adaptable and has
 * matching shape, rank <= both dimensions of the base weight; `*_norm.weight` tensors are
 * ignored as llama.cpp does. Errors name the file and the tensor. The adapter keeps its file
 * mapped and must not outlive base. */
mica_status lora_load(lora_adapter **out, const model *base, const char *path, mica_err *err);
void lora_free(lora_adapter *a);

const model *lora_base(const lora_adapter *a);
const char *lora_path(const lora_adapter *a);
float lora_alpha(const lora_adapter *a);
/* The adapted weight of layer il (ignored for model-level targets), NULL when not adapted. */
const lora_weight *lora_find(const lora_adapter *a, int il, lora_target t);
/* The same by the base tensor's name ("blk.3.attn_q.weight"). *t receives its target. */
const lora_weight *lora_find_name(const lora_adapter *a, const char *base_name, lora_target *t);
/* llama.cpp's llama_adapter_lora_weight::get_scale: scale * alpha / rank, or scale when the
 * adapter's alpha is 0. */
float lora_weight_scale(const lora_adapter *a, const lora_weight *w, float scale);

/* ---- applying adapters to batches ----------------------------------------------------- */

#define LORA_MAX_PER_SEQ 8  /* adapters applied to one sequence at once */
#define LORA_MAX_ACTIVE  32 /* distinct adapters over all sequences of a context */

/* Which adapters each sequence of a context uses, and scratch to apply them to a batch. */
typedef struct lora_work lora_work;

mica_status lora_work_new(lora_work **out, const model *m, int32_t n_seq, int32_t n_batch,
                          mica_err *err);
void lora_work_free(lora_work *lw);

/* Sequence seq (-1: every sequence) uses adapters[0..n) with scales[0..n) from now on (n = 0
 * detaches them all). Adapters must be loaded for this model and outlive their use; a scale
 * of 0 leaves an adapter out, as in llama.cpp. */
mica_status lora_work_set(lora_work *lw, int32_t seq, const lora_adapter *const *adapters,
                          const float *scales, int32_t n, mica_err *err);

/* Prepares a batch: which of its tokens each active adapter applies to, and with what scale.
 * Returns false when no adapter applies to any token (the forward pass then skips LoRA). */
bool lora_work_begin(lora_work *lw, const model_batch_tok *batch, int32_t n);

/* Which weights and which batch tokens the rows of one matmul belong to: layer il, matrix
 * `expert` of a 3-D weight (0 otherwise), and row r is batch token rows[r] / div (rows NULL:
 * row r is token r). */
typedef struct lora_rows {
    int il;
    int64_t expert;
    const int32_t *rows;
    int32_t div;
} lora_rows;

/* y[r] += s * B (A x[r]) for every adapter of target t that applies to row r's token (after
 * lora_work_begin), in attach order, as llama.cpp adds each adapter's scaled product. x: n
 * rows of the weight's n_in, y: n rows of its n_out. */
void lora_work_apply(lora_work *lw, tensor_pool *pool, lora_target t, const lora_rows *rows,
                     const float *x, int32_t n, float *y);

/* Token-embedding adapters: x[t] += s * B a_tok for each batch token t (x: n rows of n_embd,
 * the looked-up embeddings before any scale). */
void lora_work_embed(lora_work *lw, const model_batch_tok *batch, int32_t n, float *x);

/* ---- files ---------------------------------------------------------------------------- */

/* Writes base_path with adapters[0..n) (scales[0..n)) merged into its weights, W' = W +
 * s * B A, to out_path (through out_path.tmp, renamed when complete): every key and tensor of
 * the base in order, each tensor in its base type (quantized ones dequantized, merged and
 * quantized again the way mica quantize does). n_threads 0: every CPU. */
mica_status lora_merge_file(const char *base_path, const char *const *adapter_paths,
                            const float *scales, int32_t n, const char *out_path, int n_threads,
                            mica_err *err);

/* One adapted weight to write: base tensor name, A and B as floats in ggml layout (a: a_ne,
 * b: b_ne, see lora_weight; 3-D for experts). */
typedef struct lora_write_weight {
    const char *base_name;
    int64_t a_ne[3], b_ne[3];
    const float *a, *b;
} lora_write_weight;

/* Writes an adapter as llama.cpp's convert_lora_to_gguf does: general.architecture,
 * general.type = "adapter", adapter.type = "lora", general.name, adapter.lora.alpha (F32),
 * general.quantization_version = 2, then for each weight `<base>.lora_a` and `.lora_b` in
 * `type` (F32, F16, BF16 or Q8_0). Through path.tmp, renamed when complete. */
mica_status lora_write(const char *path, const char *arch, const char *name, float alpha,
                       uint32_t type, const lora_write_weight *w, size_t n, mica_err *err);

#endif
