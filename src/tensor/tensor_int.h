/*
 * tensor_int.h - internals shared by the tensor/ sources (not for other modules): the
 * kernel table that run-time dispatch fills, the AVX2, AVX-512 and NEON kernels, the batched
 * (gemm) kernel interface, and the chunked matmul used
 * when scratch memory cannot be had.
 */
#ifndef MICA_TENSOR_INT_H
#define MICA_TENSOR_INT_H

#include "tensor/tensor.h"

/* A dot product of a weight row with an activation row already in the vec_dot type. */
typedef float (*tensor_dot_fn)(const void *w, const void *act, int64_t n);
/* Converts a row of n floats to an activation type (F16, Q8_0, ...). */
typedef void (*tensor_act_fn)(const float *x, void *y, int64_t n);
/* h[i] = silu(g[i]) * u[i] for i < n (tensor_swiglu; h may be g). */
typedef void (*tensor_swiglu_fn)(const float *g, const float *u, float *h, int64_t n);

/* Type ids index the kernel arrays; every id a kernel exists for is below this. */
#define TENSOR_MAX_TYPE 64

/* A batched ("gemm") kernel for one weight type: many weight rows times many activation
 * rows, each result bit-identical to what the same family's dot kernel gives for that pair.
 * It reads activations in its own layout, which pack_act makes from floats (the values
 * tensor_convert_act gives, plus whatever the kernel precomputes). tensor_matmul uses it
 * when the family in use has one for the weight type and ne[0] <= max_k. */
typedef struct tensor_gemm {
    int64_t tile;      /* run's o0 is a multiple of this */
    int64_t max_k;     /* longest rows it takes */
    int64_t act_group; /* pack_act's r0 and r1 are multiples of this, or r1 = n_rows */
    /* Bytes of n_rows packed activation rows of k elements (64-byte aligned buffer). */
    size_t (*act_bytes)(int64_t k, int64_t n_rows);
    /* Packs rows [r0, r1) of x (n_rows rows of k floats) into dst. */
    void (*pack_act)(const float *x, int64_t n_rows, int64_t k, void *dst, int64_t r0, int64_t r1);
    /* y[r * w->ne[1] + o] for o0 <= o < o1 and r < n_act: the dot product of weight row o
     * (of the 2-D view w) with activation row r. */
    void (*run)(const tensor_view *w, int64_t o0, int64_t o1, const void *act, int64_t n_act,
                float *y);
    /* The same for a view in TENSOR_LAYOUT_Q4_0_X16 (o0, o1 multiples of 16); NULL when the
     * kernel reads only the file's layout. */
    void (*run_x16)(const tensor_view *w, int64_t o0, int64_t o1, const void *act, int64_t n_act,
                    float *y);
} tensor_gemm;

/* TENSOR_LAYOUT_Q4_0_X16 (repack.c): each tile of 16 rows is nb = ne[0] / 32 chunks of 288
 * bytes, one per block column b: four 64-byte registers, register j holding bytes 4j..4j+3
 * of the 16 quant bytes of block b of rows 0..15 (row i at bytes 4i..4i+3), then the 16
 * rows' fp16 scales. A tile takes as many bytes as its 16 rows in the file. */
#define TENSOR_X16_CHUNK      (TENSOR_X16_ROWS * 18)
#define TENSOR_X16_MAX_BLOCKS 512 /* blocks of the longest repacked row (the gemm's max_k) */
/* Row `row` of a 2-D view in TENSOR_LAYOUT_Q4_0_X16 as the file holds it (row_bytes). */
void tensor_x16_unpack_row(const tensor_view *v, int64_t row, uint8_t *dst);

/* The kernels one CPU family provides, indexed by GGUF type id: dot[w] for weights of type
 * w, act[a] to convert activations to type a. A family lists only what it accelerates;
 * tensor_kernels_get() fills every other entry from the scalar references, so adding a
 * kernel is adding one line to its family's table in dot.c. */
