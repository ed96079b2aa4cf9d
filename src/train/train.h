/*
 * train.h - training on the CPU: a model held as F32 parameters with gradients, a forward pass
 * that keeps the activations its backward pass needs, the backward pass, LoRA adapters trained
 * on a frozen base, and AdamW with gradient clipping and a warmup + cosine schedule.
 *
 * Architectures: `llama` (tied or untied output; with experts = Mixtral-style MoE) and `qwen2`
 * (q/k/v biases). The training forward computes what model/forward.c computes for the same
 * weights (same element-wise numerics, same matmul kernels), so a trained model written back
 * to GGUF runs in `mica run` as it trained.
 *
 * Batches are n_seq sequences of n_tok tokens each, every sequence starting at position 0;
 * targets[i] < 0 leaves position i out of the loss (padding, prompt tokens), and the loss is
 * the mean cross-entropy over the other positions. Results do not depend on the number of
 * threads: every output element is summed by one thread in a fixed order.
 *
 * Does not own: datasets and tokenization (the CLI), the adapter file format (model/lora.h,
 * which train_lora_write calls). Called by the `mica train` / `mica finetune` commands and tests.
 */
#ifndef MICA_TRAIN_H
#define MICA_TRAIN_H

#include "model/model.h"

/* One parameter tensor: ggml shape (ne[0] contiguous), values and gradients. */
typedef struct train_tensor {
    char name[GGUF_MAX_NAME];
    int n_dims;
    int64_t ne[3];
    int64_t n;              /* elements */
    float *w;               /* (n) values */
    float *g;               /* (n) gradients; NULL when frozen */
    bool decay;             /* AdamW weight decay applies (matrices, not norms or biases) */
    float *adam_m, *adam_v; /* optimizer moments, allocated on the first step */
} train_tensor;

/* LoRA on one weight: y += scale * B (A dropout(x)). */
typedef struct train_lora {
    train_tensor *a; /* [n_in, r]: r rows of n_in (PEFT's lora_A) */
    train_tensor *b; /* [r, n_out]: n_out rows of r */
    float scale;     /* alpha / r */
} train_lora;

/* The weights of one layer LoRA may adapt, in the order of the `train_lora_target` names. */
typedef enum train_lora_site {
    TRAIN_LORA_Q,
    TRAIN_LORA_K,
    TRAIN_LORA_V,
    TRAIN_LORA_O,
    TRAIN_LORA_GATE,
    TRAIN_LORA_UP,
    TRAIN_LORA_DOWN,
    TRAIN_LORA_N_SITES
} train_lora_site;

typedef struct train_layer {
    train_tensor *attn_norm;    /* (n_embd) */
    train_tensor *wq, *wk, *wv; /* [n_embd, n_head*head_dim], [n_embd, n_head_kv*head_dim] */
    train_tensor *bq, *bk, *bv; /* qwen2 biases, NULL when absent */
    train_tensor *wo;           /* [n_head*head_dim, n_embd] */
    train_tensor *ffn_norm;     /* (n_embd) */
    train_tensor *ffn_gate, *ffn_up, *ffn_down; /* dense: [n_embd, n_ff], [n_ff, n_embd] */
    train_tensor *gate_inp;                     /* MoE router: [n_embd, n_expert] */
    train_tensor *gate_exps, *up_exps;          /* [n_embd, n_ff_exp, n_expert] */
    train_tensor *down_exps;                    /* [n_ff_exp, n_embd, n_expert] */
    train_lora lora[TRAIN_LORA_N_SITES];        /* a NULL: not adapted */
} train_layer;

typedef struct train_model {
    const model_arch *arch;
    model_hparams hp;
    train_tensor **tensors; /* every tensor, base then LoRA, in file order */
    int n_tensors;
    train_tensor *tok_embd;    /* [n_embd, n_vocab] */
    train_tensor *output_norm; /* (n_embd) */
    train_tensor *output;      /* [n_embd, n_vocab]; == tok_embd when tied */
    train_layer *layers;       /* n_layer */
    train_lora output_lora;    /* LoRA on the output matrix (a NULL: none) */
    float lora_dropout;        /* probability of zeroing an element of A's input */
    float moe_aux_coef;        /* weight of the load-balancing loss; 0: none */
} train_model;

/* The shape of a model trained from scratch. */
typedef struct train_shape {
    const char *arch; /* "llama" or "qwen2" */
    int32_t n_vocab, n_ctx, n_embd, n_layer, n_head, n_head_kv;
    int32_t n_ff;                    /* dense FFN size, or per-expert size with experts */
    int32_t n_expert, n_expert_used; /* 0, 0: dense */
    bool tied, qkv_bias;
    float rope_base, norm_eps;
} train_shape;

/* A fresh model: matrices N(0, 0.02) (the output projections wo and down divided by
 * sqrt(2 n_layer), as GPT-2 does), norms 1, biases 0, all from seed. MICA_EINVAL names a bad
 * field. */
mica_status train_model_init(train_model **out, const train_shape *s, uint64_t seed, mica_err *err);
/* The weights of a loaded model, dequantized to F32, all trainable. MICA_EUNSUPPORTED for the
 * parts training does not cover (q/k norms, granite scales, shared experts, biases other than
 * q/k/v's, an output bias). */
mica_status train_model_from_model(train_model **out, const model *m, mica_err *err);
void train_model_free(train_model *tm);

