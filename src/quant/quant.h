/*
 * quant.h - whole-model quantization and the measurements that judge it.
 *
 * Owns: the per-tensor type rules of llama-quantize's default mix (which tensors stay F32,
 * which are raised to Q6_K/Q8_0, the fallback when a row is not a multiple of the block
 * size), --keep-f16 glob patterns, the sensitivity of each tensor (mean KL divergence of
 * the output when only that tensor is quantized) and the size budget that keeps the most
 * sensitive tensors in F16; writing the quantized GGUF; perplexity and KL divergence of a
 * model's token distributions against a base model over a text.
 *
 * Does not own: the block formats and row quantizers (tensor/), the GGUF reader and writer
 * (gguf/), the forward pass (model/, engine/). Perplexity lives here rather than in engine/
 * because it is a consumer of the public decode API that the sensitivity search shares,
 * not part of running sequences.
 *
 * Called by: `mica quantize` and `mica perplexity` (src/cli), tests. Never prints: long
 * operations report through a quant_progress_fn.
 */
#ifndef MICA_QUANT_H
#define MICA_QUANT_H

#include "core/core.h"
#include "gguf/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Called as work advances: `what` names the step ("quantizing", "sensitivity",
 * "perplexity") and the item (a tensor name, or NULL); done of total items are finished. */
typedef void (*quant_progress_fn)(void *ctx, const char *what, const char *item, int64_t done,
                                  int64_t total);

/* ---- types --------------------------------------------------------------------------- */

/* The tensor type called `name` (case-insensitive: "q8_0", "F16", "fp8_e4m3") among those
 * mica can write. Otherwise MICA_EINVAL: "unknown type 'x' (types: f16, bf16, ...)". */
mica_status quant_type_from_name(const char *name, uint32_t *type, mica_err *err);
/* The names quant_type_from_name accepts, lower case, ", "-separated. */
void quant_type_names(char *buf, size_t cap);
/* llama.cpp's general.file_type (enum llama_ftype) for a target type: F32 0, F16 1, Q4_0 2,
 * Q8_0 7, Q4_K 15 (Q4_K_M), Q6_K 18, BF16 32; -1 when llama.cpp has none. */
int32_t quant_file_type(uint32_t type);
/* F32, F16 and BF16: the types a file may be quantized from. */
bool quant_type_is_float(uint32_t type);

/* ---- name patterns ------------------------------------------------------------------- */

/* Glob over a whole tensor name: '*' matches any run of characters (dots included), '?'
 * one character; everything else matches itself. */
bool quant_glob_match(const char *pattern, const char *name);
/* A comma-separated list of globs: true when one of them matches. Empty items never do. */
bool quant_patterns_match(const char *list, const char *name);

/* ---- the plan: what each tensor becomes ---------------------------------------------- */

typedef enum quant_why {
    QUANT_WHY_COPY,     /* not a quantizable weight (1-D, norm, router gate, bias): copied */
    QUANT_WHY_DEFAULT,  /* the requested type */
    QUANT_WHY_OUTPUT,   /* output (or tied embedding) raised toward Q6_K, as llama-quantize */
    QUANT_WHY_MIX,      /* raised by llama-quantize's mix (8 experts, Q4_K_M layers) */
    QUANT_WHY_FALLBACK, /* rows are not a multiple of the block size: another type */
    QUANT_WHY_KEEP,     /* matched --keep-f16 */
    QUANT_WHY_BUDGET,   /* kept in F16 by the sensitivity budget */
} quant_why;

const char *quant_why_str(quant_why w); /* "copy", "default", "output", ... */

typedef struct quant_tensor {
    char name[GGUF_MAX_NAME];
    uint64_t src_index;        /* index in the input file's tensor table */
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] contiguous; unused dims 1 */
    uint32_t n_dims;           /* dims written: trailing 1s dropped (ggml_n_dims) */
    uint32_t src_type, type;   /* type in the input and type written */
    uint32_t wanted;           /* type the rules chose before a fallback */
    quant_why why;
    uint64_t src_bytes, bytes; /* data bytes in the input and written */
    double kl;                 /* mean KL when only this tensor is quantized; < 0: not measured */
} quant_tensor;

typedef struct quant_plan {
    uint32_t target; /* the requested type */
    quant_tensor *t; /* n, in the order written (llama-quantize's: see quant_rules.c) */
    size_t n;
    uint64_t src_bytes;   /* tensor data of the input */
    uint64_t dst_bytes;   /* tensor data written */
    uint64_t meta_bytes;  /* upper bound of header + metadata + tensor infos (padded) */
    int n_fallback;       /* tensors whose rows forced another type */
    double base_ppl;      /* with a budget: perplexity of the input on the calibration text */
    int64_t calib_tokens; /* with a budget: scored calibration tokens */
} quant_plan;

