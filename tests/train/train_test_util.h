/*
 * train_test_util.h - what the tests of src/train share: a small llama model from scratch
 * (2 layers, n_embd 32, 4 heads over 2 KV heads, FFN 48; dense or with experts, top 2).
 */
#ifndef MICA_TESTS_TRAIN_TEST_UTIL_H
#define MICA_TESTS_TRAIN_TEST_UTIL_H

#include "test_util.h"

#include "train/train.h"

static inline train_model *train_test_model(int32_t n_vocab, int n_expert, uint64_t seed)
{
    train_shape s = {0};
    s.arch = "llama";
    s.n_vocab = n_vocab;
    s.n_ctx = 16;
    s.n_embd = 32;
    s.n_layer = 2;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 48;
    s.n_expert = n_expert;
    s.n_expert_used = n_expert ? 2 : 0;
    s.rope_base = 1e4f;
    s.norm_eps = 1e-5f;
    train_model *tm;
    mica_err err;
    if (train_model_init(&tm, &s, seed, &err)) fail_msg("%s", err.msg);
    return tm;
}

#endif
