/*
 * dot_avx512.c - the AVX-512 kernels (F, BW, VL; VNNI's vpdpbusd for the quantized ones):
 * dot products for F32, F16, Q8_0 and Q4_0 weights, activation conversion to Q8_0 and F16,
 * the batched "gemm" kernels that tensor_matmul uses for F32, F16, Q8_0 and Q4_0 weights
 * (prompt batches and, with one activation row, decode), and the two attention products.
 * Each has a scalar twin (dot.c, quant.c, convert.c, attn.c) and tests compare them
 * (tests/tensor/test_avx512.c, test_matmul.c). Only these functions are compiled for
 * AVX-512 (per-function target attributes; VBMI too for one Q4_0 decode path); dot.c and
 * attn.c call them only when tensor_avx512_usable() / tensor_avx512_vnni_usable(). On other
 * architectures this file is empty. Does not own dispatch (dot.c, attn.c) or the split of
 * a matmul across threads (matmul.c).
 *
 * Numerics. Quantized: every block contributes (d_w*d_x) * (float)isum with isum exact,
 * and the terms are summed in the AVX2 kernels' order: eight lanes, lane k summing blocks
 * k, k+8, k+16, ... in turn, then lanes 0..7 added one after the other. The dot kernels, the
 * gemm kernels and dot_avx2.c therefore give bit-identical results (and equal the scalar
 * reference for rows of at most 8 blocks). Float: sixteen lanes, lane l summing
 * w[i]*x[i] for i = l mod 16 by FMA in order of i, then a fixed tree (a512_hsum); the dot
 * and gemm kernels share it, so they agree bit for bit with each other and with the
 * reference to rounding.
 *
 * The quantized gemm works on 16 weight rows at once with the rows in the 16 lanes of a
 * register: a tile's blocks are transposed so that dword j of each row's block sits in lane
 * `row` of register j ("packing"), and vpdpbusd multiplies it with dword j of an
 * activation block broadcast to all lanes, which sums each row's block exactly with no
 * horizontal additions. vpdpbusd takes unsigned times signed bytes: Q4_0 nibbles are
 * unsigned already (value = nibble - 8), Q8_0 weights are offset by 128 (x ^ 0x80); each
 * activation block's sum times 8 or 128 is subtracted through the starting value of the
 * block's sum, precomputed when the activations are packed. The eight block orders (lanes
 * of the AVX2 kernel) become eight passes, one per class of blocks b = k mod 8.
 *
 * Decode (one activation row) cannot amortise packing, so it reads each weight row in
 * place, one row after the other (two or four rows read side by side came out of memory
 * at half the speed on the Zen 5 this was tuned on): 16 blocks at a time, vpdpbusd leaves
 * partial sums in 4 or 8 lanes per block, a transposing tree adds them up exactly, and the
 * weight scales come out of the same wide loads by word permutes (a gather was slower).
 */
#include "tensor/tensor_int.h"

#if defined(__x86_64__)

#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#include <string.h>

#define A512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define VBMI_FN                                                                                    \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))
#define A512_INLINE static inline __attribute__((always_inline))

/* ---- CPU features -------------------------------------------------------------------------- */

/* CPUID leaf 7 and XCR0 asked directly (as dot_avx2.c does for F16C): the OS must save the
 * opmask and all 32 ZMM registers (XCR0 bits 1, 2, 5, 6, 7). */
static bool x86_leaf7(unsigned *ebx, unsigned *ecx)
{
    unsigned a, d;
    return __get_cpuid_count(7, 0, &a, ebx, ecx, &d) != 0;
}

static bool x86_os_saves_zmm(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xe6u) == 0xe6u;
}

bool tensor_avx512_usable(void)
{
    unsigned b, c;
    if (!tensor_avx2_usable() || !x86_leaf7(&b, &c) || !x86_os_saves_zmm()) return false;
    const unsigned need = (1u << 16) | (1u << 30) | (1u << 31); /* F, BW, VL */
    return (b & need) == need;
}

bool tensor_avx512_vnni_usable(void)
{
    unsigned b, c;
    return tensor_avx512_usable() && x86_leaf7(&b, &c) && (c & (1u << 11));
}

/* ---- float kernels --------------------------------------------------------------------------- */

/* The sixteen lanes summed by a fixed tree: lanes i and i+8, then i and i+4, i and i+2,
 * then the last pair. Written out so that gcc and clang give the same order. */
A512_FN A512_INLINE float a512_hsum(__m512 v)
{
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

A512_FN A512_INLINE __mmask16 a512_tail_mask(int64_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* Sixteen weights from i on (fewer under mask m), as floats. */
A512_FN A512_INLINE __m512 a512_load_w(const void *w, int64_t i, bool f16, __mmask16 m)
{
    if (f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
    return _mm512_maskz_loadu_ps(m, (const float *)w + i);
}

A512_FN A512_INLINE float a512_dot_f(const void *w, const void *act, int64_t n, bool f16)
{
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        acc =
            _mm512_fmadd_ps(a512_load_w(w, i, f16, 0xffff), a512_load_w(act, i, f16, 0xffff), acc);
    if (i < n) {
        const __mmask16 m = a512_tail_mask(n - i);
        acc = _mm512_fmadd_ps(a512_load_w(w, i, f16, m), a512_load_w(act, i, f16, m), acc);
    }
    return a512_hsum(acc);
}

A512_FN float tensor_dot_f32_avx512(const void *w, const void *act, int64_t n)
{
    return a512_dot_f(w, act, n, false);
}

A512_FN float tensor_dot_f16_avx512(const void *w, const void *act, int64_t n)
{
    return a512_dot_f(w, act, n, true);
}

/* ---- activation conversion ------------------------------------------------------------------- */

/* One block as ggml-cpu's quantize_row_q8_0: d = amax/127 as fp16 (returned), q = RNE(x *
 * 127/amax) in the int32 lanes of q[0] (elements 0-15) and q[1] (16-31). F16C's conversion
 * rounds to nearest even, as tensor_f32_to_f16. */
A512_FN A512_INLINE uint16_t a512_quantize_core(const float *x, __m512i q[2])
{
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const __m512 a = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1));
    __m256 m8 = _mm256_max_ps(_mm512_castps512_ps256(a),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float amax = _mm_cvtss_f32(m);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m512 s = _mm512_set1_ps(id);
    q[0] = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, s),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q[1] = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, s),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT);
}

A512_FN A512_INLINE void a512_quantize_block(const float *x, block_q8_0 *y)
{
    __m512i q[2];
    y->d = a512_quantize_core(x, q);
    _mm_storeu_si128((__m128i *)y->qs, _mm512_cvtsepi32_epi8(q[0]));
    _mm_storeu_si128((__m128i *)(y->qs + 16), _mm512_cvtsepi32_epi8(q[1]));
}

A512_FN void tensor_quantize_act_q8_0_avx512(const float *x, block_q8_0 *y, int64_t n)
{
    assert(n % QK8_0 == 0);
    for (int64_t b = 0; b < n / QK8_0; b++) a512_quantize_block(x + b * QK8_0, &y[b]);
}

A512_FN void tensor_f32_to_f16_row_avx512(const float *x, uint16_t *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = tensor_f32_to_f16(x[i]);
}

void tensor_act_q8_0_avx512(const float *x, void *y, int64_t n)
{
    tensor_quantize_act_q8_0_avx512(x, y, n);
}

void tensor_act_f16_avx512(const float *x, void *y, int64_t n)
{
    tensor_f32_to_f16_row_avx512(x, y, n);
}

/* ---- quantized dot products (one row) ------------------------------------------------------ */

/* Sixteen fp16 scales 2 bytes each, `stride` bytes apart from p (fewer under mask m; the
 * others 0), as floats. Each gather reads 4 bytes: the scale and 2 bytes of its block. */
VNNI_FN A512_INLINE __m512 vnni_gather_scales(const void *p, int stride, __mmask16 m)
{
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(stride));
    const __m512i raw = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, p, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw));
}

