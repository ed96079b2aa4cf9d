/*
 * train_int.h - what the files of src/train share: the saved activations of a pass
 * (train_work), the element-wise operations with their derivatives, and the linear layer
 * (forward with tensor/'s matmul, backward as two more matmuls over transposed copies).
 */
#ifndef MICA_TRAIN_INT_H
#define MICA_TRAIN_INT_H

#include "train/train.h"

/* The slot of train_acts' LoRA arrays that the output matrix's adapter uses in train_work.head
 * (the head has one adapted weight; any slot would do). */
#define TRAIN_LORA_HEAD TRAIN_LORA_Q

/* Saved activations of one layer for N = n_seq * n_tok rows. */
typedef struct train_acts {
    float *x;         /* (N, n_embd) layer input */
    float *rstd1;     /* (N) 1 / rms of x */
    float *xn1;       /* (N, n_embd) attention norm output */
    float *q, *k, *v; /* (N, n_head*hd), (N, n_head_kv*hd): after biases and RoPE */
    float *p;         /* (n_seq, n_head, n_tok, n_tok) attention probabilities (causal) */
    float *att;       /* (N, n_head*hd) attention output before wo */
    float *x2;        /* (N, n_embd) after the attention residual */
    float *rstd2;     /* (N) */
    float *xn2;       /* (N, n_embd) FFN norm output */
    float *g, *u, *h; /* (R, ff) gate and up products, h = silu(g) * u; R = N, or N * k rows
                         sorted by expert for MoE */
    /* Mixture of experts */
    float *probs;   /* (N, n_expert) router softmax */
    int32_t *sel;   /* (N, k) chosen experts, largest first */
    float *sel_w;   /* (N, k) their weights after renormalisation */
    float *sel_sum; /* (N) sum of the chosen probabilities (before the clamp) */
    float *eo;      /* (N * k, n_embd) expert outputs in (token, slot) order */
    int32_t *perm;  /* (N * k) expert-sorted row -> token * k + slot */
    int32_t *off;   /* (n_expert + 1) first sorted row of each expert */
    /* LoRA, per site */
    float *lora_xd[TRAIN_LORA_N_SITES];     /* (N, n_in) A's input after dropout */
    uint8_t *lora_keep[TRAIN_LORA_N_SITES]; /* (N, n_in) kept elements */
    float *lora_u[TRAIN_LORA_N_SITES];      /* (N, r) A xd */
} train_acts;

struct train_work {
    void **allocs; /* every buffer, this struct first (train_work_free) */
    int n_allocs;
    int32_t n_seq, n_tok, n; /* n = n_seq * n_tok rows */
    int n_tensors;           /* of the model it was made for (adapters added since: refused) */
    bool dropout_bufs;       /* made with LoRA dropout buffers */
    train_acts *acts;        /* n_layer */
    train_acts head;         /* the output LoRA's buffers, in slot TRAIN_LORA_HEAD */
    const int32_t *tokens, *targets; /* of the last forward (the caller's arrays) */
    int64_t n_targets;
    float *rope_cs;  /* (n_tok, n_rot) cos, sin per position */
    float *xf;       /* (N, n_embd) final residual */
    float *rstdf;    /* (N) */
    float *xnf;      /* (N, n_embd) output norm output */
    float *logits;   /* (N, n_vocab) */
    float *expert_f; /* (n_layer, n_expert) fraction of tokens routed to each expert */
    float dropout_p; /* LoRA dropout of the last forward (0 in evaluation) */
    /* gradients of activations, reused layer after layer */
    float *dx, *dx2, *dxn, *dq, *dk, *dv, *datt;
    float *dg, *du, *dh;      /* (R, ff) */
    float *dsel_w;            /* (N, k) */
    float *dprobs;            /* (N, n_expert) */
    float *dlogits;           /* (N, n_vocab) */
    int32_t *attn_len_causal; /* (n_tok) t + 1: the keys query t sees */
    int32_t *attn_len_full;   /* (n_tok) n_tok */
    float *attn_scratch;      /* (attn_threads, train_attn_scratch_floats) */
    int attn_threads;
    /* scratch */
    float *xg, *yg;                      /* (N, max(n_embd, ff)) gathered rows of one expert */
    float *ffn_out;                      /* (N, n_embd) a block's output before the residual add */
    float *tmp;                          /* (N, max width) */
    float *t_w, *t_x, *t_dy, *t_out;     /* transposes and products of train_linear_bwd */
    float *lora_dy, *lora_du, *lora_dxd; /* (N, widest) train_lora_bwd */
};

