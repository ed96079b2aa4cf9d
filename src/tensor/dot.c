/*
 * dot.c - dot products of a weight row with an activation row: the scalar reference for
 * every weight type, the conversion of activations to each weight type's "vec_dot type",
 * and the run-time choice of kernels (scalar, AVX2, AVX-512, NEON, NEON with sdot) with the
 * tensor_force_scalar switch.
 *
 * Does not own: the SIMD kernels themselves (dot_avx2.c, dot_avx512.c, dot_neon.c,
 * dot_neon_dotprod.c) or the matrix product (matmul.c).
 * Called by: matmul.c, model/ (attention dot products), tests.
 *
 * Accumulation follows ggml-cpu: float sums of float products; for Q8_0/Q4_0 weights an
 * exact integer sum per block of 32, scaled by d_w*d_x and added to a float accumulator.
 */
#include "tensor/tensor_int.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- scalar references --------------------------------------------------------------- */

float tensor_dot_f32_ref(const void *w, const void *act, int64_t n)
{
    const float *a = w, *b = act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

float tensor_dot_f16_ref(const void *w, const void *act, int64_t n)
{
    const uint16_t *a = w, *b = act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += tensor_f16_to_f32(a[i]) * tensor_f16_to_f32(b[i]);
    return sum;
}

float tensor_dot_bf16_ref(const void *w, const void *act, int64_t n)
{
    const uint16_t *a = w, *b = act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += tensor_bf16_to_f32(a[i]) * tensor_bf16_to_f32(b[i]);
    return sum;
}

float tensor_dot_q8_0_ref(const void *w, const void *act, int64_t n)
{
    const block_q8_0 *x = w, *y = act;
    assert(n % QK8_0 == 0);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int32_t isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += (int32_t)x[b].qs[j] * (int32_t)y[b].qs[j];
        const float scale = tensor_f16_to_f32(x[b].d) * tensor_f16_to_f32(y[b].d);
        sum += scale * (float)isum;
    }
    return sum;
}

float tensor_dot_q4_0_ref(const void *w, const void *act, int64_t n)
{
    const block_q4_0 *x = w;
    const block_q8_0 *y = act;
    assert(n % QK4_0 == 0);
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        int32_t isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            const int32_t lo = (x[b].qs[j] & 0x0f) - 8;
            const int32_t hi = (x[b].qs[j] >> 4) - 8;
            isum += lo * y[b].qs[j] + hi * y[b].qs[j + QK4_0 / 2];
        }
        const float scale = tensor_f16_to_f32(x[b].d) * tensor_f16_to_f32(y[b].d);
        sum += scale * (float)isum;
    }
    return sum;
}

/* ---- dispatch ------------------------------------------------------------------------ */

static const tensor_kernels dot_scalar = {
    .name = "scalar",
    .dot =
        {
            [GGUF_T_F32] = tensor_dot_f32_ref,
            [GGUF_T_F16] = tensor_dot_f16_ref,
            [GGUF_T_BF16] = tensor_dot_bf16_ref,
            [GGUF_T_Q8_0] = tensor_dot_q8_0_ref,
            [GGUF_T_Q4_0] = tensor_dot_q4_0_ref,
            [GGUF_T_Q4_K] = tensor_dot_q4_K_ref,
            [GGUF_T_Q6_K] = tensor_dot_q6_K_ref,
            [GGUF_T_FP8_E4M3] = tensor_dot_fp8_ref,
        },
    .act =
        {
            [GGUF_T_F16] = tensor_act_f16_ref,
            [GGUF_T_Q8_0] = tensor_act_q8_0_ref,
            [GGUF_T_Q8_K] = tensor_act_q8_K_ref,
        },
    .swiglu = tensor_swiglu_ref,
};

#if defined(__x86_64__)
static const tensor_kernels dot_avx2 = {
    .name = "avx2",
    .dot =
        {
            [GGUF_T_F32] = tensor_dot_f32_avx2,
            [GGUF_T_F16] = tensor_dot_f16_avx2,
            [GGUF_T_BF16] = tensor_dot_bf16_avx2,
            [GGUF_T_Q8_0] = tensor_dot_q8_0_avx2,
            [GGUF_T_Q4_0] = tensor_dot_q4_0_avx2,
            [GGUF_T_Q4_K] = tensor_dot_q4_K_avx2,
            [GGUF_T_Q6_K] = tensor_dot_q6_K_avx2,
            [GGUF_T_FP8_E4M3] = tensor_dot_fp8_avx2,
        },
    .act =
        {
            [GGUF_T_F16] = tensor_act_f16_avx2,
            [GGUF_T_Q8_0] = tensor_act_q8_0_avx2,
            [GGUF_T_Q8_K] = tensor_act_q8_K_avx2,
        },
    .swiglu = tensor_swiglu_avx2,
};

/* AVX-512 (F/BW/VL): laid over the AVX2 table, so AVX2 kernels stay in use for the types it
 * has none for. The quantized entries need VNNI and are a separate layer. */
static const tensor_kernels dot_avx512 = {
    .name = "avx512",
    .dot =
        {
            [GGUF_T_F32] = tensor_dot_f32_avx512,
            [GGUF_T_F16] = tensor_dot_f16_avx512,
        },
    .act =
        {
            [GGUF_T_F16] = tensor_act_f16_avx512,
            [GGUF_T_Q8_0] = tensor_act_q8_0_avx512,
        },
    .gemm =
        {
            [GGUF_T_F32] = &tensor_gemm_f32_avx512,
            [GGUF_T_F16] = &tensor_gemm_f16_avx512,
        },
    .swiglu = tensor_swiglu_avx512,
};

