/*
 * llamacpp_ref.h - llama.cpp's reference logits (../shared/testdata/llamacpp/logits and
 * lora/logits: the 16-token prompt's rows from one batched pass, the greedy tokens, their
 * top1-top2 margins and the 16 generation rows) and the checks of a context against them:
 * batched prompt, token by token, and teacher-forced generation. Header-only, shared by
 * tests/engine/test_llamacpp_logits.c and tests/model/test_lora.c.
 */
#ifndef MICA_TESTS_LLAMACPP_REF_H
#define MICA_TESTS_LLAMACPP_REF_H

#include "test_util.h"

#include "mica.h"

#define LR_N_PROMPT 16
#define LR_N_GEN    16
#define LR_N_VOCAB  512

typedef struct lr_ref {
    float *prompt_logits; /* (LR_N_PROMPT, LR_N_VOCAB) */
    float *gen_logits;    /* (LR_N_GEN, LR_N_VOCAB) */
    mica_token prompt[LR_N_PROMPT];
    mica_token greedy[LR_N_GEN];
    double margin[LR_N_GEN];
} lr_ref;

/* Reads <shared>/<rel>.json, .bin and .gen.bin (rel e.g.
 * "testdata/llamacpp/logits/llama-dense.F32.f32kv"); skips when ../shared is absent. */
static inline void lr_load(const char *rel, lr_ref *r)
{
    char path[1024], file[512];
    size_t len;
    snprintf(file, sizeof file, "%s.json", rel);
    TU_SHARED_PATH(path, file);
    char *json = tu_read_file(path, NULL);
    double v[64];
    assert_int_equal(tu_json_numbers(json, "token_ids", v, 64), LR_N_PROMPT);
    for (int i = 0; i < LR_N_PROMPT; i++) r->prompt[i] = (mica_token)v[i];
    assert_int_equal(tu_json_numbers(json, "tokens", v, 64), LR_N_GEN);
    for (int i = 0; i < LR_N_GEN; i++) r->greedy[i] = (mica_token)v[i];
    assert_int_equal(tu_json_numbers(json, "top1_minus_top2", r->margin, LR_N_GEN), LR_N_GEN);
    free(json);
    snprintf(file, sizeof file, "%s.bin", rel);
    TU_SHARED_PATH(path, file);
    r->prompt_logits = (float *)tu_read_file(path, &len);
    assert_int_equal(len, sizeof(float) * LR_N_PROMPT * LR_N_VOCAB);
    snprintf(file, sizeof file, "%s.gen.bin", rel);
    TU_SHARED_PATH(path, file);
    r->gen_logits = (float *)tu_read_file(path, &len);
    assert_int_equal(len, sizeof(float) * LR_N_GEN * LR_N_VOCAB);
}

static inline void lr_free(lr_ref *r)
{
    free(r->prompt_logits);
    free(r->gen_logits);
}

static inline int lr_argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* The prompt in one batched pass into sequence seq of c (empty), against every prompt row;
 * leaves the prompt's rows in logits (LR_N_PROMPT rows). Returns the largest difference. */
static inline double lr_check_prompt(const char *what, mica_context *c, int32_t seq,
                                     const lr_ref *r, double tol, float *logits)
{
    char msg[320];
    mica_err err;
    if (mica_decode(c, seq, r->prompt, LR_N_PROMPT, 0, true, logits, &err))
        fail_msg("%s: %s", what, err.msg);
    snprintf(msg, sizeof msg, "%s batched prompt logits", what);
    return tu_check_close(msg, logits, r->prompt_logits, LR_N_PROMPT * LR_N_VOCAB, tol);
}

/* The prompt one token at a time in sequence seq of c (empty). */
static inline double lr_check_incremental(const char *what, mica_context *c, int32_t seq,
                                          const lr_ref *r, double tol)
{
    char msg[320];
    float logits[LR_N_VOCAB];
    mica_err err;
    double d_max = 0;
    for (int i = 0; i < LR_N_PROMPT; i++) {
        if (mica_decode(c, seq, &r->prompt[i], 1, i, false, logits, &err))
            fail_msg("%s: %s", what, err.msg);
        snprintf(msg, sizeof msg, "%s incremental prompt row %d", what, i);
        double d = tu_check_close(msg, logits, r->prompt_logits + i * LR_N_VOCAB, LR_N_VOCAB, tol);
        d_max = d > d_max ? d : d_max;
    }
    return d_max;
}

/* Teacher forcing after lr_check_prompt on the same sequence (prompt_logits: its rows): row 0
 * is the last prompt row, row k follows llama.cpp's greedy token k-1; our greedy pick must be
 * llama.cpp's wherever its margin is well above tol. */
static inline double lr_check_generation(const char *what, mica_context *c, int32_t seq,
                                         const lr_ref *r, double tol, const float *prompt_logits)
{
    char msg[320];
    float logits[LR_N_VOCAB];
    mica_err err;
    double d_max = 0;
    memcpy(logits, prompt_logits + (LR_N_PROMPT - 1) * LR_N_VOCAB, sizeof logits);
    for (int k = 0; k < LR_N_GEN; k++) {
        if (k > 0 &&
            mica_decode(c, seq, &r->greedy[k - 1], 1, LR_N_PROMPT + k - 1, false, logits, &err))
            fail_msg("%s: %s", what, err.msg);
        snprintf(msg, sizeof msg, "%s generation row %d", what, k);
        double d = tu_check_close(msg, logits, r->gen_logits + k * LR_N_VOCAB, LR_N_VOCAB, tol);
        d_max = d > d_max ? d : d_max;
        if (r->margin[k] > 10 * tol && lr_argmax(logits, LR_N_VOCAB) != r->greedy[k])
            fail_msg("%s: greedy token %d is %d, llama.cpp's is %d (margin %g)", what, k,
                     lr_argmax(logits, LR_N_VOCAB), r->greedy[k], r->margin[k]);
    }
    return d_max;
}

#endif
