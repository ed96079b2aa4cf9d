/*
 * quant_int.h - internals shared by the quant/ sources (not for other modules): converting
 * one tensor to its planned type on a thread pool (quant_write.c, used by the writer and the
 * sensitivity search), and the chunked evaluation of a text that perplexity and sensitivity
 * both score (quant_eval.c).
 */
#ifndef MICA_QUANT_INT_H
#define MICA_QUANT_INT_H

#include "quant/quant.h"
#include "tensor/tensor.h"

/* Converts every row of src (F32, F16 or BF16) to `type` into dst (tensor_row_size(type,
 * ne[0]) bytes per row), the rows split over the pool's threads (pool may be NULL). */
mica_status quant_convert(tensor_pool *pool, const gguf_tensor *src, uint32_t type, void *dst,
                          mica_err *err);

/* A text cut into chunks as llama-perplexity does (see quant_eval_result). */
typedef struct quant_chunks {
    mica_token *tok; /* n_tok ids of the whole text */
    int64_t n_tok;
    int32_t n_ctx, n_chunks;
    int32_t first;     /* scored rows of a chunk: first .. n_ctx-2 */
    mica_token bos;    /* replaces each chunk's first token; -1: the model adds none */
    mica_token *chunk; /* (n_ctx) scratch: the chunk being evaluated */
} quant_chunks;

mica_status quant_chunks_make(mica_model *m, const char *text, size_t len,
                              const quant_eval_params *p, quant_chunks *c, mica_err *err);
void quant_chunks_free(quant_chunks *c);

/* Scored rows of one chunk and of the whole text. */
static inline int32_t quant_chunks_scored(const quant_chunks *c)
{
    return c->n_ctx - 1 - c->first;
}

/* Evaluates chunk k from an empty cache of sequence 0; logits receives n_ctx rows. */
mica_status quant_chunk_logits(mica_context *ctx, quant_chunks *c, int32_t k, float *logits,
                               mica_err *err);

/* The token row j of chunk k predicts. */
static inline mica_token quant_chunk_target(const quant_chunks *c, int32_t k, int32_t j)
{
    return c->tok[(int64_t)k * c->n_ctx + j + 1];
}

#endif