/* Exact int32 sums of x[j]*y[j] over blocks b and b+1 (b+1 only when `two`): lanes 0-7 hold
 * block b's eight partial sums, lanes 8-15 block b+1's. */
VNNI_FN A512_INLINE __m512i vnni_pair(const void *w, const block_q8_0 *y, int64_t b, bool two,
                                      bool q4)
{
    const __m256i z = _mm256_setzero_si256();
    const __m512i ya =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y[b].qs)),
                           two ? _mm256_loadu_si256((const __m256i *)y[b + 1].qs) : z, 1);
    if (q4) {
        /* [lo(b), hi(b) | lo(b+1), hi(b+1)]: low nibbles are elements 0-15, high 16-31. */
        const block_q4_0 *x = w;
        const __m128i qa = _mm_loadu_si128((const __m128i *)x[b].qs);
        const __m128i qb =
            two ? _mm_loadu_si128((const __m128i *)x[b + 1].qs) : _mm_setzero_si128();
        const __m512i q2 =
            _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(qa), qb, 1));
        __m512i n = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), q2);
        n = _mm512_and_si512(_mm512_mask_srli_epi16(n, 0xff00ff00u, n, 4), _mm512_set1_epi8(0x0f));
        /* (n - 8) * y = n * y - 8 * y, both exact in int32. */
        const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), n, ya);
        const __m512i c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), ya);
        return _mm512_sub_epi32(s, c);
    }
    /* vpdpbusd wants one unsigned operand: |x| times y with x's sign moved onto y. |x| <= 128
     * fits a byte, and y never holds -128, so y * sign(x) fits too. */
    const block_q8_0 *x = w;
    const __m512i xa =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[b].qs)),
                           two ? _mm256_loadu_si256((const __m256i *)x[b + 1].qs) : z, 1);
    const __mmask64 neg = _mm512_movepi8_mask(xa);
    const __m512i sy = _mm512_mask_sub_epi8(ya, neg, _mm512_setzero_si512(), ya);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(xa), sy);
}

/* Four vectors of 4+4+4+4 partial sums (P[q]: blocks 4q..4q+3, one per 128 bits) to the
 * sixteen block sums in order, by a transposing tree. */
VNNI_FN A512_INLINE __m512i vnni_tree4(const __m512i P[4])
{
    /* Level 2: chunk i of Q[r] holds block 8r+i (lanes 0-1) and block 8r+4+i (lanes 2-3). */
    const __m512i Q0 =
        _mm512_add_epi32(_mm512_unpacklo_epi64(P[0], P[1]), _mm512_unpackhi_epi64(P[0], P[1]));
    const __m512i Q1 =
        _mm512_add_epi32(_mm512_unpacklo_epi64(P[2], P[3]), _mm512_unpackhi_epi64(P[2], P[3]));
    /* Level 3: chunk i holds blocks i, 8+i, 4+i, 12+i. */
    const __m512i x = _mm512_mask_blend_epi32(0xaaaa, Q0, Q1);
    const __m512i yv = _mm512_mask_shuffle_epi32(_mm512_shuffle_epi32(Q0, _MM_PERM_CDAB), 0xaaaa,
                                                 Q1, _MM_PERM_CDAB);
    const __m512i s = _mm512_add_epi32(x, yv);
    return _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15), s);
}

/* Eight vectors of 8+8 partial sums (v[p]: blocks 2p and 2p+1) to the sixteen block sums in
 * order. */
VNNI_FN A512_INLINE __m512i vnni_tree(const __m512i v[8])
{
    /* Level 1: P[q] holds blocks 4q..4q+3, four partial sums each, one block per 128 bits. */
    __m512i P[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
        P[q] = _mm512_add_epi32(_mm512_shuffle_i64x2(v[2 * q], v[2 * q + 1], 0x88),
                                _mm512_shuffle_i64x2(v[2 * q], v[2 * q + 1], 0xdd));
    return vnni_tree4(P);
}

/* The exact sums of blocks b0 .. b0+g-1 (g <= 16) in lanes 0 .. g-1 (the rest 0). */
VNNI_FN A512_INLINE __m512i vnni_group_isum(const void *w, const block_q8_0 *y, int64_t b0, int g,
                                            bool q4)
{
    __m512i v[8];
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++)
        v[p] = 2 * p < g ? vnni_pair(w, y, b0 + 2 * p, 2 * p + 1 < g, q4) : _mm512_setzero_si512();
    return vnni_tree(v);
}

/* The AVX2 kernel's eight lanes, summed in order: the row's result. */
A512_FN A512_INLINE float a512_sum_lanes(__m256 acc)
{
    _Alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    float sum = 0.0f;
    for (int k = 0; k < 8; k++) sum += lanes[k];
    return sum;
}

VNNI_FN A512_INLINE float vnni_dot_q(const void *w, const block_q8_0 *y, int64_t nb, bool q4)
{
    const int wstride = q4 ? (int)sizeof(block_q4_0) : (int)sizeof(block_q8_0);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int g = nb - b0 < 16 ? (int)(nb - b0) : 16;
        const __mmask16 m = a512_tail_mask(g);
        const __m512i isum = vnni_group_isum(w, y, b0, g, q4);
        const __m512 sw = vnni_gather_scales((const uint8_t *)w + b0 * wstride, wstride, m);
        const __m512 sx = vnni_gather_scales(&y[b0], (int)sizeof(block_q8_0), m);
        const __m512 t = _mm512_mul_ps(_mm512_mul_ps(sw, sx), _mm512_cvtepi32_ps(isum));
        /* Blocks b0+k and then b0+8+k go to lane k, as in the AVX2 kernel. */
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(t));
        acc = _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
    }
    return a512_sum_lanes(acc);
}

VNNI_FN float tensor_dot_q8_0_avx512(const void *w, const void *act, int64_t n)
{
    assert(n % QK8_0 == 0);
    return vnni_dot_q(w, act, n / QK8_0, false);
}

VNNI_FN float tensor_dot_q4_0_avx512(const void *w, const void *act, int64_t n)
{
    assert(n % QK4_0 == 0);
    return vnni_dot_q(w, act, n / QK4_0, true);
}

/* ---- quantized gemm ----------------------------------------------------------------------- */

/* Packed activations. One row (decode): the row's quants, then the blocks' scales as
 * float, then the starting values of their block sums (-8 or -128 times the sum of the
 * quants). The quants are padded with zeros to a multiple of 16 blocks (a decode group may
 * read a whole group); for Q8_0 weights they are in
 * order, for Q4_0 weights each 4 blocks hold the blocks' first halves (elements 0-15, the low
 * nibbles) and then their second halves, matching 4 blocks' nibbles in one register.
 * Several rows: groups of QG_C rows (the last padded with zero rows); in a group, per block,
 * the rows' 32 quants, their scales and their starting sums. */
#define QG_C    8  /* activation rows per pass */
#define QG_ROWS 16 /* weight rows per tile: the lanes */
static_assert(QG_ROWS == TENSOR_X16_ROWS, "the interleaved layout's tiles are the lanes");
#define QG_ACT_BLOCK  (QG_C * (QK8_0 + 4 + 4)) /* bytes of one block of a group */
#define QG_ACT_D      (QG_C * QK8_0)           /* offset of the scales in it */
#define QG_ACT_C      (QG_ACT_D + QG_C * 4)    /* offset of the starting sums */
#define QG_PACK_BLOCK (8 * 64 + 64)            /* a packed block: 8 registers, 16 scales */
#define QG_MAX_PACK   64                       /* blocks of one class packed at once */
#define QG_MAX_K      (8 * QG_MAX_PACK * QK8_0)

/* Blocks of the one-row layout's quants: nb rounded up to a multiple of 16 (a group). */
static int64_t qg_nb16(int64_t nb)
{
    return (nb + 15) / 16 * 16;
}

