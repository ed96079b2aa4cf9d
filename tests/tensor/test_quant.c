/*
 * test_quant.c - tests src/tensor/quant.c and the Q8_0/Q4_0 side of convert.c: weight
 * quantization byte for byte against the files llama-quantize wrote, dequantization against
 * the block formula, and activation quantization (round to nearest even) against a
 * re-statement of ggml-cpu's formula, for the scalar reference and the SIMD kernel.
 */
#include "test_util.h"

#include "tensor/tensor_int.h"
#include "tensor_test_util.h"

#include <math.h>

/* ---- weight quantization vs llama-quantize ----------------------------------------------- */

/* Quantizes every Q8_0/Q4_0 tensor's F32 source and compares bytes with llama-quantize's. */
static int compare_quantized_file(const char *model, const char *qtype)
{
    char p32[512], pq[512], rel[128];
    snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.F32.gguf", model);
    TU_SHARED_PATH(p32, rel);
    snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.%s.gguf", model, qtype);
    TU_SHARED_PATH(pq, rel);
    gguf_file *f32 = NULL, *fq = NULL;
    mica_err err = {0};
    if (gguf_open(&f32, p32, &err) || gguf_open(&fq, pq, &err)) fail_msg("%s", err.msg);
    int compared = 0;
    for (uint64_t i = 0; i < fq->n_tensors; i++) {
        const gguf_tensor *t = &fq->tensors[i];
        if (t->type != GGUF_T_Q8_0 && t->type != GGUF_T_Q4_0) continue;
        const gguf_tensor *s = gguf_find_tensor(f32, t->name);
        assert_non_null(s);
        assert_int_equal(s->type, GGUF_T_F32);
        const int64_t n = gguf_tensor_nelements(t);
        assert_int_equal(n, gguf_tensor_nelements(s));
        const size_t nbytes = tensor_row_size(t->type, n);
        assert_int_equal(nbytes, t->nbytes);
        uint8_t *q = malloc(nbytes);
        assert_non_null(q);
        /* Rows are whole blocks (ne[0] % 32 == 0), so the tensor quantizes as one row. */
        tensor_from_f32(t->type, s->data, q, n);
        const uint8_t *want = t->data;
        for (size_t b = 0; b < nbytes; b++) {
            if (q[b] != want[b])
                fail_msg("%s: tensor %s (%s): byte %zu is 0x%02x, llama-quantize wrote 0x%02x", pq,
                         t->name, gguf_ttype_name(t->type), b, q[b], want[b]);
        }
        free(q);
        compared++;
    }
    gguf_close(f32);
    gguf_close(fq);
    return compared;
}

static void test_q8_0_matches_llama_quantize(void **state)
{
    for (size_t m = 0; m < TT_N_MODELS; m++)
        assert_true(compare_quantized_file(tt_models[m], "Q8_0") >= 10);
}

static void test_q4_0_matches_llama_quantize(void **state)
{
    for (size_t m = 0; m < TT_N_MODELS; m++)
        assert_true(compare_quantized_file(tt_models[m], "Q4_0") >= 10);
}

/* Weight quantization rounds halves away from zero: with amax 127, d = 1 and x*id = x. */
static void test_q8_0_weight_rounding_ties(void **state)
{
    float x[32] = {127.0f, 2.5f, -2.5f, 3.5f, 0.5f, -0.5f, 1.49f, -126.5f};
    block_q8_0 b;
    tensor_quantize_row_q8_0_ref(x, &b, 32);
    assert_int_equal(b.d, 0x3c00); /* 1.0 */
    const int8_t want[8] = {127, 3, -3, 4, 1, -1, 1, -127};
    for (int j = 0; j < 8; j++) assert_int_equal(b.qs[j], want[j]);
    for (int j = 8; j < 32; j++) assert_int_equal(b.qs[j], 0);
    float zero[32] = {0};
    tensor_quantize_row_q8_0_ref(zero, &b, 32);
    assert_int_equal(b.d, 0);
}

/* Q4_0 takes its scale from the signed extreme (the first on ties): d = max / -8. */
static void test_q4_0_signed_max(void **state)
{
    float x[32] = {0};
    x[3] = -4.0f;
    x[9] = 4.0f; /* same magnitude, later: ignored */
    x[20] = 1.0f;
    block_q4_0 b;
    tensor_quantize_row_q4_0_ref(x, &b, 32);
    assert_int_equal(b.d, tensor_f32_to_f16(0.5f)); /* -4 / -8 */
    /* id = 2: x[3] -> -8 + 8.5 = 0.5 -> 0; x[9] -> 16.5 -> 16, capped to 15; 0 -> 8. */
    assert_int_equal(b.qs[3] & 15, 0);
    assert_int_equal(b.qs[9] & 15, 15);
    assert_int_equal(b.qs[4] >> 4, 10); /* x[20] = 1 -> 2 + 8.5 = 10.5 -> 10 */
    assert_int_equal(b.qs[0] & 15, 8);
}

/* ---- dequantization vs the block formula ------------------------------------------------- */

static uint16_t random_finite_half(tt_rng *r)
{
    for (;;) {
        uint16_t h = (uint16_t)tt_u32(r);
        if ((h & 0x7c00) != 0x7c00) return h;
    }
}

