/*
 * tensor.h - tensor types and the kernels over them: F32, F16, BF16, Q8_0, Q4_0 with the
 * exact GGML block layouts; conversion and (de)quantization of rows; dot products and the
 * matrix multiplication that the model's forward pass uses; a persistent thread pool.
 *
 * Numerics follow ggml-cpu so that logits match llama.cpp's: before a matmul the activation
 * row is converted to the weight type's "vec_dot type" (F16 weights: activation rounded to
 * F16; Q8_0/Q4_0 weights: activation quantized to Q8_0 blocks with round-to-nearest-even),
 * then the dot product runs on the converted values (integers within a Q8_0 block).
 *
 * Every kernel has a scalar reference (tensor_*_ref); SIMD variants are chosen at run time
 * from the CPU's features and are tested against the reference.
 */
#ifndef MICA_TENSOR_H
#define MICA_TENSOR_H

#include "core/core.h"
#include "gguf/gguf.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- scalar conversions -------------------------------------------------------------- */

float tensor_f16_to_f32(uint16_t h);
uint16_t tensor_f32_to_f16(float f); /* round to nearest even, as F16C / numpy */
float tensor_bf16_to_f32(uint16_t h);
uint16_t tensor_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

/* ---- block layouts (ggml-common.h) --------------------------------------------------- */

#define QK8_0 32
#define QK4_0 32

typedef struct block_q8_0 {
    uint16_t d;       /* fp16 scale */
    int8_t qs[QK8_0]; /* x[j] = d * qs[j] */
} block_q8_0;
static_assert(sizeof(block_q8_0) == 2 + QK8_0, "q8_0 layout");

typedef struct block_q4_0 {
    uint16_t d;            /* fp16 scale */
    uint8_t qs[QK4_0 / 2]; /* low nibble: x[j], high nibble: x[j+16]; value = d*(nib-8) */
} block_q4_0;
static_assert(sizeof(block_q4_0) == 2 + QK4_0 / 2, "q4_0 layout");

/* ---- row conversion ------------------------------------------------------------------ */

/* True for the types this module computes with (F32, F16, BF16, Q8_0, Q4_0). */
bool tensor_type_supported(uint32_t type);
/* Bytes of a row of n elements (n a multiple of the block size). */
size_t tensor_row_size(uint32_t type, int64_t n);

/* Dequantizes / converts n elements of a row of `type` to float. */
void tensor_to_f32(uint32_t type, const void *src, float *dst, int64_t n);

/* Weight quantization as llama-quantize does it (byte-identical): Q8_0 with d = amax/127 and
 * roundf (half away from zero); Q4_0 with d = max/-8 and truncation of x/d + 8.5. */
void tensor_quantize_row_q8_0_ref(const float *x, block_q8_0 *y, int64_t n);
void tensor_quantize_row_q4_0_ref(const float *x, block_q4_0 *y, int64_t n);
/* Converts a row of floats to `type` (F32, F16, BF16, Q8_0, Q4_0) with the functions above. */
void tensor_from_f32(uint32_t type, const float *src, void *dst, int64_t n);

/* Activation quantization before a dot product, as ggml-cpu's SIMD quantize_row_q8_0:
 * d = amax/127 stored as fp16, q = round-to-nearest-even(x * 127/amax). n % 32 == 0. */
void tensor_quantize_act_q8_0(const float *x, block_q8_0 *y, int64_t n);
void tensor_quantize_act_q8_0_ref(const float *x, block_q8_0 *y, int64_t n);

/* ---- dot products ------------------------------------------------------------------- */

/* The type an activation row is converted to before a dot with a weight row of `type`:
 * F32 -> F32, F16 -> F16, BF16 -> BF16, Q8_0/Q4_0 -> Q8_0. */
uint32_t tensor_vec_dot_type(uint32_t type);
/* Converts an activation row to tensor_vec_dot_type(wtype); dst holds
 * tensor_row_size(vec_dot_type, n) bytes. */