static size_t qg_act_bytes(int64_t k, int64_t n_rows)
{
    const int64_t nb = k / QK8_0;
    if (n_rows == 1) return (size_t)qg_nb16(nb) * QK8_0 + (size_t)nb * 8;
    return (size_t)((n_rows + QG_C - 1) / QG_C) * (size_t)nb * QG_ACT_BLOCK;
}

/* Quantizes one block of 32 floats (x NULL: a padding row) into its places: quants 0-15 at
 * lo, 16-31 at hi, the scale at d, the starting sum at start. */
A512_FN A512_INLINE void qg_put_block(const float *x, int32_t offset, uint8_t *lo, uint8_t *hi,
                                      uint8_t *d, uint8_t *start)
{
    float dv = 0.0f;
    int32_t sv = 0;
    __m512i q[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    if (x) {
        dv = _cvtsh_ss(a512_quantize_core(x, q));
        sv = -offset * _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
    }
    _mm_storeu_si128((__m128i *)lo, _mm512_cvtsepi32_epi8(q[0]));
    _mm_storeu_si128((__m128i *)hi, _mm512_cvtsepi32_epi8(q[1]));
    memcpy(d, &dv, 4);
    memcpy(start, &sv, 4);
}

/* Rows [r0, r1) of x (n_rows x k floats) into the packed layout; r0 and r1 are multiples of
 * QG_C or n_rows, and the padding rows of the last group are written as zeros. */
A512_FN A512_INLINE void qg_pack_act(const float *x, int64_t n_rows, int64_t k, void *dst,
                                     int64_t r0, int64_t r1, bool q4)
{
    const int64_t nb = k / QK8_0, nb16 = qg_nb16(nb);
    const int32_t offset = q4 ? 8 : 128;
    uint8_t *out = dst;
    if (n_rows == 1) {
        uint8_t *d = out + nb16 * QK8_0, *start = d + 4 * nb;
        memset(out + nb * QK8_0, 0, (size_t)(nb16 - nb) * QK8_0); /* padding blocks */
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *lo = out + b * QK8_0, *hi = lo + QK8_0 / 2;
            if (q4) {
                lo = out + b / 4 * 4 * QK8_0 + b % 4 * (QK8_0 / 2);
                hi = lo + 2 * QK8_0;
            }
            qg_put_block(x + b * QK8_0, offset, lo, hi, d + 4 * b, start + 4 * b);
        }
        return;
    }
    const int64_t g1 = (r1 + QG_C - 1) / QG_C;
    for (int64_t g = r0 / QG_C; g < g1; g++) {
        uint8_t *grp = out + (size_t)g * (size_t)nb * QG_ACT_BLOCK;
        for (int c = 0; c < QG_C; c++) {
            const int64_t r = g * QG_C + c;
            for (int64_t b = 0; b < nb; b++) {
                uint8_t *blk = grp + (size_t)b * QG_ACT_BLOCK;
                qg_put_block(r < n_rows ? x + r * k + b * QK8_0 : NULL, offset, blk + c * QK8_0,
                             blk + c * QK8_0 + QK8_0 / 2, blk + QG_ACT_D + c * 4,
                             blk + QG_ACT_C + c * 4);
            }
        }
    }
}

A512_FN static void qg_pack_act_q8_0(const float *x, int64_t n_rows, int64_t k, void *dst,
                                     int64_t r0, int64_t r1)
{
    qg_pack_act(x, n_rows, k, dst, r0, r1, false);
}

A512_FN static void qg_pack_act_q4_0(const float *x, int64_t n_rows, int64_t k, void *dst,
                                     int64_t r0, int64_t r1)
{
    qg_pack_act(x, n_rows, k, dst, r0, r1, true);
}

/* The 8x8 dword transpose of each 256-bit half of z[0..7] (row i in the low half, row i+8 in
 * the high half): afterwards register j holds dword j of rows 0..15 in lanes 0..15. */
A512_FN A512_INLINE void qg_transpose(__m512i z[8], uint8_t *out)
{
    __m512i t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
    }
    /* u[j], u[4+j]: dword j (chunk 0) and 4+j (chunk 1) of rows 0-3 / 4-7 (and 8-11 / 12-15). */
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        u[4 * h + 0] = _mm512_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]);
        u[4 * h + 1] = _mm512_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]);
        u[4 * h + 2] = _mm512_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm512_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        _mm512_store_si512(out + 64 * j, _mm512_permutex2var_epi64(u[j], lo, u[4 + j]));
        _mm512_store_si512(out + 64 * (4 + j), _mm512_permutex2var_epi64(u[j], hi, u[4 + j]));
    }
}

/* One Q4_0 block of 16 rows (row i at rp[i] + b * step[i]) packed: the rows' 16 quant bytes
 * (four dwords each) transposed so that register j holds dword j of every row, then split
 * into nibbles: the low ones are elements 4j..4j+3 (packed register j), the high ones
 * elements 16+4j.. (packed register 4+j). Half the shuffles of expanding first. */
VNNI_FN A512_INLINE void qg_pack_q4_block(const uint8_t *const rp[QG_ROWS],
                                          const size_t step[QG_ROWS], size_t b, uint8_t *out)
{
    __m512i q[4]; /* rows 4g .. 4g+3, one per 128 bits */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const int r = 4 * g;
#define QG_ROW(i) _mm_loadu_si128((const __m128i *)(rp[r + (i)] + b * step[r + (i)] + 2))
        __m512i v = _mm512_castsi128_si512(QG_ROW(0));
        v = _mm512_inserti32x4(v, QG_ROW(1), 1); /* immediates must be literals for clang */
        v = _mm512_inserti32x4(v, QG_ROW(2), 2);
        q[g] = _mm512_inserti32x4(v, QG_ROW(3), 3);
#undef QG_ROW
    }
    const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        /* Dword j of each 128-bit chunk of two registers: rows 0-7 (or 8-15) in 8 lanes. */
        const __m512i idx = _mm512_add_epi32(
            _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28),
            _mm512_set1_epi32(j));
        const __m512i lo8 = _mm512_permutex2var_epi32(q[0], idx, q[1]);
        const __m512i hi8 = _mm512_permutex2var_epi32(q[2], idx, q[3]);
        const __m512i r = _mm512_inserti64x4(lo8, _mm512_castsi512_si256(hi8), 1);
        _mm512_store_si512(out + 64 * j, _mm512_and_si512(r, m4));
        _mm512_store_si512(out + 64 * (4 + j), _mm512_and_si512(_mm512_srli_epi16(r, 4), m4));
    }
}

/* Packs blocks cls, cls+8, ... (m of them) of weight rows row0 .. row0+nr-1 into pack; rows
 * past nr are zeros (their lanes are computed but never stored). */
VNNI_FN A512_INLINE void qg_pack_w(const tensor_view *w, int64_t row0, int nr, int cls, int m,
                                   uint8_t *pack, bool q4)
{
    static const uint8_t zero_block[sizeof(block_q8_0)];
    const size_t rb = w->row_bytes, bs = q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    const uint8_t *base = (const uint8_t *)w->data + (size_t)row0 * rb;
    const uint8_t *rp[QG_ROWS];
    size_t step[QG_ROWS];
    for (int i = 0; i < QG_ROWS; i++) {
        rp[i] = i < nr ? base + (size_t)i * rb : zero_block;
        step[i] = i < nr ? bs : 0;
    }
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)rb));
    const __mmask16 rows = a512_tail_mask(nr);
    for (int p = 0; p < m; p++) {
        const size_t b = (size_t)cls + 8 * (size_t)p;
        uint8_t *out = pack + (size_t)p * QG_PACK_BLOCK;
        if (q4) {
            qg_pack_q4_block(rp, step, b, out);
        } else {
            __m512i z[8];
            for (int i = 0; i < 8; i++) {
                const uint8_t *a = rp[i] + b * step[i] + 2, *c = rp[i + 8] + b * step[i + 8] + 2;
                const __m512i r2 = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                    _mm256_loadu_si256((const __m256i *)c), 1);
                z[i] = _mm512_xor_si512(r2, _mm512_set1_epi8((char)0x80));
            }
            qg_transpose(z, out);
        }
        const __m512i raw =
            _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, idx, base + b * bs, 1);
        _mm512_store_ps(out + 512, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw)));
    }
}

