/*
 * tensor.h - tensor types and the kernels over them: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K
 * (and Q8_K activations) with the exact GGML block layouts, and mica's FP8_E4M3 extension
 * type (docs/fp8.md); conversion and (de)quantization of rows; dot products and the
 * matrix multiplication that the model's forward pass uses; a persistent thread pool.
 *
 * Numerics follow ggml-cpu so that logits match llama.cpp's: before a matmul the activation
 * row is converted to the weight type's "vec_dot type" (F16 weights: activation rounded to
 * F16; Q8_0/Q4_0/FP8 weights: activation quantized to Q8_0 blocks with round-to-nearest-even;
 * Q4_K/Q6_K weights: to Q8_K super-blocks), then the dot product runs on the converted values
 * (integers within a block).
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

/* K-quants: super-blocks of QK_K elements (quant_k.c; ggml-common.h's layouts). */
#define QK_K         256
#define K_SCALE_SIZE 12

/* 8 sub-blocks of 32: x = d*sc[j]*q - dmin*m[j], q a nibble, sc/m 6-bit (get: quant_k.c).
 * scales[0..3]: sc[0..3] low 6 bits, top 2 bits hold sc[4..7]'s high bits; scales[4..7]:
 * m[0..3] likewise with m[4..7]'s high bits; scales[8..11]: sc[4..7] | m[4..7] << 4 (low 4
 * bits). qs[32*g + l] holds element 64g+l (low nibble) and 64g+32+l (high nibble). */
