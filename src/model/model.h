/*
 * model.h - architectures and the forward pass. A model is a GGUF mapping plus hyper-
 * parameters read from its metadata and tensor views bound by name; an architecture is a row
 * of data (model_arch) that the single forward pass consults, not a copy of the forward pass.
 * The KV cache memory is owned by the caller (engine/), which hands it in as a model_kv.
 */
#ifndef MICA_MODEL_H
#define MICA_MODEL_H

#include "core/core.h"
#include "gguf/gguf.h"
#include "tensor/tensor.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum model_rope { MODEL_ROPE_NORM, MODEL_ROPE_NEOX } model_rope;

/* Where an architecture normalises q and k, if at all. */
typedef enum model_qk_norm {
    MODEL_QK_NORM_NONE,
    MODEL_QK_NORM_HEAD, /* qwen3: per head, weight ne = [head_dim], before rope */
    MODEL_QK_NORM_FULL, /* olmoe: whole projection, weight ne = [n_head*head_dim] */
} model_qk_norm;

/* One row per architecture (llama.cpp's per-arch choices, which are hard-coded there too). */
typedef struct model_arch {
    const char *name;
    model_rope rope;
    model_qk_norm qk_norm;
    bool moe_renorm;           /* MoE: divide the top-k weights by their sum */
    bool granite;              /* embedding/residual/logit scales and attention.scale */
    bool output_required;      /* no tied-embedding fallback */
    const char *expert_ff_key; /* key of the per-expert FFN size, NULL: feed_forward_length */
} model_arch;

const model_arch *model_arch_find(const char *name, size_t len);

typedef struct model_hparams {
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim; /* key/query/value head size */
    int32_t n_rot;    /* rotated dimensions per head (<= head_dim) */
    int32_t n_ff;     /* dense FFN size */
    int32_t n_expert, n_expert_used;
    int32_t n_ff_exp;   /* per-expert FFN size */
    int32_t n_ff_shexp; /* shared expert FFN size (qwen2moe) */
    float norm_eps;
    float rope_base;
    bool rope_on;
    float embd_scale;     /* granite; 1 otherwise */
    float residual_scale; /* granite; 1 otherwise */
    float logit_scale;    /* granite: logits are divided by it; 1 otherwise */
    float attn_scale;     /* kq scale: 1/sqrt(head_dim) unless granite's attention.scale */
} model_hparams;

/* A view is absent when its data is NULL. Shapes are ggml ne, ne[0] contiguous. */
typedef struct model_layer {
    const float *attn_norm;           /* (n_embd) */
    tensor_view wq;                   /* [n_embd, n_head*head_dim] */
    tensor_view wk, wv;               /* [n_embd, n_head_kv*head_dim] */
    const float *bq, *bk, *bv;        /* qwen2 biases, NULL when absent */
    const float *q_norm, *k_norm;     /* qk-norm weights: (head_dim) or (n_head*head_dim) */
    tensor_view wo;                   /* [n_head*head_dim, n_embd] */
    const float *bo;                  /* NULL when absent */
    const float *ffn_norm;            /* (n_embd) */
    tensor_view ffn_gate, ffn_up;     /* dense: [n_embd, n_ff] */
    tensor_view ffn_down;             /* dense: [n_ff, n_embd] */
    tensor_view gate_inp;             /* MoE router: [n_embd, n_expert] */
    tensor_view gate_exps, up_exps;   /* [n_embd, n_ff_exp, n_expert] */
    tensor_view gate_up_exps;         /* merged: [n_embd, 2*n_ff_exp, n_expert], gate rows first;
                                         when present gate_exps/up_exps are absent */
    tensor_view down_exps;            /* [n_ff_exp, n_embd, n_expert] */
    const float *gate_inp_shexp;      /* (n_embd): shared expert gate, qwen2moe */
    tensor_view gate_shexp, up_shexp; /* [n_embd, n_ff_shexp] */
    tensor_view down_shexp;           /* [n_ff_shexp, n_embd] */
} model_layer;

typedef struct model {
    gguf_file *gguf;
    void *repacked; /* the interleaved copies of model_repack, or NULL */
    const model_arch *arch;
    model_hparams hp;
    tok_vocab *vocab;
    tensor_view tok_embd;     /* [n_embd, n_vocab] */
    const float *output_norm; /* (n_embd) */
    tensor_view output;       /* [n_embd, n_vocab]; the embedding when tied */
    const float *output_bias; /* (n_vocab) or NULL */
    model_layer *layers;      /* n_layer */
} model;