/* The same packing from a tile in TENSOR_LAYOUT_Q4_0_X16 (repack.c): the rows' quant dwords
 * are already side by side, so packing is splitting the nibbles and widening the scales. */
VNNI_FN A512_INLINE void qg_unpack_x16(const uint8_t *tile, int cls, int m, uint8_t *pack)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int p = 0; p < m; p++) {
        const uint8_t *c = tile + ((size_t)cls + 8 * (size_t)p) * TENSOR_X16_CHUNK;
        uint8_t *out = pack + (size_t)p * QG_PACK_BLOCK;
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m512i r = _mm512_loadu_si512(c + 64 * j);
            _mm512_store_si512(out + 64 * j, _mm512_and_si512(r, m4));
            _mm512_store_si512(out + 64 * (4 + j), _mm512_and_si512(_mm512_srli_epi16(r, 4), m4));
        }
        _mm512_store_ps(out + 512, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(c + 256))));
    }
}

/* One class pass for C activation rows of a group: the blocks packed in pack (m of them,
 * blocks cls + 8p) against the rows, each row's terms summed in a register and added to y
 * (or stored in y for the first class). */
VNNI_FN A512_INLINE void qg_pass(const uint8_t *pack, int m, int cls, const uint8_t *grp, int C,
                                 float *y, int64_t ldy, __mmask16 rows, bool first)
{
    __m512 L[QG_C];
#pragma GCC unroll 16
    for (int c = 0; c < QG_C; c++)
        if (c < C) L[c] = _mm512_setzero_ps();
    for (int p = 0; p < m; p++) {
        const uint8_t *wp = pack + (size_t)p * QG_PACK_BLOCK;
        const uint8_t *ab = grp + ((size_t)cls + 8 * (size_t)p) * QG_ACT_BLOCK;
        __m512i is[QG_C];
#pragma GCC unroll 16
        for (int c = 0; c < QG_C; c++) {
            int32_t s;
            memcpy(&s, ab + QG_ACT_C + 4 * c, 4);
            if (c < C) is[c] = _mm512_set1_epi32(s);
        }
#pragma GCC unroll 16
        for (int j = 0; j < 8; j++) {
            const __m512i wj = _mm512_load_si512(wp + 64 * j);
#pragma GCC unroll 16
            for (int c = 0; c < QG_C; c++) {
                if (c >= C) continue;
                /* The activation dword as an embedded broadcast operand. */
                __asm__("vpdpbusd %2%{1to16%}, %1, %0"
                        : "+v"(is[c])
                        : "v"(wj), "m"(*(const int32_t *)(ab + c * QK8_0 + 4 * j)));
            }
        }
        const __m512 sw = _mm512_load_ps(wp + 512);
#pragma GCC unroll 16
        for (int c = 0; c < QG_C; c++) {
            float d;
            memcpy(&d, ab + QG_ACT_D + 4 * c, 4);
            if (c < C)
                L[c] = _mm512_add_ps(L[c], _mm512_mul_ps(_mm512_mul_ps(sw, _mm512_set1_ps(d)),
                                                         _mm512_cvtepi32_ps(is[c])));
        }
    }
#pragma GCC unroll 16
    for (int c = 0; c < QG_C; c++) {
        if (c >= C) continue;
        float *yc = y + c * ldy;
        const __m512 prev = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows, yc);
        _mm512_mask_storeu_ps(yc, rows, _mm512_add_ps(prev, L[c]));
    }
}

/* Weight blocks b and b+1 (b+1 only when `two`) as the unsigned bytes vpdpbusd takes: Q4_0
 * nibbles [lo(b), hi(b) | lo(b+1), hi(b+1)], or Q8_0 quants + 128. */
VNNI_FN A512_INLINE __m512i qg_weight_pair(const uint8_t *row, int64_t b, bool two, bool q4)
{
    if (q4) {
        const uint8_t *p = row + (size_t)b * sizeof(block_q4_0) + 2;
        const __m128i qa = _mm_loadu_si128((const __m128i *)p);
        const __m128i qb =
            two ? _mm_loadu_si128((const __m128i *)(p + sizeof(block_q4_0))) : _mm_setzero_si128();
        const __m512i q2 =
            _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(qa), qb, 1));
        const __m512i n = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), q2);
        return _mm512_and_si512(_mm512_mask_srli_epi16(n, 0xff00ff00u, n, 4),
                                _mm512_set1_epi8(0x0f));
    }
    const uint8_t *p = row + (size_t)b * sizeof(block_q8_0) + 2;
    const __m512i x =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p)),
                           two ? _mm256_loadu_si256((const __m256i *)(p + sizeof(block_q8_0)))
                               : _mm256_setzero_si256(),
                           1);
    return _mm512_xor_si512(x, _mm512_set1_epi8((char)0x80));
}

/* Exact partial sums of 4 Q4_0 blocks (raw: their 16-byte quants, one block per 128 bits)
 * against the one-row layout from block b on: four lanes per block. Low nibbles meet the
 * blocks' first halves, high nibbles their second halves. */
VNNI_FN A512_INLINE __m512i qg_quad_dot(__m512i raw, const uint8_t *act, int64_t b)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i lo = _mm512_and_si512(raw, m4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
    const uint8_t *a = act + (size_t)b * QK8_0;
    const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(a));
    return _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(a + 2 * QK8_0));
}

/* The quants of Q4_0 blocks b .. b+n-1 (n <= 4) of a row, one block per 128 bits, zeros
 * after the n-th. */
VNNI_FN A512_INLINE __m512i qg_quad_load(const uint8_t *row, int64_t b, int n)
{
    const uint8_t *p = row + (size_t)b * sizeof(block_q4_0) + 2;
    __m512i raw = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p));
    if (n > 1) raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + 18)), 1);
    if (n > 2) raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + 36)), 2);
    if (n > 3) raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + 54)), 3);
    if (n < 4) raw = _mm512_maskz_mov_epi32((__mmask16)((1u << (4 * n)) - 1u), raw);
    return raw;
}

/* Up to 64 bytes from p of which `avail` exist (masked, so nothing past them is read). */
VNNI_FN A512_INLINE __m512i qg_load_upto(const uint8_t *p, int64_t avail)
{
    if (avail >= 64) return _mm512_loadu_si512(p);
    if (avail <= 0) return _mm512_setzero_si512();
    return _mm512_maskz_loadu_epi8(((__mmask64)1 << avail) - 1, p);
}

/* Word indices for qg_row_scales: window w's scales go to lanes w*per .. w*per+per-1. */
static const uint16_t qg_scale_idx_q4[2][32] = {
    {0, 9, 18, 27, 36, 45, 54, 63},
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 18, 27, 36, 45, 54, 63},
};
static const uint16_t qg_scale_idx_q8[4][32] = {
    {0, 17, 34, 51},
    {0, 0, 0, 0, 0, 17, 34, 51},
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 34, 51},
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 34, 51},
};

/* The fp16 scales of the 16 blocks from p (avail bytes readable), as floats: wide loads of
 * the blocks and word permutes, cheaper than a gather. A 128-byte window holds the scales of
 * 8 Q4_0 blocks (words 0, 9, .. 63) or 4 Q8_0 blocks (words 0, 17, 34, 51). */