typedef struct block_q4_K {
    uint16_t d;    /* fp16 super-block scale of the scales */
    uint16_t dmin; /* fp16 super-block scale of the mins */
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
static_assert(sizeof(block_q4_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 2, "q4_K layout");

/* 16 sub-blocks of 16: x = d * scales[j] * (q - 32), q 6 bits: the low 4 in ql, the high
 * 2 in qh (for each half of 128: ql[l], ql[l+32] low/high nibbles and qh[l]'s four bit
 * pairs give elements l, l+32, l+64, l+96). */
typedef struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d; /* fp16 */
} block_q6_K;
static_assert(sizeof(block_q6_K) == QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, "q6_K layout");

/* The activation type of K-quant dot products: x = d * qs, bsums[j] = sum of qs[16j..16j+15]. */
typedef struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
static_assert(sizeof(block_q8_K) == 4 + QK_K + QK_K / 16 * 2, "q8_K layout");

/* FP8-E4M3 blocks (a mica extension type, docs/fp8.md; fp8.c): x = d * e4m3(qs[j]). The
 * same 34 bytes per 32 as Q8_0. */
#define QK_FP8 32

typedef struct block_fp8_e4m3 {
    uint16_t d;         /* fp16 scale: amax / 448 */
    uint8_t qs[QK_FP8]; /* E4M3: sign, 4 exponent bits (bias 7), 3 mantissa bits */
} block_fp8_e4m3;
static_assert(sizeof(block_fp8_e4m3) == 2 + QK_FP8, "fp8_e4m3 layout");

/* One E4M3 number: bias 7, subnormals, max finite 448, no infinities, NaN = 0x7F/0xFF. */
float tensor_fp8_to_f32(uint8_t b);
/* Round to nearest even; |f| >= 448 and infinities saturate to +-448; NaN gives 0x7F/0xFF
 * (keeping the sign). */
uint8_t tensor_f32_to_fp8(float f);

/* ---- row conversion ------------------------------------------------------------------ */

/* True for the types this module computes with (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K,
 * FP8_E4M3). Q8_K is only an activation type: rows convert, but no weight dot exists. */
bool tensor_type_supported(uint32_t type);
/* Bytes of a row of n elements (n a multiple of the block size). */
size_t tensor_row_size(uint32_t type, int64_t n);

/* Dequantizes / converts n elements of a row of `type` to float. */
void tensor_to_f32(uint32_t type, const void *src, float *dst, int64_t n);

/* Weight quantization as llama-quantize does it (byte-identical): Q8_0 with d = amax/127 and
 * roundf (half away from zero); Q4_0 with d = max/-8 and truncation of x/d + 8.5. */
void tensor_quantize_row_q8_0_ref(const float *x, block_q8_0 *y, int64_t n);
void tensor_quantize_row_q4_0_ref(const float *x, block_q4_0 *y, int64_t n);
/* Q4_K / Q6_K as llama-quantize writes them without an importance matrix (ggml's
 * quantize_row_q4_K_ref / quantize_row_q6_K_ref, byte-identical), Q8_K as ggml's
 * quantize_row_q8_K_ref (the activations of K-quant dot products), FP8_E4M3 with d = amax/448
 * rounded to fp16 and each x/d encoded by tensor_f32_to_fp8. n % 256 == 0 (FP8: n % 32 == 0). */
void tensor_quantize_row_q4_K_ref(const float *x, block_q4_K *y, int64_t n);
void tensor_quantize_row_q6_K_ref(const float *x, block_q6_K *y, int64_t n);
void tensor_quantize_row_q8_K_ref(const float *x, block_q8_K *y, int64_t n);
void tensor_quantize_row_fp8_ref(const float *x, block_fp8_e4m3 *y, int64_t n);
/* Converts a row of floats to `type` (every supported type, and Q8_K) with the functions
 * above. */
void tensor_from_f32(uint32_t type, const float *src, void *dst, int64_t n);

/* Activation quantization before a dot product, as ggml-cpu's SIMD quantize_row_q8_0:
 * d = amax/127 stored as fp16, q = round-to-nearest-even(x * 127/amax). n % 32 == 0. */
void tensor_quantize_act_q8_0(const float *x, block_q8_0 *y, int64_t n);
void tensor_quantize_act_q8_0_ref(const float *x, block_q8_0 *y, int64_t n);

/* ---- dot products ------------------------------------------------------------------- */

/* The type an activation row is converted to before a dot with a weight row of `type`:
 * F32 -> F32, F16 -> F16, BF16 -> BF16, Q8_0/Q4_0/FP8_E4M3 -> Q8_0, Q4_K/Q6_K -> Q8_K. */
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

/* ---- activations ---------------------------------------------------------------------- */

/* SwiGLU's gate: h[i] = silu(g[i]) * u[i], silu(x) = x / (1 + exp(-x)), with mica's own exp
 * (within about 2 ulp of the exact value); every kernel family gives the same bits, for
 * any n and any place of an element in the row. h may be g. */
void tensor_swiglu(const float *g, const float *u, float *h, int64_t n);

/* ---- attention products --------------------------------------------------------------- */

/* For n_q query rows q[a] that share one key head: s[a * s_stride + i] = (q_a . k_i) * scale
 * for i < n_k, k_i = k + i * kv_stride, each dot product the plain sequential float sum over
 * d < hd (products and sums rounded apart, as the forward pass always did), so every kernel
 * gives the same bits. */
void tensor_attn_scores(const float *const *q, int n_q, const float *k, size_t kv_stride,
                        int32_t n_k, int hd, float scale, float *s, size_t s_stride);
/* o[a][d] = sum over i < n[a] of p[a * p_stride + i] * v_i[d], v_i = v + i * kv_stride, summed
 * in order of i (plain float sums, as tensor_attn_scores). */
void tensor_attn_values(const float *p, size_t p_stride, int n_q, const int32_t *n, const float *v,
                        size_t kv_stride, int hd, float *const *o);

/* ---- thread pool --------------------------------------------------------------------- */

typedef struct tensor_pool tensor_pool;

/* n_threads workers including the caller (n_threads - 1 threads are created once). */
mica_status tensor_pool_new(tensor_pool **out, int n_threads, mica_err *err);
void tensor_pool_free(tensor_pool *p);
int tensor_pool_size(const tensor_pool *p);

/* Runs fn(ctx, i0, i1, thread) over [0, n) split into contiguous chunks (a few per thread,
 * each run exactly once, by whichever thread claims it first) and returns when all are
 * done. `thread` is the index of the thread running the chunk (0 = the caller), so
 * per-thread scratch indexed by it is never used by two chunks at once. p may be NULL
 * (runs on the caller). Not reentrant. */
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

/* Rows per tile of TENSOR_LAYOUT_Q4_0_X16. */
#define TENSOR_X16_ROWS 16

/* How a view's data holds its rows. */
typedef enum tensor_layout {
    TENSOR_LAYOUT_GGUF = 0, /* row after row, as in the file */
    TENSOR_LAYOUT_Q4_0_X16, /* Q4_0 rows interleaved 16 at a time (tensor_view_repack) */
} tensor_layout;

/* A weight bound from a GGUF tensor: rows of ne[0] elements, ne[1] rows per matrix, ne[2]
 * matrices (experts). Points into the model's mapping, or into a repacked copy. */
typedef struct tensor_view {
    const void *data;
    uint32_t type;
    int64_t ne[GGUF_MAX_DIMS];
    size_t row_bytes;     /* tensor_row_size(type, ne[0]) */
    const char *name;     /* for messages */
    tensor_layout layout; /* the layout of data; every matrix of a view has the same */
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

/* Whether tensor_view_repack would lay v out for the kernels in use: Q4_0 matrices of whole
 * tiles of 16 rows, short enough for the batched kernel, on a CPU whose kernels read the
 * interleaved layout (AVX-512 VNNI). Reading 16 rows as one stream is what lets a
 * prompt's matmuls skip regrouping the weights and lets decoding stream them. */
bool tensor_view_repackable(const tensor_view *v);
/* Bytes of all of v's matrices (the same in either layout). */
size_t tensor_view_bytes(const tensor_view *v);
/* Writes v's weights into dst (tensor_view_bytes, 64-byte aligned) in the interleaved layout
 * and points v at them. tensor_matmul gives the same bits as before; tensor_get_row,
 * tensor_view_matrix and tensor_view_rows (at multiples of 16 rows) still work. */
void tensor_view_repack(tensor_view *v, void *dst);

/* y[r][o] = sum_i W[o][i] * x[r][i] for r < n_rows, o < W.ne[1]; x rows have W.ne[0]
 * floats, y rows have W.ne[1] floats. Activations are converted as ggml does (see top).
 * Each weight row is read once for the whole batch. Uses the pool when given. */
void tensor_matmul(tensor_pool *p, const tensor_view *w, const float *x, int64_t n_rows, float *y);

/* y[i] = W[i] x for n_w weights sharing the input x (q/k/v, gate/up): with the same type and
 * row length x is converted once and all their rows are one job on the pool (otherwise they
 * run one by one). Results are those of tensor_matmul; counted as n_w matmuls. */
void tensor_matmul_multi(tensor_pool *p, const tensor_view *const *w, int n_w, const float *x,
                         int64_t n_rows, float *const *y);

#endif
