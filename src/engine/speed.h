/*
 * speed.h - llama-bench's measurements over the public decode API, shared by `mica bench`
 * (src/cli/cmd_bench.c) and bench/bench_shapes.c: ppN evaluates N prompt tokens in one
 * mica_decode from an empty cache, tgN decodes N tokens one at a time from an empty cache;
 * t/s = N / the time spent in mica_decode. Also the mean and sample standard deviation of
 * the rounds (llama-bench's "avg ± stdev"), and the facts about a model file llama-bench
 * prints next to them, plus the weight bytes one decoded token reads (for bandwidth bounds).
 * Never prints.
 */
#ifndef MICA_ENGINE_SPEED_H
#define MICA_ENGINE_SPEED_H

#include "gguf/gguf.h"
#include "mica.h"

#include <stdint.h>

typedef enum speed_test { SPEED_PP, SPEED_TG } speed_test;

/* One round of `test` with n tokens on sequence 0 of c, which must hold n positions; the
 * sequence is emptied first. The tokens are BOS (when the model has one) and then ids drawn
 * uniformly from the vocabulary with a fixed seed, as llama-bench draws them. */
mica_status speed_run(mica_context *c, speed_test test, int32_t n, double *tokens_per_s,
                      mica_err *err);

/* Mean and sample standard deviation (0 for one value) of v[0..n), n >= 1. */
void speed_stats(const double *v, int n, double *mean, double *sd);

typedef struct speed_model_info {
    char arch[32];       /* general.architecture */
    int64_t n_params;    /* elements of every tensor (llama-bench's "params") */
    uint64_t size_bytes; /* bytes of tensor data (llama-bench's "size") */
    uint32_t type;       /* the type holding the most matrix (2-D and up) elements */
    double decode_bytes; /* weight bytes one decoded token reads: every tensor once, but one
                            row of token_embd (all of it when it is the tied output) and
                            n_expert_used / n_expert of each expert stack */
    int32_t n_of_type[GGUF_T_COUNT]; /* tensors of each type */
} speed_model_info;

/* Reads the tensor table of the GGUF file at path. Errors as gguf_open. */
mica_status speed_model_info_read(const char *path, speed_model_info *out, mica_err *err);

#endif