VNNI_FN A512_INLINE __m512 qg_row_scales(const uint8_t *p, int64_t avail, bool q4)
{
    const int per = q4 ? 8 : 4;          /* scales per window */
    const int64_t step = q4 ? 144 : 136; /* bytes between windows */
    __m512i r = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int wdw = 0; wdw < 16 / per; wdw++) {
        const int64_t o = wdw * step;
        const __m512i idx = _mm512_loadu_si512(q4 ? qg_scale_idx_q4[wdw] : qg_scale_idx_q8[wdw]);
        const __m512i lo = qg_load_upto(p + o, avail - o);
        const __m512i hi = qg_load_upto(p + o + 64, avail - o - 64);
        const __mmask32 lanes = ((__mmask32)((1u << per) - 1u)) << (wdw * per);
        r = _mm512_mask_mov_epi16(r, lanes, _mm512_permutex2var_epi16(lo, idx, hi));
    }
    return _mm512_cvtph_ps(_mm512_castsi512_si256(r));
}

/* The terms (d_w*d_x) * isum of 16 blocks from b0 (lanes 0 .. g-1, the rest 0) given their
 * exact integer sums without the activation offsets, and the weight scales. */
VNNI_FN A512_INLINE __m512 qg_terms(__m512i isum, __m512 sw, const uint8_t *act, int64_t nb,
                                    int64_t b0, int g)
{
    const float *ad = (const float *)(act + qg_nb16(nb) * QK8_0);
    const int32_t *start = (const int32_t *)(ad + nb);
    const __mmask16 m = a512_tail_mask(g);
    isum = _mm512_add_epi32(isum, _mm512_maskz_loadu_epi32(m, start + b0));
    const __m512 sx = _mm512_maskz_loadu_ps(m, ad + b0);
    /* Lanes past the row may hold the next row's scales (an infinity would make 0 * inf). */
    if (g < 16) sw = _mm512_maskz_mov_ps(m, sw);
    return _mm512_mul_ps(_mm512_mul_ps(sw, sx), _mm512_cvtepi32_ps(isum));
}

/* The terms of Q8_0 blocks b0 .. b0+g-1 (g <= 16) of one weight row against the one-row
 * activation layout. `whole` (a constant after inlining: the fast path) says that 16 blocks
 * may be read from b0 even when g < 16 (the memory after the row is the next row's): the
 * blocks past the row meet the activations' zero padding and get scale 0. */
VNNI_FN A512_INLINE __m512 qg_group_q8(const uint8_t *row, const uint8_t *act, int64_t nb,
                                       int64_t b0, int g, bool whole)
{
    __m512i v[8];
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++) {
        const int64_t b = b0 + 2 * p;
        if (!whole && 2 * p >= g) {
            v[p] = _mm512_setzero_si512();
            continue;
        }
        const __m512i ya = _mm512_loadu_si512(act + b * QK8_0); /* padded to 16 blocks */
        v[p] = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                   qg_weight_pair(row, b, whole || 2 * p + 1 < g, false), ya);
    }
    /* A whole group's scale windows end inside it: no masks needed. */
    const int64_t avail = whole ? INT64_MAX / 2 : (nb - b0) * (int64_t)sizeof(block_q8_0);
    const __m512 sw = qg_row_scales(row + b0 * sizeof(block_q8_0), avail, false);
    return qg_terms(vnni_tree(v), sw, act, nb, b0, g);
}

/* The same for Q4_0, loading each block's quants on its own. */
VNNI_FN A512_INLINE __m512 qg_group_q4(const uint8_t *row, const uint8_t *act, int64_t nb,
                                       int64_t b0, int g, bool whole)
{
    __m512i P[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++)
        P[q] = !whole && 4 * q >= g
                   ? _mm512_setzero_si512()
                   : qg_quad_dot(
                         qg_quad_load(row, b0 + 4 * q, whole || g - 4 * q >= 4 ? 4 : g - 4 * q),
                         act, b0 + 4 * q);
    const int64_t avail = whole ? INT64_MAX / 2 : (nb - b0) * (int64_t)sizeof(block_q4_0);
    const __m512 sw = qg_row_scales(row + b0 * sizeof(block_q4_0), avail, true);
    return qg_terms(vnni_tree4(P), sw, act, nb, b0, g);
}

/* Byte indices (into two 64-byte registers) of 4 Q4_0 blocks' quants: blocks starting at byte
 * 0 of the pair (quants at 2..17, 20..35, 38..53, 56..71), or at byte 8 of it (72 bytes on,
 * seen from a register 64 bytes on). */
static const uint8_t qg_q4_idx[2][64] = {
    {2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 22, 23, 24, 25,
     26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49,
     50, 51, 52, 53, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71},
    {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 28, 29, 30, 31, 32, 33,
     34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
     58, 59, 60, 61, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79},
};

/* The same for Q4_0 with VBMI: the 16 blocks (288 bytes) come in with six wide loads, and
 * byte permutes pick out the quants of 4 blocks at a time; the scales come out of the same
 * registers (qg_row_scales' windows at 0 and 144). */
VBMI_FN A512_INLINE __m512 qg_group_q4_vbmi(const uint8_t *row, const uint8_t *act, int64_t nb,
                                            int64_t b0, int g, bool whole)
{
    const uint8_t *p = row + b0 * sizeof(block_q4_0);
    const int64_t avail = whole ? 16 * (int64_t)sizeof(block_q4_0) : (nb - b0) * 18;
    const __m512i i0 = _mm512_loadu_si512(qg_q4_idx[0]), i1 = _mm512_loadu_si512(qg_q4_idx[1]);
    __m512i z[6];
#pragma GCC unroll 6
    for (int h = 0; h < 2; h++) {
        z[3 * h + 0] = qg_load_upto(p + 144 * h, avail - 144 * h);
        z[3 * h + 1] = qg_load_upto(p + 144 * h + 64, avail - 144 * h - 64);
        z[3 * h + 2] = qg_load_upto(p + 144 * h + 128,
                                    16 < avail - 144 * h - 128 ? 16 : avail - 144 * h - 128);
    }
    __m512i P[4];
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        P[2 * h] =
            qg_quad_dot(_mm512_permutex2var_epi8(z[3 * h], i0, z[3 * h + 1]), act, b0 + 8 * h);
        P[2 * h + 1] = qg_quad_dot(_mm512_permutex2var_epi8(z[3 * h + 1], i1, z[3 * h + 2]), act,
                                   b0 + 8 * h + 4);
    }
    const __m512i w0 =
        _mm512_permutex2var_epi16(z[0], _mm512_loadu_si512(qg_scale_idx_q4[0]), z[1]);
    const __m512i w1 =
        _mm512_permutex2var_epi16(z[3], _mm512_loadu_si512(qg_scale_idx_q4[1]), z[4]);
    const __m512 sw =
        _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_mask_mov_epi16(w0, 0xff00, w1)));
    return qg_terms(vnni_tree4(P), sw, act, nb, b0, g);
}

/* Adds 16 terms to the AVX2 kernel's eight lanes: blocks b0+k, then b0+8+k, to lane k. */
A512_FN A512_INLINE __m256 a512_add_terms(__m256 acc, __m512 t)
{
    acc = _mm256_add_ps(acc, _mm512_castps512_ps256(t));
    return _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
}

/* The results of 8 rows from their eight lanes each (acc[r] for row r): for every row
 * ((0 + lane 0) + lane 1) + ... + lane 7, as a512_sum_lanes, but for the 8 rows at once after
 * a transpose, so that no row waits on a chain of scalar additions. */
A512_FN A512_INLINE __m256 a512_sum_lanes8(const __m256 acc[8])
{
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int r = 0; r < 8; r += 2) {
        t[r] = _mm256_unpacklo_ps(acc[r], acc[r + 1]);
        t[r + 1] = _mm256_unpackhi_ps(acc[r], acc[r + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 8; h += 4) {
        u[h + 0] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
        u[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xee);
        u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
        u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xee);
    }
    /* u[c] (c < 4) holds lane c of rows 0-3 (low half) and lane 4+c (high half); u[4+c] the
     * same for rows 4-7. The lanes are added one after the other (written out: clang wants
     * constant immediates). */
    __m256 sum = _mm256_setzero_ps();
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(u[0], u[4], 0x20));
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(u[1], u[5], 0x20));
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(u[2], u[6], 0x20));
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(u[3], u[7], 0x20));
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(u[0], u[4], 0x31));
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(u[1], u[5], 0x31));
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(u[2], u[6], 0x31));
    sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(u[3], u[7], 0x31));
    return sum;
}

