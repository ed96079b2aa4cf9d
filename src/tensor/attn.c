/*
 * attn.c - the two products inside attention, for the query rows that share one key/value
 * head: scores s[a][i] = (q_a . k_i) * scale and weighted sums o_a = sum_i p_a[i] * v_i. The
 * scalar references and the run-time choice of the AVX-512 versions (dot_avx512.c), which
 * compute every element with the same float operations in the same order (no fused
 * multiply-add), so the choice never changes a result; the softmax between the two stays
 * with the forward pass (model/forward.c), which calls these.
 *
 * Does not own: the KV cache layout (model/), the softmax. Called by: model/forward.c, tests.
 */
#include "tensor/tensor_int.h"

#include <pthread.h>

void tensor_attn_scores_ref(const float *const *q, int n_q, const float *k, size_t kv_stride,
                            int32_t n_k, int hd, float scale, float *s, size_t s_stride)
{
    for (int a = 0; a < n_q; a++)
        for (int32_t i = 0; i < n_k; i++) {
            const float *ki = k + (size_t)i * kv_stride;
            float sum = 0.0f;
            for (int d = 0; d < hd; d++) {
                const float prod = q[a][d] * ki[d]; /* kept apart: never a fused multiply-add */
                sum += prod;
            }
            s[(size_t)a * s_stride + (size_t)i] = sum * scale;
        }
}

void tensor_attn_values_ref(const float *p, size_t p_stride, int n_q, const int32_t *n,
                            const float *v, size_t kv_stride, int hd, float *const *o)
{
    for (int a = 0; a < n_q; a++)
        for (int d = 0; d < hd; d++) {
            float sum = 0.0f;
            for (int32_t i = 0; i < n[a]; i++) {
                const float prod =
                    p[(size_t)a * p_stride + (size_t)i] * v[(size_t)i * kv_stride + (size_t)d];
                sum += prod;
            }
            o[a][d] = sum;
        }
}

#if defined(__x86_64__)
static bool attn_avx512;
static pthread_once_t attn_once = PTHREAD_ONCE_INIT;

static void attn_pick(void)
{
    attn_avx512 = tensor_avx512_usable();
}

/* The AVX-512 versions unless the scalar references are forced (tensor_force_scalar). */
static bool attn_use_avx512(void)
{
    pthread_once(&attn_once, attn_pick);
    return attn_avx512 && tensor_kernels_get() != tensor_kernels_scalar();
}
#endif

void tensor_attn_scores(const float *const *q, int n_q, const float *k, size_t kv_stride,
                        int32_t n_k, int hd, float scale, float *s, size_t s_stride)
{
#if defined(__x86_64__)
    if (attn_use_avx512()) {
        tensor_attn_scores_avx512(q, n_q, k, kv_stride, n_k, hd, scale, s, s_stride);
        return;
    }
#endif
    tensor_attn_scores_ref(q, n_q, k, kv_stride, n_k, hd, scale, s, s_stride);
}

void tensor_attn_values(const float *p, size_t p_stride, int n_q, const int32_t *n, const float *v,
                        size_t kv_stride, int hd, float *const *o)
{
#if defined(__x86_64__)
    if (attn_use_avx512()) {
        tensor_attn_values_avx512(p, p_stride, n_q, n, v, kv_stride, hd, o);
        return;
    }
#endif
    tensor_attn_values_ref(p, p_stride, n_q, n, v, kv_stride, hd, o);
}
