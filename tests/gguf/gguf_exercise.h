/*
 * gguf_exercise.h - reads everything a parsed GGUF file exposes: shared by the robustness
 * test (tests/gguf/test_gguf_robust.c) and the libFuzzer target (fuzz/fuzz_gguf.c).
 * Header-only so the fuzz target can be built without the test harness.
 */
#ifndef MICA_GGUF_EXERCISE_H
#define MICA_GGUF_EXERCISE_H

#include "gguf/gguf.h"

#include <stdlib.h>
#include <string.h>

/* Reads every element of an array kv; returns a checksum so nothing is optimised away. */
static uint64_t gguf_exercise_array(const gguf_file *f, const gguf_kv *kv)
{
    uint64_t sum = 0;
    for (uint64_t j = 0; j < kv->arr_n; j++) {
        if (kv->arr_type == GGUF_VT_STRING) {
            gguf_str s = gguf_arr_str(f, kv, j);
            for (uint64_t c = 0; c < s.len; c++) sum += (uint8_t)s.ptr[c];
        } else if (kv->arr_type == GGUF_VT_F32 || kv->arr_type == GGUF_VT_F64) {
            sum += gguf_arr_float(kv, j) > 0;
        } else {
            sum += (uint64_t)gguf_arr_int(kv, j);
        }
    }
    return sum;
}

/* Looks a kv up by name and runs every typed getter on it. */
static void gguf_exercise_getters(const gguf_file *f, const gguf_kv *kv)
{
    char key[256];
    if (kv->key.len >= sizeof key || memchr(kv->key.ptr, 0, (size_t)kv->key.len)) return;
    memcpy(key, kv->key.ptr, (size_t)kv->key.len);
    key[kv->key.len] = '\0';
    if (gguf_find(f, key) != kv) abort();
    int64_t v;
    double d;
    gguf_str s;
    bool b;
    const gguf_kv *a;
    mica_err err;
    (void)gguf_get_int(f, key, &v, &err);
    (void)gguf_get_float(f, key, &d, &err);
    (void)gguf_get_str(f, key, &s, &err);
    (void)gguf_get_bool_opt(f, key, &b, &err);
    (void)gguf_get_arr(f, key, &a, &err);
}

/* Calls every accessor on every kv and tensor of a file that opened, so ASan/UBSan see any
 * read that validation let through; aborts when a lookup disagrees with the table. Returns a
 * checksum so the reads cannot be optimised away. */
static uint64_t gguf_exercise(const gguf_file *f)
{
    uint64_t sum = 0;
    char buf[160];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        gguf_kv_format(kv, buf, sizeof buf);
        sum += strlen(buf);
        gguf_exercise_getters(f, kv);
        if (kv->type == GGUF_VT_ARRAY) sum += gguf_exercise_array(f, kv);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (gguf_find_tensor(f, t->name) != t) abort();
        sum += (uint64_t)gguf_tensor_nelements(t);
        const uint8_t *p = t->data;
        for (uint64_t j = 0; j < t->nbytes; j++) sum += p[j];
    }
    return sum;
}

#endif