/* Maps PATH, reads hyper-parameters, binds and shape-checks every tensor, loads the vocab.
 * Errors: "PATH: tensor 'blk.0.attn_q.weight': missing", "PATH: key 'llama.block_count':
 * missing", "PATH: unsupported architecture 'x'"... */
mica_status model_load(model **out, const char *path, mica_err *err);
void model_free(model *m);

/* Every weight-matrix view of a layer, as offsets into model_layer. */
extern const size_t model_layer_matrices[];
extern const size_t model_n_layer_matrices;

/* Lays the weight matrices the CPU's kernels read faster interleaved (tensor_view_repack:
 * Q4_0 on AVX-512 VNNI) out that way, in memory the model then owns, and drops their file
 * pages from resident memory. Logits keep their bits. The embedding stays as it is (rows are
 * looked up one by one). Skipped when the copy would not fit in available memory or
 * MICA_NO_REPACK is set (not 0). For inference only: training and merging read file rows. */
mica_status model_repack(model *m, mica_err *err);

/* ---- forward pass --------------------------------------------------------------------- */

/* F32 KV cache memory for n_seq sequences of n_ctx positions each:
 * k/v: (n_layer, n_seq, n_ctx, n_head_kv*head_dim), the last dimension contiguous. */
typedef struct model_kv {
    float *k, *v;
    int32_t n_seq, n_ctx;
} model_kv;

/* One token of a batch: its id, its position in its sequence, which sequence, and whether
 * its logits are wanted. A batch may mix sequences; within a sequence positions must be
 * consecutive and every earlier position must already be in the cache. */
typedef struct model_batch_tok {
    int32_t token;
    int32_t pos;
    int32_t seq;
    bool logits;
} model_batch_tok;

/* Scratch memory for batches of up to n_batch tokens and contexts of up to n_ctx. */
typedef struct model_work model_work;

mica_status model_work_new(model_work **out, const model *m, int32_t n_batch, int32_t n_ctx,
                           int n_threads, mica_err *err);
void model_work_free(model_work *w);

/* What the routers chose since the work area was made or last reset: per layer and expert,
 * the tokens routed there and the sum of the gate weights they were given (after any
 * renormalisation). Dense models have n_expert 0 and no arrays. */
typedef struct model_moe_stats {
    int32_t n_layer, n_expert;
    uint64_t *n_tokens; /* (n_layer, n_expert) */
    double *weight_sum; /* (n_layer, n_expert) */
} model_moe_stats;

const model_moe_stats *model_work_moe_stats(const model_work *w);
void model_work_reset_moe_stats(model_work *w);

/* LoRA adapters (lora.h): the passes through w apply the adapters lw assigns to each batch
 * token's sequence (NULL: none). w does not own lw. */
typedef struct lora_work lora_work;
void model_work_set_lora(model_work *w, lora_work *lw);

/* Evaluates the batch (n <= n_batch), writing its K/V into the cache and, for each token
 * with .logits set, one row of n_vocab logits into `logits` (rows in batch order). */
mica_status model_forward(const model *m, model_work *w, model_kv *kv, tensor_pool *pool,
                          const model_batch_tok *batch, int32_t n, float *logits, mica_err *err);

/* The same pass without the output projection: hidden receives, for every token of the batch,
 * its final hidden state after the output norm (n rows of n_embd), what embeddings pool. */
mica_status model_forward_hidden(const model *m, model_work *w, model_kv *kv, tensor_pool *pool,
                                 const model_batch_tok *batch, int32_t n, float *hidden,
                                 mica_err *err);

/* ---- arithmetic shared with training (model_math.c) ------------------------------------ */

/* Softmax of x[0..n) in place. */
void model_softmax(float *x, int64_t n);
/* The cos, sin pairs of the n_rot/2 rotation angles at position pos: pair i turns by
 * pos * base^(-2i/n_rot). */
void model_rope_angles(int n_rot, int32_t pos, float base, float *cs);
/* Rotates the first n_rot dims of each head of one row by the angles cs: NORM turns
 * (x[2i], x[2i+1]), NEOX (x[i], x[i + n_rot/2]); inverse turns back (training's backward). */
void model_rope_row(float *row, int n_heads, int head_dim, int n_rot, const float *cs,
                    model_rope mode, bool inverse);
/* The k largest of probs[0..n_expert) in order (ties: lower id) and their values. */
void model_top_k(const float *probs, int n_expert, int k, int32_t *sel, float *sel_w);

#endif