/* Decode: weight rows o0 .. o1-1 against the single packed activation row, one row at a time
 * (reading two rows side by side halved the speed from DRAM), two groups of 16 blocks per
 * step on the fast path, then the last group (read whole when that stays inside the
 * matrix); the rows' final sums 8 rows at a time. GROUP is one of the qg_group_* functions.
 * (Reading the matrix as one run of blocks, groups spanning rows, saved the half-empty last
 * group of 28-block rows but came out slower: the bookkeeping per quarter cost more.) */
#define QG_ROWS_DEFINE(NAME, TARGET, GROUP)                                                        \
    TARGET A512_INLINE __m256 NAME##_row(const uint8_t *row, const uint8_t *act, int64_t nb,       \
                                         int64_t full, bool whole_tail)                            \
    {                                                                                              \
        __m256 acc = _mm256_setzero_ps();                                                          \
        int64_t b0 = 0;                                                                            \
        /* Two groups per step: independent work side by side for the scheduler. */                \
        for (; b0 + 32 <= full; b0 += 32) {                                                        \
            const __m512 t0 = GROUP(row, act, nb, b0, 16, true);                                   \
            const __m512 t1 = GROUP(row, act, nb, b0 + 16, 16, true);                              \
            acc = a512_add_terms(a512_add_terms(acc, t0), t1);                                     \
        }                                                                                          \
        if (b0 < full) acc = a512_add_terms(acc, GROUP(row, act, nb, b0, 16, true));               \
        if (full < nb && whole_tail)                                                               \
            acc = a512_add_terms(acc, GROUP(row, act, nb, full, (int)(nb - full), true));          \
        else if (full < nb)                                                                        \
            acc = a512_add_terms(acc, GROUP(row, act, nb, full, (int)(nb - full), false));         \
        return acc;                                                                                \
    }                                                                                              \
    TARGET static void NAME(const tensor_view *w, int64_t o0, int64_t o1, const uint8_t *act,      \
                            float *y)                                                              \
    {                                                                                              \
        const int64_t nb = w->ne[0] / QK8_0, full = nb / 16 * 16;                                  \
        const size_t rb = w->row_bytes, bs = rb / (size_t)nb, end = (size_t)w->ne[1] * rb;         \
        const uint8_t *base = w->data;                                                             \
        /* The last group reads whole when that stays inside the matrix. */                        \
        const size_t reach = (size_t)(full + 16) * bs;                                             \
        int64_t o = o0;                                                                            \
        for (; o + 8 <= o1; o += 8) {                                                              \
            __m256 acc[8];                                                                         \
            for (int r = 0; r < 8; r++)                                                            \
                acc[r] = NAME##_row(base + (size_t)(o + r) * rb, act, nb, full,                    \
                                    (size_t)(o + r) * rb + reach <= end);                          \
            _mm256_storeu_ps(y + o, a512_sum_lanes8(acc));                                         \
        }                                                                                          \
        for (; o < o1; o++)                                                                        \
            y[o] = a512_sum_lanes(                                                                 \
                NAME##_row(base + (size_t)o * rb, act, nb, full, (size_t)o * rb + reach <= end));  \
    }

QG_ROWS_DEFINE(qg_rows_q8, VNNI_FN, qg_group_q8)
QG_ROWS_DEFINE(qg_rows_q4, VNNI_FN, qg_group_q4)
QG_ROWS_DEFINE(qg_rows_q4_vbmi, VBMI_FN, qg_group_q4_vbmi)

/* Whether the Q4_0 decode path may use VBMI: -1 not yet asked, then 0 or 1. */
static atomic_int qg_vbmi = -1;

bool tensor_avx512_vbmi_usable(void)
{
    unsigned b, c;
    return tensor_avx512_vnni_usable() && x86_leaf7(&b, &c) && (c & (1u << 1));
}

bool tensor_avx512_set_vbmi(bool on)
{
    const bool ok = on && tensor_avx512_vbmi_usable();
    atomic_store(&qg_vbmi, ok ? 1 : 0);
    return ok;
}

static bool qg_use_vbmi(void)
{
    int v = atomic_load_explicit(&qg_vbmi, memory_order_relaxed);
    if (v < 0) {
        v = tensor_avx512_vbmi_usable();
        atomic_store(&qg_vbmi, v);
    }
    return v;
}

/* Decode from TENSOR_LAYOUT_Q4_0_X16: a tile's 16 rows in the 16 lanes, block after block
 * as one stream. The terms are the row kernels' ((sw * sx) * isum), added per block class
 * (b mod 8) in block order and the classes then in order, as qg_rows_q4 adds them: the
 * same bits. */
VNNI_FN static void qg_rows_q4_x16(const tensor_view *w, int64_t o0, int64_t o1, const uint8_t *act,
                                   float *y)
{
    const int64_t nb = w->ne[0] / QK8_0;
    const float *ad = (const float *)(act + qg_nb16(nb) * QK8_0);
    const int32_t *start = (const int32_t *)(ad + nb);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int64_t t = o0; t < o1; t += QG_ROWS) {
        const uint8_t *tile = (const uint8_t *)w->data + (size_t)t * w->row_bytes;
        __m512 acc[8];
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) acc[k] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *c = tile + (size_t)b * TENSOR_X16_CHUNK;
            /* Block b's activation quants: elements 0-15 at lo, 16-31 at lo + 64. */
            const uint8_t *lo = act + b / 4 * 4 * QK8_0 + b % 4 * (QK8_0 / 2);
            __m512i is = _mm512_set1_epi32(start[b]);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                int32_t a0, a1;
                memcpy(&a0, lo + 4 * j, 4);
                memcpy(&a1, lo + 2 * QK8_0 + 4 * j, 4);
                const __m512i r = _mm512_loadu_si512(c + 64 * j);
                is = _mm512_dpbusd_epi32(is, _mm512_and_si512(r, m4), _mm512_set1_epi32(a0));
                is = _mm512_dpbusd_epi32(is, _mm512_and_si512(_mm512_srli_epi16(r, 4), m4),
                                         _mm512_set1_epi32(a1));
            }
            const __m512 sw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(c + 256)));
            const __m512 term =
                _mm512_mul_ps(_mm512_mul_ps(sw, _mm512_set1_ps(ad[b])), _mm512_cvtepi32_ps(is));
            acc[b % 8] = _mm512_add_ps(acc[b % 8], term);
        }
        __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) sum = _mm512_add_ps(sum, acc[k]);
        _mm512_storeu_ps(y + t, sum);
    }
}