static void test_dequantize_formula(void **state)
{
    tt_rng r = {11};
    enum { NB = 64 };
    block_q8_0 q8[NB];
    block_q4_0 q4[NB];
    for (int b = 0; b < NB; b++) {
        q8[b].d = random_finite_half(&r);
        q4[b].d = random_finite_half(&r);
        for (int j = 0; j < 32; j++) q8[b].qs[j] = (int8_t)tt_u32(&r);
        for (int j = 0; j < 16; j++) q4[b].qs[j] = (uint8_t)tt_u32(&r);
    }
    float y[NB * 32], want[NB * 32];
    tensor_to_f32(GGUF_T_Q8_0, q8, y, NB * 32);
    for (int b = 0; b < NB; b++) {
        const double d = tensor_f16_to_f32(q8[b].d);
        /* A product of an 11-bit and an 8-bit significand is exact in double, so rounding
         * it once to float is the float product. */
        for (int j = 0; j < 32; j++) want[b * 32 + j] = (float)(d * q8[b].qs[j]);
    }
    tu_check_close("q8_0 dequant", y, want, NB * 32, 0.0);
    tensor_to_f32(GGUF_T_Q4_0, q4, y, NB * 32);
    for (int b = 0; b < NB; b++) {
        const double d = tensor_f16_to_f32(q4[b].d);
        for (int j = 0; j < 16; j++) {
            want[b * 32 + j] = (float)(d * ((q4[b].qs[j] & 15) - 8));
            want[b * 32 + j + 16] = (float)(d * ((q4[b].qs[j] >> 4) - 8));
        }
    }
    tu_check_close("q4_0 dequant", y, want, NB * 32, 0.0);
}

/* ---- activation quantization ------------------------------------------------------------- */

/* Round half to even, written out rather than left to the library. */
static int32_t rne(float v)
{
    const double f = floor((double)v), frac = (double)v - f;
    int32_t q = (int32_t)f;
    if (frac > 0.5 || (frac == 0.5 && (q & 1))) q++;
    return q;
}

/* ggml-cpu's x86 quantize_row_q8_0, restated: amax per block, d = fp16(amax/127),
 * id = 127/amax in float, q = rne(x*id). */
static void restated_act_q8_0(const float *x, block_q8_0 *y, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) {
            float a = x[b * 32 + j] < 0 ? -x[b * 32 + j] : x[b * 32 + j];
            if (a > amax) amax = a;
        }
        const float id = amax != 0 ? 127.0f / amax : 0.0f;
        y[b].d = tensor_f32_to_f16(amax / 127.0f);
        for (int j = 0; j < 32; j++) {
            volatile float v = x[b * 32 + j] * id; /* one float rounding, as the kernel */
            y[b].qs[j] = (int8_t)rne(v);
        }
    }
}

static void check_blocks_equal(const char *what, const block_q8_0 *got, const block_q8_0 *want,
                               int64_t nb)
{
    for (int64_t b = 0; b < nb; b++) {
        if (got[b].d != want[b].d)
            fail_msg("%s: block %lld: d 0x%04x want 0x%04x", what, (long long)b, got[b].d,
                     want[b].d);
        for (int j = 0; j < 32; j++)
            if (got[b].qs[j] != want[b].qs[j])
                fail_msg("%s: block %lld index %d: q %d want %d", what, (long long)b, j,
                         got[b].qs[j], want[b].qs[j]);
    }
}

static void test_act_quant_ties_to_even(void **state)
{
    /* amax 127 makes id exactly 1, so x*id = x. */
    float x[32] = {127.0f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, 1.5f, -0.5f, 126.5f, -125.5f};
    const int8_t want[10] = {127, 2, 4, -2, -4, 0, 2, 0, 126, -126};
    block_q8_0 a, b;
    tensor_quantize_act_q8_0_ref(x, &a, 32);
    tensor_quantize_act_q8_0(x, &b, 32); /* the dispatched (SIMD) kernel */
    for (int j = 0; j < 10; j++) {
        if (a.qs[j] != want[j]) fail_msg("ref: x %g -> %d want %d", (double)x[j], a.qs[j], want[j]);
        if (b.qs[j] != want[j])
            fail_msg("%s: x %g -> %d want %d", tensor_simd_name(), (double)x[j], b.qs[j], want[j]);
    }
    assert_int_equal(a.d, 0x3c00);
    assert_int_equal(b.d, 0x3c00);
    float zero[32] = {0};
    tensor_quantize_act_q8_0(zero, &b, 32);
    assert_int_equal(b.d, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(b.qs[j], 0);
}

static void test_act_quant_random(void **state)
{
    tt_rng r = {12};
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x);
    block_q8_0 *want = malloc(N / 32 * sizeof *want), *ref = malloc(N / 32 * sizeof *ref),
               *simd = malloc(N / 32 * sizeof *simd);
    assert_true(x && want && ref && simd);
    for (int rep = 0; rep < 20; rep++) {
        tt_fill(&r, x, N);
        if (rep % 4 == 1)
            for (int i = 0; i < N; i++) x[i] = (float)((int)(tt_u32(&r) % 255) - 127) * 0.5f;
        restated_act_q8_0(x, want, N);
        tensor_quantize_act_q8_0_ref(x, ref, N);
        tensor_quantize_act_q8_0(x, simd, N);
        check_blocks_equal("act q8_0 ref", ref, want, N / 32);
        check_blocks_equal("act q8_0 dispatched", simd, want, N / 32);
    }
    free(x);
    free(want);
    free(ref);
    free(simd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0_matches_llama_quantize),
        cmocka_unit_test(test_q4_0_matches_llama_quantize),
        cmocka_unit_test(test_q8_0_weight_rounding_ties),
        cmocka_unit_test(test_q4_0_signed_max),
        cmocka_unit_test(test_dequantize_formula),
        cmocka_unit_test(test_act_quant_ties_to_even),
        cmocka_unit_test(test_act_quant_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