/* Writes the model as an F32 GGUF file that model_load reads: every key of kv_src (the source
 * model or a vocabulary file; may be NULL), then the architecture's hyper-parameter keys, then
 * the base tensors (LoRA tensors are not part of it: train_lora_write). */
mica_status train_model_write(const train_model *tm, const char *path, const gguf_file *kv_src,
                              mica_err *err);

void train_model_zero_grad(train_model *tm);

/* ---- LoRA ---------------------------------------------------------------------------- */

typedef struct train_lora_cfg {
    const char *targets; /* comma-separated: q,k,v,o,gate,up,down, output (the untied output
                            matrix, so that an adapter can raise tokens the base never wrote);
                            query_key_value = q,k,v */
    int32_t rank;
    float alpha;   /* scale = alpha / rank */
    float dropout; /* on A's input, [0, 1) */
    uint64_t seed; /* A's initialisation */
} train_lora_cfg;

/* Freezes the base (drops its gradients) and adds adapters to every layer's chosen weights: A
 * Kaiming-uniform as PEFT (kaiming_uniform_ with a = sqrt(5): U(-1/sqrt(n_in), 1/sqrt(n_in))),
 * B zero. Dense FFNs only. Once per model. MICA_EINVAL for an unknown target name, a rank
 * outside [1, min(n_in, n_out)], alpha <= 0, dropout outside [0, 1), a second call;
 * MICA_EUNSUPPORTED for FFN targets on experts. */
mica_status train_lora_add(train_model *tm, const train_lora_cfg *cfg, mica_err *err);

/* Writes the adapters in llama.cpp's GGUF adapter format (lora_write) with alpha. */
mica_status train_lora_write(const train_model *tm, const char *path, float alpha, mica_err *err);

/* ---- forward and backward ------------------------------------------------------------- */

/* Saved activations and their gradients for batches of n_seq sequences of n_tok tokens. */
typedef struct train_work train_work;

mica_status train_work_new(train_work **out, const train_model *tm, int32_t n_seq, int32_t n_tok,
                           mica_err *err);
void train_work_free(train_work *w);

/* tokens and targets hold n_seq * n_tok ids (sequence-major). dropout_seed draws the LoRA
 * dropout masks of this pass (used only when tm->lora_dropout > 0 and train is true; train
 * false is evaluation: no dropout). *loss receives the mean cross-entropy over the positions
 * with a target (0 when there are none) plus the load-balancing loss when enabled. */
mica_status train_forward(train_model *tm, train_work *w, tensor_pool *pool, const int32_t *tokens,
                          const int32_t *targets, bool train, uint64_t dropout_seed, float *loss,
                          mica_err *err);
/* Logits of the last forward: n_seq * n_tok rows of n_vocab. */
const float *train_work_logits(const train_work *w);
/* Positions of the last forward that had a target. */
int64_t train_work_n_targets(const train_work *w);

/* Adds scale * d(loss)/d(param) of the last forward to every trainable tensor's g (scale is
 * 1 / accumulation steps when gradients are accumulated over micro-batches). MICA_ENOMEM for
 * the attention's scratch (allocated on the first call with a pool of that size). */
mica_status train_backward(train_model *tm, train_work *w, tensor_pool *pool, float scale,
                           mica_err *err);

/* ---- optimizer ----------------------------------------------------------------------- */

typedef struct train_opt_cfg {
    float lr;           /* peak learning rate */
    float beta1, beta2; /* 0.9, 0.999 */
    float eps;          /* 1e-8 */
    float weight_decay; /* decoupled; matrices only (train_tensor.decay) */
    float clip;         /* global gradient norm limit; 0: no clipping */
    int64_t warmup;     /* steps of linear warmup */
    int64_t total;      /* steps of the whole run (cosine decay to 0 at the end) */
} train_opt_cfg;

train_opt_cfg train_opt_default(void);

/* Learning rate of update number step (0-based) as transformers'
 * get_cosine_schedule_with_warmup: lr * step / warmup during warmup, then
 * lr * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))). */
float train_lr_at(const train_opt_cfg *c, int64_t step);

/* Global L2 norm of every trainable gradient (summed in double). */
double train_grad_norm(const train_model *tm);

/* One update (number step, 0-based) of every trainable tensor: clips the gradients to c->clip
 * by global norm (PyTorch's clip_grad_norm_: factor clip / (norm + 1e-6) when below 1), then
 * AdamW with bias correction from step 1 and decoupled weight decay. Returns the norm before
 * clipping. Gradients are left as they are (train_model_zero_grad). MICA_ENOMEM for the
 * moments. */
mica_status train_adamw_step(train_model *tm, const train_opt_cfg *c, int64_t step, double *norm,
                             mica_err *err);

/* Allocates the AdamW moments of every trainable tensor that has none (zeros). */
mica_status train_opt_alloc(train_model *tm, mica_err *err);

/* ---- checkpoints (train_ckpt.c) -------------------------------------------------------- */

/* Writes the trainable tensors, their AdamW moments and step (updates done) to path (through
 * path.tmp, renamed when complete). */
mica_status train_checkpoint_write(train_model *tm, int64_t step, const char *path, mica_err *err);
/* Restores what train_checkpoint_write saved into a model built the same way (same shape and
 * adapters); MICA_EFORMAT names a missing or different tensor. */
mica_status train_checkpoint_read(train_model *tm, const char *path, int64_t *step, mica_err *err);

#endif