VNNI_FN A512_INLINE void qg_run(const tensor_view *w, int64_t o0, int64_t o1, const void *act,
                                int64_t n_act, float *y, bool q4, bool x16)
{
    if (n_act == 1 && x16) {
        qg_rows_q4_x16(w, o0, o1, act, y);
        return;
    }
    if (n_act == 1) {
        if (!q4)
            qg_rows_q8(w, o0, o1, act, y);
        else if (qg_use_vbmi())
            qg_rows_q4_vbmi(w, o0, o1, act, y);
        else
            qg_rows_q4(w, o0, o1, act, y);
        return;
    }
    const int64_t k = w->ne[0], nb = k / QK8_0, n_out = w->ne[1];
    const size_t group_bytes = (size_t)nb * QG_ACT_BLOCK;
    _Alignas(64) uint8_t pack[QG_MAX_PACK * QG_PACK_BLOCK];
    assert(k % QK8_0 == 0 && k <= QG_MAX_K);
    for (int64_t t = o0; t < o1; t += QG_ROWS) {
        const int nr = o1 - t < QG_ROWS ? (int)(o1 - t) : QG_ROWS;
        const __mmask16 rows = a512_tail_mask(nr);
        /* The next tile's weights into L2 while this one computes: packing reads 16 rows a
         * block at a time, which the hardware prefetchers follow poorly. */
        const int64_t next = o1 - t - nr < QG_ROWS ? o1 - t - nr : QG_ROWS;
        const uint8_t *nw = (const uint8_t *)w->data + (size_t)(t + nr) * w->row_bytes;
        for (size_t off = 0; off < (size_t)next * w->row_bytes; off += 64)
            _mm_prefetch((const char *)nw + off, _MM_HINT_T1);
        for (int cls = 0; cls < 8 && cls < nb; cls++) {
            const int m = (int)((nb - cls + 7) / 8);
            if (x16)
                qg_unpack_x16((const uint8_t *)w->data + (size_t)t * w->row_bytes, cls, m, pack);
            else
                qg_pack_w(w, t, nr, cls, m, pack, q4);
            for (int64_t c0 = 0; c0 < n_act; c0 += QG_C) {
                const uint8_t *grp = (const uint8_t *)act + (size_t)(c0 / QG_C) * group_bytes;
                float *yt = y + c0 * n_out + t;
                const int64_t left = n_act - c0;
                const bool first = cls == 0;
                switch (left < QG_C ? left : QG_C) {
#define QG_CASE(C)                                                                                 \
    case C:                                                                                        \
        qg_pass(pack, m, cls, grp, C, yt, n_out, rows, first);                                     \
        break;
                    QG_CASE(1)
                    QG_CASE(2)
                    QG_CASE(3)
                    QG_CASE(4)
                    QG_CASE(5)
                    QG_CASE(6)
                    QG_CASE(7)
                    QG_CASE(8)
                    QG_CASE(9)
                    QG_CASE(10)
                    QG_CASE(11)
#undef QG_CASE
                default:
                    qg_pass(pack, m, cls, grp, QG_C, yt, n_out, rows, first);
                    break;
                }
            }
        }
    }
}

VNNI_FN static void qg_run_q8_0(const tensor_view *w, int64_t o0, int64_t o1, const void *act,
                                int64_t n_act, float *y)
{
    qg_run(w, o0, o1, act, n_act, y, false, false);
}

VNNI_FN static void qg_run_q4_0(const tensor_view *w, int64_t o0, int64_t o1, const void *act,
                                int64_t n_act, float *y)
{
    qg_run(w, o0, o1, act, n_act, y, true, false);
}

VNNI_FN static void qg_run_q4_0_x16(const tensor_view *w, int64_t o0, int64_t o1, const void *act,
                                    int64_t n_act, float *y)
{
    qg_run(w, o0, o1, act, n_act, y, true, true);
}

const tensor_gemm tensor_gemm_q8_0_avx512 = {
    .tile = QG_ROWS,
    .max_k = QG_MAX_K,
    .act_bytes = qg_act_bytes,
    .pack_act = qg_pack_act_q8_0,
    .run = qg_run_q8_0,
    .act_group = QG_C,
};

const tensor_gemm tensor_gemm_q4_0_avx512 = {
    .tile = QG_ROWS,
    .max_k = QG_MAX_K,
    .act_bytes = qg_act_bytes,
    .pack_act = qg_pack_act_q4_0,
    .run = qg_run_q4_0,
    .run_x16 = qg_run_q4_0_x16,
    .act_group = QG_C,
};

/* ---- float gemm ---------------------------------------------------------------------------- */

/* Packed activations: groups of FG_C rows; per 16 elements of the row, the group's rows' 16
 * floats one after the other (the tail of the row and the padding rows are zeros). F16
 * weights take activations rounded to fp16 (their vec_dot type), stored as exact floats. */
#define FG_R    4 /* weight rows per micro-tile */
#define FG_C    6 /* activation rows per micro-tile */
#define FG_TILE 16

/* Rows per group of the packed layout: decode (one row) needs no interleaving. */
static int fg_group(int64_t n_rows)
{
    return n_rows == 1 ? 1 : FG_C;
}

static size_t fg_act_bytes(int64_t k, int64_t n_rows)
{
    const int G = fg_group(n_rows);
    return (size_t)((n_rows + G - 1) / G) * (size_t)((k + 15) / 16) * (size_t)G * 64;
}

A512_FN A512_INLINE void fg_pack_act(const float *x, int64_t n_rows, int64_t k, void *dst,
                                     int64_t r0, int64_t r1, bool f16)
{
    const int64_t ns = (k + 15) / 16;
    const int G = fg_group(n_rows);
    const int64_t g1 = (r1 + G - 1) / G;
    for (int64_t g = r0 / G; g < g1; g++) {
        float *grp = (float *)dst + (size_t)g * (size_t)ns * (size_t)G * 16;
        for (int c = 0; c < G; c++) {
            const int64_t r = g * G + c;
            for (int64_t s = 0; s < ns; s++) {
                __m512 v = _mm512_setzero_ps();
                if (r < n_rows)
                    v = _mm512_maskz_loadu_ps(a512_tail_mask(k - 16 * s), x + r * k + 16 * s);
                if (f16) v = _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
                _mm512_store_ps(grp + ((size_t)s * (size_t)G + (size_t)c) * 16, v);
            }
        }
    }
}

A512_FN static void fg_pack_act_f32(const float *x, int64_t n_rows, int64_t k, void *dst,
                                    int64_t r0, int64_t r1)
{
    fg_pack_act(x, n_rows, k, dst, r0, r1, false);
}

A512_FN static void fg_pack_act_f16(const float *x, int64_t n_rows, int64_t k, void *dst,
                                    int64_t r0, int64_t r1)
{
    fg_pack_act(x, n_rows, k, dst, r0, r1, true);
}

/* R weight rows (from w, rb bytes apart) times C packed activation rows of one group of G:
 * y[c * ldy + r]. Each pair has one accumulator, as a512_dot_f. */