void tensor_convert_act(uint32_t wtype, const float *x, void *dst, int64_t n);

/* Dot product of a weight row of `type` with an activation row already converted to the
 * vec_dot type. n is the row length in elements. */
float tensor_vec_dot(uint32_t type, const void *w, const void *act, int64_t n);
float tensor_vec_dot_ref(uint32_t type, const void *w, const void *act, int64_t n);

/* Which SIMD family tensor_vec_dot dispatches to on this CPU ("avx2", "scalar", ...). */
const char *tensor_simd_name(void);
/* Forces the scalar reference everywhere (tests, debugging); returns the previous setting. */
bool tensor_force_scalar(bool on);

/* ---- thread pool --------------------------------------------------------------------- */

typedef struct tensor_pool tensor_pool;

/* n_threads workers including the caller (n_threads - 1 threads are created once). */
mica_status tensor_pool_new(tensor_pool **out, int n_threads, mica_err *err);
void tensor_pool_free(tensor_pool *p);
int tensor_pool_size(const tensor_pool *p);

/* Runs fn(ctx, i0, i1, thread) over [0, n) split into contiguous chunks, one per thread,
 * and returns when all are done. p may be NULL (runs on the caller). Not reentrant. */
typedef void (*tensor_range_fn)(void *ctx, int64_t i0, int64_t i1, int thread);
void tensor_pool_for(tensor_pool *p, int64_t n, tensor_range_fn fn, void *ctx);

/* What tensor_matmul did through a pool since it was made or last reset; tests use it to
 * count the work a forward pass really does (which experts' weights were read). */
typedef struct tensor_matmul_stats {
    uint64_t calls;        /* tensor_matmul calls */
    uint64_t rows;         /* activation rows multiplied, summed over calls */
    uint64_t macs;         /* multiply-adds: ne[0] * ne[1] * rows, summed */
    uint64_t weight_bytes; /* weight bytes read: ne[1] * row_bytes per call */
} tensor_matmul_stats;

tensor_matmul_stats tensor_pool_matmul_stats(const tensor_pool *p);
void tensor_pool_reset_matmul_stats(tensor_pool *p);

/* ---- matrices ------------------------------------------------------------------------ */

/* A weight bound from a GGUF tensor: rows of ne[0] elements, ne[1] rows per matrix, ne[2]
 * matrices (experts). Points into the model's mapping. */
typedef struct tensor_view {
    const void *data;
    uint32_t type;
    int64_t ne[GGUF_MAX_DIMS];
    size_t row_bytes; /* tensor_row_size(type, ne[0]) */
    const char *name; /* for messages */
} tensor_view;

/* Binds a gguf tensor (type must be supported; returns MICA_EUNSUPPORTED naming it). */
mica_status tensor_view_from_gguf(tensor_view *v, const gguf_tensor *t, const char *path,
                                  mica_err *err);
/* Matrix i2 of a 3-D tensor, as a 2-D view. */
tensor_view tensor_view_matrix(const tensor_view *v, int64_t i2);
/* Rows r0 .. r0+n-1 of a 2-D view (a merged gate/up matrix split in two). */
tensor_view tensor_view_rows(const tensor_view *v, int64_t r0, int64_t n);

/* Row `row` of a (2-D) view as floats: ggml_get_rows (embedding lookup). */
void tensor_get_row(const tensor_view *v, int64_t row, float *dst);

/* y[r][o] = sum_i W[o][i] * x[r][i] for r < n_rows, o < W.ne[1]; x rows have W.ne[0]
 * floats, y rows have W.ne[1] floats. Activations are converted as ggml does (see top).
 * Each weight row is read once for the whole batch. Uses the pool when given. */
void tensor_matmul(tensor_pool *p, const tensor_view *w, const float *x, int64_t n_rows, float *y);

#endif
