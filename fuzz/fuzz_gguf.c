/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader (src/gguf): parses each input with
 * gguf_open_memory and, when it parses, calls every accessor on every kv and tensor so
 * that AddressSanitizer/UBSan see any read that validation let through. Owns nothing
 * else; not part of the CMake build (see fuzz/README.md for how to build and run it).
 */
#include "gguf/gguf.h"

#include <stdlib.h>
#include <string.h>

/* Reads every element of an array kv; returns a checksum so nothing is optimised away. */
static uint64_t fuzz_gguf_array(const gguf_file *f, const gguf_kv *kv)
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
static void fuzz_gguf_getters(const gguf_file *f, const gguf_kv *kv)
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

static uint64_t fuzz_gguf_exercise(const gguf_file *f)
{
    uint64_t sum = 0;
    char buf[160];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        gguf_kv_format(kv, buf, sizeof buf);
        sum += strlen(buf);
        fuzz_gguf_getters(f, kv);
        if (kv->type == GGUF_VT_ARRAY) sum += fuzz_gguf_array(f, kv);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (gguf_find_tensor(f, t->name) != t) abort();
        const uint8_t *p = t->data;
        for (uint64_t j = 0; j < t->nbytes; j++) sum += p[j];
    }
    return sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Not static, so the compiler keeps the reads that feed it. */
volatile uint64_t fuzz_gguf_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    mica_err err;
    if (gguf_open_memory(&f, data, size, "fuzz", &err) == MICA_OK) {
        fuzz_gguf_sink += fuzz_gguf_exercise(f);
        gguf_close(f);
    } else if (f != NULL || err.msg[0] == '\0') {
        abort(); /* an error must leave no file and say something */
    }
    return 0;
}