A512_FN A512_INLINE void fg_micro(const uint8_t *w, size_t rb, int R, const float *grp, int C,
                                  int G, int64_t k, float *y, int64_t ldy, bool f16)
{
    __m512 acc[FG_R][FG_C];
#pragma GCC unroll 4
    for (int r = 0; r < FG_R; r++)
#pragma GCC unroll 6
        for (int c = 0; c < FG_C; c++)
            if (r < R && c < C) acc[r][c] = _mm512_setzero_ps();
    int64_t i = 0;
    const float *xs = grp;
    for (; i < k; i += 16, xs += G * 16) {
        const __mmask16 m = a512_tail_mask(k - i);
        __m512 wv[FG_R];
#pragma GCC unroll 4
        for (int r = 0; r < FG_R; r++)
            if (r < R) wv[r] = a512_load_w(w + (size_t)r * rb, i, f16, m);
#pragma GCC unroll 6
        for (int c = 0; c < FG_C; c++) {
            if (c >= C) continue;
            const __m512 xv = _mm512_load_ps(xs + 16 * c);
#pragma GCC unroll 4
            for (int r = 0; r < FG_R; r++)
                if (r < R) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < FG_R; r++)
#pragma GCC unroll 6
        for (int c = 0; c < FG_C; c++)
            if (r < R && c < C) y[c * ldy + r] = a512_hsum(acc[r][c]);
}

#define FG_CASES(R)                                                                                \
    switch (C) {                                                                                   \
    case 1:                                                                                        \
        fg_micro(wr, rb, R, grp, 1, FG_C, k, yt, n_out, f16);                                      \
        break;                                                                                     \
    case 2:                                                                                        \
        fg_micro(wr, rb, R, grp, 2, FG_C, k, yt, n_out, f16);                                      \
        break;                                                                                     \
    case 3:                                                                                        \
        fg_micro(wr, rb, R, grp, 3, FG_C, k, yt, n_out, f16);                                      \
        break;                                                                                     \
    case 4:                                                                                        \
        fg_micro(wr, rb, R, grp, 4, FG_C, k, yt, n_out, f16);                                      \
        break;                                                                                     \
    case 5:                                                                                        \
        fg_micro(wr, rb, R, grp, 5, FG_C, k, yt, n_out, f16);                                      \
        break;                                                                                     \
    default:                                                                                       \
        fg_micro(wr, rb, R, grp, 6, FG_C, k, yt, n_out, f16);                                      \
        break;                                                                                     \
    }

A512_FN A512_INLINE void fg_run(const tensor_view *w, int64_t o0, int64_t o1, const void *act,
                                int64_t n_act, float *y, bool f16)
{
    const int64_t k = w->ne[0], n_out = w->ne[1];
    const size_t rb = w->row_bytes;
    if (n_act == 1) {
        /* Decode: one row after the other, so that the thread reads one stream (reading four
         * rows side by side halves what the memory delivers here). */
        for (int64_t o = o0; o < o1; o++)
            fg_micro((const uint8_t *)w->data + (size_t)o * rb, rb, 1, act, 1, 1, k, y + o, n_out,
                     f16);
        return;
    }
    /* A tile of FG_TILE weight rows stays in L1/L2 while every activation group passes. */
    const size_t group_floats = (size_t)((k + 15) / 16) * FG_C * 16;
    for (int64_t t0 = o0; t0 < o1; t0 += FG_TILE) {
        const int64_t t1 = t0 + FG_TILE < o1 ? t0 + FG_TILE : o1;
        for (int64_t c0 = 0; c0 < n_act; c0 += FG_C) {
            const float *grp = (const float *)act + (size_t)(c0 / FG_C) * group_floats;
            const int C = n_act - c0 < FG_C ? (int)(n_act - c0) : FG_C;
            int64_t o = t0;
            for (; o + FG_R <= t1; o += FG_R) {
                const uint8_t *wr = (const uint8_t *)w->data + (size_t)o * rb;
                float *yt = y + c0 * n_out + o;
                FG_CASES(4)
            }
            for (; o < t1; o++) {
                const uint8_t *wr = (const uint8_t *)w->data + (size_t)o * rb;
                float *yt = y + c0 * n_out + o;
                FG_CASES(1)
            }
        }
    }
}

A512_FN static void fg_run_f32(const tensor_view *w, int64_t o0, int64_t o1, const void *act,
                               int64_t n_act, float *y)
{
    fg_run(w, o0, o1, act, n_act, y, false);
}

A512_FN static void fg_run_f16(const tensor_view *w, int64_t o0, int64_t o1, const void *act,
                               int64_t n_act, float *y)
{
    fg_run(w, o0, o1, act, n_act, y, true);
}

const tensor_gemm tensor_gemm_f32_avx512 = {
    .tile = FG_TILE,
    .max_k = INT64_MAX,
    .act_bytes = fg_act_bytes,
    .pack_act = fg_pack_act_f32,
    .run = fg_run_f32,
    .act_group = FG_C,
};

const tensor_gemm tensor_gemm_f16_avx512 = {
    .tile = FG_TILE,
    .max_k = INT64_MAX,
    .act_bytes = fg_act_bytes,
    .pack_act = fg_pack_act_f16,
    .run = fg_run_f16,
    .act_group = FG_C,
};

/* ---- attention products ------------------------------------------------------------------- */

/* Longest head the transposed query block holds; longer heads take the reference. */
#define AT_MAX_HD 256

/* Scores with the query rows in the lanes: a block of 16 rows is transposed once, then each
 * key's element d is broadcast and multiplied with the rows' elements d, four keys side by
 * side. Every lane does the reference's sequence of roundings: products, then sums in order
 * of d, then the scale. */
A512_FN void tensor_attn_scores_avx512(const float *const *q, int n_q, const float *k,
                                       size_t kv_stride, int32_t n_k, int hd, float scale, float *s,
                                       size_t s_stride)
{
    if (hd > AT_MAX_HD) {
        tensor_attn_scores_ref(q, n_q, k, kv_stride, n_k, hd, scale, s, s_stride);
        return;
    }
    _Alignas(64) float qt[AT_MAX_HD * 16];
    _Alignas(64) float out[4][16];
    const __m512 vs = _mm512_set1_ps(scale);
    for (int a0 = 0; a0 < n_q; a0 += 16) {
        const int na = n_q - a0 < 16 ? n_q - a0 : 16;
        for (int d = 0; d < hd; d++)
            for (int l = 0; l < 16; l++) qt[d * 16 + l] = l < na ? q[a0 + l][d] : 0.0f;
        for (int32_t i = 0; i < n_k; i += 4) {
            const int nk = n_k - i < 4 ? (int)(n_k - i) : 4;
            const float *kr[4];
            for (int u = 0; u < 4; u++) kr[u] = k + (size_t)(u < nk ? i + u : i) * kv_stride;
            __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                             _mm512_setzero_ps()};
            for (int d = 0; d < hd; d++) {
                const __m512 qv = _mm512_load_ps(qt + d * 16);
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    acc[u] = _mm512_add_ps(acc[u], _mm512_mul_ps(qv, _mm512_set1_ps(kr[u][d])));
            }
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) _mm512_store_ps(out[u], _mm512_mul_ps(acc[u], vs));
            for (int l = 0; l < na; l++)
                for (int u = 0; u < nk; u++)
                    s[(size_t)(a0 + l) * s_stride + (size_t)(i + u)] = out[u][l];
        }
    }
}

/* Weighted sums with the head's elements in the lanes: four query rows at a time share each
 * loaded value row; 64 elements per pass. Each lane sums its products in order of i, as the
 * reference; the keys only some of the four rows use are added row by row. */
A512_FN void tensor_attn_values_avx512(const float *p, size_t p_stride, int n_q, const int32_t *n,
                                       const float *v, size_t kv_stride, int hd, float *const *o)
{
    for (int a0 = 0; a0 < n_q; a0 += 4) {
        const int na = n_q - a0 < 4 ? n_q - a0 : 4;
        int32_t common = n[a0];
        for (int r = 1; r < na; r++) common = n[a0 + r] < common ? n[a0 + r] : common;
        for (int d0 = 0; d0 < hd; d0 += 64) {
            __mmask16 m[4];
            for (int c = 0; c < 4; c++)
                m[c] = a512_tail_mask(hd - d0 - 16 * c < 0 ? 0 : hd - d0 - 16 * c);
            __m512 acc[4][4];
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
            for (int32_t i = 0; i < common; i++) {
                const float *vi = v + (size_t)i * kv_stride + d0;
                __m512 vv[4];
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) vv[c] = _mm512_maskz_loadu_ps(m[c], vi + 16 * c);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                    if (r >= na) continue;
                    const __m512 pr = _mm512_set1_ps(p[(size_t)(a0 + r) * p_stride + (size_t)i]);
#pragma GCC unroll 4
                    for (int c = 0; c < 4; c++)
                        acc[r][c] = _mm512_add_ps(acc[r][c], _mm512_mul_ps(pr, vv[c]));
                }
            }
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                if (r >= na) continue;
                const float *pr = p + (size_t)(a0 + r) * p_stride;
                for (int32_t i = common; i < n[a0 + r]; i++) {
                    const float *vi = v + (size_t)i * kv_stride + d0;
                    const __m512 pv = _mm512_set1_ps(pr[i]);
#pragma GCC unroll 4
                    for (int c = 0; c < 4; c++)
                        acc[r][c] = _mm512_add_ps(
                            acc[r][c], _mm512_mul_ps(pv, _mm512_maskz_loadu_ps(m[c], vi + 16 * c)));
                }
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                    _mm512_mask_storeu_ps(o[a0 + r] + d0 + 16 * c, m[c], acc[r][c]);
            }
        }
    }
}

#else
typedef int tensor_dot_avx512_unused; /* ISO C: a translation unit must not be empty */
#endif