typedef struct tensor_kernels {
    const char *name;
    tensor_dot_fn dot[TENSOR_MAX_TYPE];
    tensor_act_fn act[TENSOR_MAX_TYPE];
    const tensor_gemm *gemm[TENSOR_MAX_TYPE]; /* batched kernels by weight type; may be NULL */
    tensor_swiglu_fn swiglu;                  /* the SwiGLU activation (swiglu.c) */
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
void tensor_swiglu_ref(const float *g, const float *u, float *h, int64_t n);
float tensor_dot_f16_ref(const void *w, const void *act, int64_t n);
float tensor_dot_bf16_ref(const void *w, const void *act, int64_t n);
float tensor_dot_q8_0_ref(const void *w, const void *act, int64_t n);
float tensor_dot_q4_0_ref(const void *w, const void *act, int64_t n);
void tensor_f32_to_f16_row_ref(const float *x, uint16_t *y, int64_t n);
void tensor_act_f16_ref(const float *x, void *y, int64_t n); /* tensor_act_fn wrappers */
void tensor_attn_scores_ref(const float *const *q, int n_q, const float *k, size_t kv_stride,
                            int32_t n_k, int hd, float scale, float *s, size_t s_stride);
void tensor_attn_values_ref(const float *p, size_t p_stride, int n_q, const int32_t *n,
                            const float *v, size_t kv_stride, int hd, float *const *o);
void tensor_act_q8_0_ref(const float *x, void *y, int64_t n);
/* K-quant and FP8 references (dot_k.c, quant_k.c, fp8.c): Q4_K/Q6_K weights with Q8_K
 * activations in ggml's order (bit-identical to ggml's *_generic), FP8 weights with Q8_0
 * activations (integer sums per block, blocks summed in 8 lanes by index mod 8). */
float tensor_dot_q4_K_ref(const void *w, const void *act, int64_t n);
float tensor_dot_q6_K_ref(const void *w, const void *act, int64_t n);
float tensor_dot_fp8_ref(const void *w, const void *act, int64_t n);
void tensor_act_q8_K_ref(const float *x, void *y, int64_t n);
/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K super-block's packed scales. */
void tensor_q4_K_scale_min(const uint8_t *scales, int j, uint8_t *sc, uint8_t *m);
/* An E4M3 byte's magnitude in units of 2^-9 (the smallest subnormal), signed: every finite
 * E4M3 value is an integer there (|v| <= 448 * 512). The NaN codes read as +-480 * 512, the
 * value the bit pattern would have; mica never writes them. */
int32_t tensor_fp8_units(uint8_t b);
/* tensor_to_f32 for Q4_K, Q6_K, Q8_K (quant_k.c) and FP8_E4M3 (fp8.c); false for other types. */
bool tensor_k_to_f32(uint32_t type, const void *src, float *dst, int64_t n);
bool tensor_fp8_row_to_f32(uint32_t type, const void *src, float *dst, int64_t n);

#if defined(__x86_64__)
/* AVX2 + FMA + F16C kernels (dot_avx2.c); callable only when the CPU has all three. */
bool tensor_avx2_usable(void);
/* The SwiGLU twins (swiglu.c): AVX2+FMA, and AVX-512 F when tensor_avx512_usable(). */
void tensor_swiglu_avx2(const float *g, const float *u, float *h, int64_t n);
void tensor_swiglu_avx512(const float *g, const float *u, float *h, int64_t n);
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
/* K-quant and FP8 AVX2 kernels (dot_k_avx2.c), each bit-identical to its reference. Like
 * the Q8_0 kernels they take activations as the quantizers make them (|q| <= 127). */
float tensor_dot_q4_K_avx2(const void *w, const void *act, int64_t n);
float tensor_dot_q6_K_avx2(const void *w, const void *act, int64_t n);
float tensor_dot_fp8_avx2(const void *w, const void *act, int64_t n);
void tensor_quantize_row_q8_K_avx2(const float *x, block_q8_K *y, int64_t n);
void tensor_act_q8_K_avx2(const float *x, void *y, int64_t n);

/* AVX-512 F/BW/VL kernels (dot_avx512.c), callable when tensor_avx512_usable(); the Q8_0 and
 * Q4_0 ones need VNNI as well (tensor_avx512_vnni_usable()). */
bool tensor_avx512_usable(void);
bool tensor_avx512_vnni_usable(void);
/* VBMI byte permutes speed up the Q4_0 decode kernel where present; tests switch them off
 * to cover the other path (returns whether they are on). */
bool tensor_avx512_vbmi_usable(void);
bool tensor_avx512_set_vbmi(bool on);
float tensor_dot_f32_avx512(const void *w, const void *act, int64_t n);
float tensor_dot_f16_avx512(const void *w, const void *act, int64_t n);
float tensor_dot_q8_0_avx512(const void *w, const void *act, int64_t n);
float tensor_dot_q4_0_avx512(const void *w, const void *act, int64_t n);
void tensor_quantize_act_q8_0_avx512(const float *x, block_q8_0 *y, int64_t n);
void tensor_f32_to_f16_row_avx512(const float *x, uint16_t *y, int64_t n);
void tensor_act_f16_avx512(const float *x, void *y, int64_t n);
void tensor_act_q8_0_avx512(const float *x, void *y, int64_t n);
extern const tensor_gemm tensor_gemm_f32_avx512, tensor_gemm_f16_avx512;
extern const tensor_gemm tensor_gemm_q8_0_avx512, tensor_gemm_q4_0_avx512; /* VNNI */
void tensor_attn_scores_avx512(const float *const *q, int n_q, const float *k, size_t kv_stride,
                               int32_t n_k, int hd, float scale, float *s, size_t s_stride);
void tensor_attn_values_avx512(const float *p, size_t p_stride, int n_q, const int32_t *n,
                               const float *v, size_t kv_stride, int hd, float *const *o);
#endif

#if defined(__aarch64__)
/* NEON kernels (dot_neon.c) for ARMv8.0, callable when tensor_neon_usable(); the _neon_dot
 * ones (dot_neon_dotprod.c) use ARMv8.2's sdot and need tensor_neon_dotprod_usable()
 * (getauxval HWCAP bits). All but the float dot products give their references' bits. */
bool tensor_neon_usable(void);
bool tensor_neon_dotprod_usable(void);
void tensor_swiglu_neon(const float *g, const float *u, float *h, int64_t n); /* swiglu.c */
float tensor_dot_f32_neon(const void *w, const void *act, int64_t n);
float tensor_dot_f16_neon(const void *w, const void *act, int64_t n);
float tensor_dot_bf16_neon(const void *w, const void *act, int64_t n);
float tensor_dot_q8_0_neon(const void *w, const void *act, int64_t n);
float tensor_dot_q4_0_neon(const void *w, const void *act, int64_t n);
float tensor_dot_q4_K_neon(const void *w, const void *act, int64_t n);
float tensor_dot_q6_K_neon(const void *w, const void *act, int64_t n);
float tensor_dot_fp8_neon(const void *w, const void *act, int64_t n);
float tensor_dot_q8_0_neon_dot(const void *w, const void *act, int64_t n);
float tensor_dot_q4_0_neon_dot(const void *w, const void *act, int64_t n);
void tensor_act_f16_neon(const float *x, void *y, int64_t n);
void tensor_act_q8_0_neon(const float *x, void *y, int64_t n);
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
