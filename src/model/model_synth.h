/*
 * model_synth.h - writes a random-weight model as a GGUF file that model_load (and so
 * mica_model_load) accepts: architecture "llama" with llama.cpp's tensor names and shapes,
 * dense SwiGLU or Mixtral-style Mixture-of-Experts feed-forward blocks, and a tiny
 * SentencePiece-style vocabulary (<unk>, <s>, </s>, the 256 byte tokens, filler pieces).
 * For benchmarks (bench/) and tests that need a model of a chosen size and layout; the
 * weights mean nothing, but they are scaled so that activations and logits stay finite.
 */
#ifndef MICA_MODEL_SYNTH_H
#define MICA_MODEL_SYNTH_H

#include "core/core.h"

#include <stdint.h>

/* Called after each tensor is generated and once more after the file is written:
 * done runs from 1 to total. */
typedef void (*model_synth_progress_fn)(void *ctx, int64_t done, int64_t total);

/* The fewest tokens a vocabulary can have: <unk>, <s>, </s> and the 256 byte tokens. */
#define MODEL_SYNTH_MIN_VOCAB 259

typedef struct model_synth_params {
    int32_t n_vocab; /* >= MODEL_SYNTH_MIN_VOCAB */
    int32_t n_ctx;   /* llama.context_length */
    int32_t n_embd;  /* a multiple of n_head and of the weight type's block size */
    int32_t n_layer;
    int32_t n_head, n_head_kv; /* n_head a multiple of n_head_kv; head size n_embd/n_head even */
    int32_t n_ff;              /* dense FFN size, or the per-expert FFN size when n_expert > 0 */
    int32_t n_expert;          /* 0: dense */
    int32_t n_expert_used;     /* 0 when dense, else 1..n_expert */
    uint32_t type;             /* enum gguf_ttype of the matrices: F32, F16, BF16, Q8_0, Q4_0;
                                  norm weights are always F32 (the loader requires it) */
    uint64_t seed;             /* same seed and parameters: the same bytes */
    model_synth_progress_fn progress; /* optional */
    void *progress_ctx;
} model_synth_params;

/* A small dense Q8_0 model (n_embd 64, 2 layers, 4 heads, vocab 320) to start from. */
model_synth_params model_synth_default_params(void);

/* Checks the parameters without writing anything: MICA_EINVAL naming the first bad one. */
mica_status model_synth_check(const model_synth_params *p, mica_err *err);

/* Parameters (weight elements) of the model p describes: all of them, and those one token's
 * forward pass reads (the router plus n_expert_used experts per layer instead of all). */
void model_synth_count(const model_synth_params *p, int64_t *n_total, int64_t *n_active);

/* Writes the model to path (via path.tmp, so a failure leaves no file). Holds the whole
 * file in memory while writing. Errors: MICA_EINVAL for bad parameters, MICA_ENOMEM,
 * MICA_EIO naming the path. */
mica_status model_synth_write(const char *path, const model_synth_params *p, mica_err *err);

#endif
