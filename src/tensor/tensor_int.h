/*
 * tensor_int.h - internals shared by the tensor/ sources (not for other modules): the
 * kernel table that run-time dispatch fills, the AVX2 kernels, and the chunked matmul used
 * when scratch memory cannot be had.
 */
#ifndef MICA_TENSOR_INT_H
#define MICA_TENSOR_INT_H

#include "tensor/tensor.h"

/* A dot product of a weight row with an activation row already in the vec_dot type. */
typedef float (*tensor_dot_fn)(const void *w, const void *act, int64_t n);
/* Converts a row of n floats to an activation type (F16, Q8_0, ...). */
typedef void (*tensor_act_fn)(const float *x, void *y, int64_t n);

/* Type ids index the kernel arrays; every id a kernel exists for is below this. */
#define TENSOR_MAX_TYPE 64

/* The kernels one CPU family provides, indexed by GGUF type id: dot[w] for weights of type
 * w, act[a] to convert activations to type a. A family lists only what it accelerates;
 * tensor_kernels_get() fills every other entry from the scalar references, so adding a
 * kernel is adding one line to its family's table in dot.c. */
typedef struct tensor_kernels {
    const char *name;
    tensor_dot_fn dot[TENSOR_MAX_TYPE];
    tensor_act_fn act[TENSOR_MAX_TYPE];
} tensor_kernels;

/* The table in use: the scalar references when tensor_force_scalar(true) or when the CPU
 * has no faster family, else the best one found at the first call. */
const tensor_kernels *tensor_kernels_get(void);
/* The dot kernel for a weight type from the table in use. */
tensor_dot_fn tensor_dot_kernel(uint32_t wtype);
/* The scalar references (the "scalar" family, every supported entry set). */
const tensor_kernels *tensor_kernels_scalar(void);

/* Scalar references, one per entry of tensor_kernels (dot.c, quant.c, convert.c). */
float tensor_dot_f32_ref(const void *w, const void *act, int64_t n);
float tensor_dot_f16_ref(const void *w, const void *act, int64_t n);
float tensor_dot_bf16_ref(const void *w, const void *act, int64_t n);
float tensor_dot_q8_0_ref(const void *w, const void *act, int64_t n);
float tensor_dot_q4_0_ref(const void *w, const void *act, int64_t n);
void tensor_f32_to_f16_row_ref(const float *x, uint16_t *y, int64_t n);
void tensor_act_f16_ref(const float *x, void *y, int64_t n); /* tensor_act_fn wrappers */
void tensor_act_q8_0_ref(const float *x, void *y, int64_t n);

#if defined(__x86_64__)
/* AVX2 + FMA + F16C kernels (dot_avx2.c); callable only when the CPU has all three. */
bool tensor_avx2_usable(void);
bool tensor_x86_has_f16c(void);
float tensor_dot_f32_avx2(const void *w, const void *act, int64_t n);
float tensor_dot_f16_avx2(const void *w, const void *act, int64_t n);
float tensor_dot_bf16_avx2(const void *w, const void *act, int64_t n);
float tensor_dot_q8_0_avx2(const void *w, const void *act, int64_t n);
float tensor_dot_q4_0_avx2(const void *w, const void *act, int64_t n);
void tensor_quantize_act_q8_0_avx2(const float *x, block_q8_0 *y, int64_t n);
void tensor_f32_to_f16_row_avx2(const float *x, uint16_t *y, int64_t n);
void tensor_act_f16_avx2(const float *x, void *y, int64_t n);
void tensor_act_q8_0_avx2(const float *x, void *y, int64_t n);
#endif

/* tensor_matmul without scratch memory: activations are converted a slice of the row at a
 * time into a stack buffer and the per-slice dot products are summed in float, so results
 * can differ from tensor_matmul in the last bits. Used when scratch allocation fails;
 * exposed for tests. */
void tensor_matmul_chunked(const tensor_view *w, const float *x, int64_t n_rows, float *y);

/* The pool's scratch buffer of at least `bytes` (grown as needed, up to a cap); NULL when
 * p is NULL, the cap is exceeded or allocation fails. Valid until the next call. */
void *tensor_pool_scratch(tensor_pool *p, size_t bytes);

/* Adds one tensor_matmul of n_rows activations by w to the pool's counters (no-op for NULL). */
void tensor_pool_count_matmul(tensor_pool *p, const tensor_view *w, int64_t n_rows);

#endif