static const tensor_kernels dot_avx512_vnni = {
    .name = "avx512-vnni",
    .dot =
        {
            [GGUF_T_Q8_0] = tensor_dot_q8_0_avx512,
            [GGUF_T_Q4_0] = tensor_dot_q4_0_avx512,
        },
    .gemm =
        {
            [GGUF_T_Q8_0] = &tensor_gemm_q8_0_avx512,
            [GGUF_T_Q4_0] = &tensor_gemm_q4_0_avx512,
        },
};
#endif

#if defined(__aarch64__)
static const tensor_kernels dot_neon = {
    .name = "neon",
    .dot =
        {
            [GGUF_T_F32] = tensor_dot_f32_neon,
            [GGUF_T_F16] = tensor_dot_f16_neon,
            [GGUF_T_BF16] = tensor_dot_bf16_neon,
            [GGUF_T_Q8_0] = tensor_dot_q8_0_neon,
            [GGUF_T_Q4_0] = tensor_dot_q4_0_neon,
            [GGUF_T_Q4_K] = tensor_dot_q4_K_neon,
            [GGUF_T_Q6_K] = tensor_dot_q6_K_neon,
            [GGUF_T_FP8_E4M3] = tensor_dot_fp8_neon,
        },
    .act =
        {
            [GGUF_T_F16] = tensor_act_f16_neon,
            [GGUF_T_Q8_0] = tensor_act_q8_0_neon,
        },
    .swiglu = tensor_swiglu_neon,
};

/* ARMv8.2 sdot (Cortex-A76 and later): laid over the NEON table. */
static const tensor_kernels dot_neon_dotprod = {
    .name = "neon-dotprod",
    .dot =
        {
            [GGUF_T_Q8_0] = tensor_dot_q8_0_neon_dot,
            [GGUF_T_Q4_0] = tensor_dot_q4_0_neon_dot,
        },
};
#endif

static tensor_kernels dot_best; /* the chosen family over the scalar references */
static pthread_once_t dot_best_once = PTHREAD_ONCE_INIT;
static atomic_bool dot_forced_scalar;

/* Lays a family's entries over the table in use (the others stay). */
static void dot_overlay(const tensor_kernels *family)
{
    dot_best.name = family->name;
    for (int t = 0; t < TENSOR_MAX_TYPE; t++) {
        if (family->dot[t]) dot_best.dot[t] = family->dot[t];
        if (family->act[t]) dot_best.act[t] = family->act[t];
        if (family->gemm[t]) dot_best.gemm[t] = family->gemm[t];
    }
    if (family->swiglu) dot_best.swiglu = family->swiglu;
}

static void dot_use(const tensor_kernels *family)
{
    dot_best = dot_scalar;
    dot_overlay(family);
}

static void dot_pick_best(void)
{
    dot_use(&dot_scalar);
#if defined(__x86_64__)
    if (tensor_avx2_usable()) dot_use(&dot_avx2);
    if (tensor_avx2_usable() && tensor_avx512_usable()) dot_overlay(&dot_avx512);
    if (tensor_avx2_usable() && tensor_avx512_vnni_usable()) dot_overlay(&dot_avx512_vnni);
#endif
#if defined(__aarch64__)
    if (tensor_neon_usable()) dot_use(&dot_neon);
    if (tensor_neon_dotprod_usable()) dot_overlay(&dot_neon_dotprod);
#endif
}

const tensor_kernels *tensor_kernels_scalar(void)
{
    return &dot_scalar;
}

const tensor_kernels *tensor_kernels_get(void)
{
    if (atomic_load_explicit(&dot_forced_scalar, memory_order_relaxed)) return &dot_scalar;
    pthread_once(&dot_best_once, dot_pick_best);
    return &dot_best;
}

const char *tensor_simd_name(void)
{
    return tensor_kernels_get()->name;
}

bool tensor_force_scalar(bool on)
{
    return atomic_exchange(&dot_forced_scalar, on);
}

tensor_dot_fn tensor_dot_kernel(uint32_t wtype)
{
    assert(wtype < TENSOR_MAX_TYPE && tensor_kernels_get()->dot[wtype]);
    return tensor_kernels_get()->dot[wtype];
}

float tensor_vec_dot(uint32_t type, const void *w, const void *act, int64_t n)
{
    return tensor_dot_kernel(type)(w, act, n);
}

float tensor_vec_dot_ref(uint32_t type, const void *w, const void *act, int64_t n)
{
    assert(type < TENSOR_MAX_TYPE && dot_scalar.dot[type]);
    return dot_scalar.dot[type](w, act, n);
}

/* ---- activation conversion ----------------------------------------------------------- */

uint32_t tensor_vec_dot_type(uint32_t type)
{
    switch (type) {
    case GGUF_T_Q8_0:
    case GGUF_T_Q4_0:
    case GGUF_T_FP8_E4M3:
        return GGUF_T_Q8_0;
    case GGUF_T_Q4_K:
    case GGUF_T_Q6_K:
        return GGUF_T_Q8_K;
    default:
        return type; /* F32, F16, BF16 take activations of their own type */
    }
}

void tensor_convert_act(uint32_t wtype, const float *x, void *dst, int64_t n)
{
    const uint32_t vtype = tensor_vec_dot_type(wtype);
    const tensor_act_fn act = vtype < TENSOR_MAX_TYPE ? tensor_kernels_get()->act[vtype] : NULL;
    if (act)
        act(x, dst, n);
    else
        tensor_from_f32(vtype, x, dst, n); /* F32 copy, BF16 */
}
