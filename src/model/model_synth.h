/*
 * model_synth.h - writes a random-weight model as a GGUF file that model_load (and so
 * mica_model_load) accepts: architecture "llama" (dense SwiGLU or Mixtral-style
 * Mixture-of-Experts feed-forward blocks) or "qwen2" (q/k/v biases, tied output), with
 * llama.cpp's tensor names and shapes and a tiny SentencePiece-style vocabulary (<unk>, <s>,
 * </s>, the 256 byte tokens, filler pieces), as ../shared/testdata/llamacpp's
 * make_test_models.py writes its models. Named presets give the shapes of llama.cpp's speed
 * baseline (../shared/reference/llamacpp-bench.md). For `mica synth`, `mica bench`,
 * benchmarks (bench/) and tests; the weights mean nothing, but they are scaled so that
 * activations and logits stay finite.
 *
 * With llama_mix the block-quantized types are chosen per tensor as llama-quantize chooses
 * them from an F16 file (that is how the reference files were made): model_synth writes the
 * F16 model and has quant/ quantize it. model_synth sits above quant/ for this: it is a tool
 * that writes files, not part of the forward pass.
 */
#ifndef MICA_MODEL_SYNTH_H
#define MICA_MODEL_SYNTH_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Called after each tensor is generated and once more after the file is written:
 * done runs from 1 to total. */
typedef void (*model_synth_progress_fn)(void *ctx, int64_t done, int64_t total);

/* The fewest tokens a vocabulary can have: <unk>, <s>, </s> and the 256 byte tokens. */
#define MODEL_SYNTH_MIN_VOCAB 259

typedef enum model_synth_arch {
    MODEL_SYNTH_LLAMA,
    MODEL_SYNTH_QWEN2,
    MODEL_SYNTH_N_ARCH
} model_synth_arch;

typedef struct model_synth_params {
    model_synth_arch arch; /* general.architecture; qwen2 is dense only */
    int32_t n_vocab;       /* >= MODEL_SYNTH_MIN_VOCAB */
    int32_t n_ctx;         /* llama.context_length */
    int32_t n_embd;        /* a multiple of n_head and of the weight type's block size */
    int32_t n_layer;
    int32_t n_head, n_head_kv; /* n_head a multiple of n_head_kv; head size n_embd/n_head even */
    int32_t n_ff;              /* dense FFN size, or the per-expert FFN size when n_expert > 0 */
    int32_t n_expert;          /* 0: dense */
    int32_t n_expert_used;     /* 0 when dense, else 1..n_expert */
    uint32_t type;             /* enum gguf_ttype of the matrices (any type tensor/ writes);
                                  norms, biases and the router are always F32 (as
                                  convert_hf_to_gguf writes them) */
    bool llama_mix;            /* block types: llama-quantize's mix from F16 (see above) */
    bool tied;                 /* no output.weight: token_embd is also the output matrix */
    bool qkv_bias;             /* attn_q/k/v.bias */
    float rope_base, norm_eps; /* rope.freq_base, attention.layer_norm_rms_epsilon */
    int n_threads;             /* threads of llama_mix's quantization; 0: every CPU */
    uint64_t seed;             /* same seed and parameters: the same bytes */
    model_synth_progress_fn progress; /* optional */
    void *progress_ctx;
} model_synth_params;

/* A small dense Q8_0 llama model (n_embd 64, 2 layers, 4 heads, vocab 320) to start from. */
model_synth_params model_synth_default_params(void);

/* "llama", "qwen2"; model_synth_arch_from_name sets p->arch and that architecture's
 * defaults (llama: untied, no biases, rope base 1e4, eps 1e-5; qwen2: tied, q/k/v biases,
 * rope base 1e6, eps 1e-6), leaving the shape alone. MICA_EINVAL naming the choices. */
const char *model_synth_arch_name(model_synth_arch a);
mica_status model_synth_arch_from_name(model_synth_params *p, const char *name, mica_err *err);

/* Presets: "qwen2-0.5b" (big-qwen2-0.5b-shape) and "moe-8x" (big-llama-moe-8x) of
 * llamacpp-bench.md: the architecture with its defaults, the shape and n_ctx 4096; type,
 * seed and llama_mix are left alone. MICA_EINVAL naming the presets for another name. */
mica_status model_synth_preset(model_synth_params *p, const char *name, mica_err *err);
/* The preset names, ", "-separated (for --help and messages). */
void model_synth_preset_names(char *buf, size_t cap);

/* Checks the parameters without writing anything: MICA_EINVAL naming the first bad one. */
mica_status model_synth_check(const model_synth_params *p, mica_err *err);

/* Parameters (weight elements) of the model p describes: all of them, and those one token's
 * forward pass reads (the router plus n_expert_used experts per layer instead of all). */
void model_synth_count(const model_synth_params *p, int64_t *n_total, int64_t *n_active);

/* Writes the model to path (via path.tmp, so a failure leaves no file). Holds the whole
 * file in memory while writing; with llama_mix and a block type, the F16 model goes to
 * path.f16.tmp first (removed afterwards). Errors: MICA_EINVAL for bad parameters,
 * MICA_ENOMEM, MICA_EIO naming the path. */
mica_status model_synth_write(const char *path, const model_synth_params *p, mica_err *err);

#endif