void quant_plan_free(quant_plan *p);
/* Upper bound of the file size: meta_bytes + every tensor's bytes padded to 32. */
uint64_t quant_plan_file_bytes(const quant_plan *p);
/* F16 bytes of tensor i minus its planned bytes, both padded: what keeping it costs. */
uint64_t quant_plan_f16_extra(const quant_plan *p, size_t i);
/* Tensors whose planned type is quantized (not float) and could be kept in F16 instead. */
bool quant_plan_is_candidate(const quant_plan *p, size_t i);

/* Applies llama-quantize's default-mix rules for `target` to every tensor of f, then the
 * --keep-f16 patterns (keep_f16 may be NULL). Errors: a tensor that is already quantized;
 * a pattern that matches no quantizable tensor. */
mica_status quant_plan_make(const gguf_file *f, uint32_t target, const char *keep_f16,
                            quant_plan *out, mica_err *err);

/* Keeps candidates in F16, most sensitive (largest kl) first, while the file stays within
 * budget bytes; a candidate that does not fit is skipped for smaller ones. MICA_ERANGE when
 * the plan without any extra F16 tensor is already larger than the budget. */
mica_status quant_budget_apply(quant_plan *p, uint64_t budget, mica_err *err);

/* ---- evaluation over a text: perplexity and KL ----------------------------------------- */

typedef struct quant_eval_params {
    int32_t n_ctx;      /* tokens per chunk; 0: min(512, training context, text length) */
    int32_t max_chunks; /* 0: every whole chunk of the text */
    int32_t n_threads;  /* 0: every CPU */
    quant_progress_fn progress;
    void *progress_ctx;
    const char *text_name; /* the text's file, prefixed to messages about it; may be NULL */
    const char *base_name; /* the base model's file, likewise */
} quant_eval_params;

/* As llama-perplexity: the text is tokenized (with BOS when the model adds one) and cut into
 * chunks of n_ctx tokens; each chunk is evaluated from an empty cache with its first token
 * replaced by BOS, and the second half of it is scored (positions n_ctx/2 .. n_ctx-2
 * predicting the next token). */
typedef struct quant_eval_result {
    int64_t n_text_tokens;
    int32_t n_ctx, n_chunks;
    int64_t n_scored;
    double ppl, ppl_se;            /* exp(mean NLL) and its standard error */
    bool has_base;                 /* the fields below are set */
    double base_ppl, base_ppl_se;  /* the base model on the same tokens */
    double kl_mean, kl_se, kl_max; /* KL(base || model) per scored token, in nats */
    double top1_agree;             /* fraction of scored tokens whose argmax agree */
} quant_eval_result;

/* Perplexity of m over text[0..len), and when base is not NULL the KL divergence of m's
 * next-token distributions from base's (the vocabularies must be the same size). */
mica_status quant_eval_text(mica_model *m, mica_model *base, const char *text, size_t len,
                            const quant_eval_params *p, quant_eval_result *out, mica_err *err);

/* One scored position, for tests: negative log-likelihood of `target` under logits, and
 * KL(softmax(base) || softmax(logits)) when base is not NULL (else *kl = 0). Double
 * precision throughout. */
void quant_row_stats(const float *logits, const float *base, int32_t n_vocab, int32_t target,
                     double *nll, double *kl);

/* ---- sensitivity and the whole command ----------------------------------------------- */

/* For every candidate of the plan: loads the input model (path, its gguf open as f), puts
 * that one tensor in its planned type, and sets t[i].kl to the mean KL divergence against
 * the unmodified model over the calibration text. Also sets base_ppl and calib_tokens. */
mica_status quant_sensitivity(const char *path, const gguf_file *f, quant_plan *plan,
                              const char *calib, size_t calib_len, const quant_eval_params *ep,
                              mica_err *err);

/* Writes the plan's file (PATH.tmp, renamed when complete): metadata copied with
 * general.quantization_version = 2 and general.file_type moved to the end as
 * llama-quantize does, tensors converted on n_threads threads. */
mica_status quant_write(const gguf_file *f, const quant_plan *plan, const char *path, int n_threads,
                        quant_progress_fn progress, void *progress_ctx, mica_err *err);

typedef struct quant_params {
    uint32_t type;        /* target type */
    const char *keep_f16; /* comma-separated globs, or NULL */
    uint64_t budget;      /* bytes the file may take; 0: no budget */
    const char *calib;    /* calibration text (required with a budget) */
    size_t calib_len;
    const char *calib_name; /* its file name, for messages */
    int32_t calib_ctx;      /* chunk length for the calibration text; 0: default */
    int n_threads;          /* 0: every CPU */
    quant_progress_fn progress;
    void *progress_ctx;
} quant_params;

/* Plan, measure (with a budget), write. Refuses an output path that is the input file.
 * On success *plan describes what was written (free with quant_plan_free). */
mica_status quant_model_file(const char *in, const char *out, const quant_params *p,
                             quant_plan *plan, mica_err *err);

#endif