/* Appends a tensor (values and gradients zero) to tm's list; NULL when out of memory. */
train_tensor *train_tensor_add(train_model *tm, const char *name, int n_dims, int64_t ne0,
                               int64_t ne1, int64_t ne2);

/* The weight LoRA site s adapts in layer l: a MoE layer's gate/up/down are its 3-D expert
 * tensors (one adapter pair per expert); NULL when absent. */
train_tensor *train_lora_site_weight(const train_layer *l, train_lora_site s);

/* ---- linear layers (train_ops.c) ------------------------------------------------------ */

/* y (n rows of n_out) = x (n rows of n_in) W^T, W n_out rows of n_in: tensor_matmul. */
void train_linear_fwd(tensor_pool *pool, const float *W, int64_t n_in, int64_t n_out,
                      const float *x, int64_t n, float *y);
/* dx += dy W (dx NULL: skipped); dW += dy^T x (dW NULL: skipped). */
void train_linear_bwd(train_work *w, tensor_pool *pool, const float *W, float *dW, int64_t n_in,
                      int64_t n_out, const float *x, const float *dy, int64_t n, float *dx);

/* y += the LoRA product of site s of layer il for x (forward; saves A's input and A x). */
void train_lora_fwd(train_work *w, tensor_pool *pool, const train_lora *lo, train_acts *a,
                    train_lora_site s, const float *x, int64_t n_in, int64_t n_out, float *y,
                    uint64_t seed);
/* Gradients of A and B for dy, and dx += their part of the input gradient. */
void train_lora_bwd(train_work *w, tensor_pool *pool, const train_lora *lo, const train_acts *a,
                    train_lora_site s, const float *x, int64_t n_in, int64_t n_out, const float *dy,
                    float *dx);
/* The same for n rows that are rows [r0, r0 + n) of the site's saved buffers, with expert
 * `expert`'s slice of a 3-D (per-expert) adapter: the expert FFNs' rows sorted by expert. */
void train_lora_fwd_rows(train_work *w, tensor_pool *pool, const train_lora *lo, int expert,
                         train_acts *a, train_lora_site s, int64_t r0, int64_t n, const float *x,
                         int64_t n_in, int64_t n_out, float *y, uint64_t seed);
void train_lora_bwd_rows(train_work *w, tensor_pool *pool, const train_lora *lo, int expert,
                         const train_acts *a, train_lora_site s, int64_t r0, int64_t n,
                         const float *x, int64_t n_in, int64_t n_out, const float *dy, float *dx);

/* ---- element-wise (train_ops.c; ggml-cpu's numerics, as model/forward.c) --------------- */

/* y = x / rms(x) * w for n_rows rows of n; rstd receives 1 / rms per row. */
void train_rms_norm(const float *x, const float *w, float *y, float *rstd, int64_t n_rows,
                    int64_t n, float eps);
/* dx += d(rms_norm)/dx dy; dw += ... (dw NULL: skipped). */
void train_rms_norm_bwd(const float *x, const float *w, const float *rstd, const float *dy,
                        float *dx, float *dw, int64_t n_rows, int64_t n);
void train_swiglu_bwd(const float *g, const float *u, const float *dh, float *dg, float *du,
                      int64_t n);
void train_add(float *y, const float *x, int64_t n);

/* Top-k of one row of probabilities, largest first (model/forward.c's rule). */
/* llama.cpp's lower bound on the sum of the chosen weights when renormalising. */
#define TRAIN_MOE_MIN_SUM 6.103515625e-5f

/* ---- the attention core (train_attn.c) ------------------------------------------------- */

/* att = softmax(q k^T * scale, causal) v per sequence and head; saves the probabilities. */
void train_attn_fwd(const train_model *tm, train_work *w, tensor_pool *pool, train_acts *a);
/* Floats of scratch one thread of train_attn_bwd uses. */
size_t train_attn_scratch_floats(const train_work *w, const train_model *tm);
/* dq, dk, dv (overwritten) from datt; w->attn_scratch holds a thread's scratch per pool thread. */
void train_attn_bwd(const train_model *tm, train_work *w, tensor_pool *pool, const train_acts *a);

#endif
