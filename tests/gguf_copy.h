/*
 * gguf_copy.h - test models made from existing ones: a copy of a GGUF file with one string
 * metadata key set (e.g. tokenizer.chat_template), through mica's GGUF writer. Header-only,
 * shared by the tests that need a model with a given template.
 */
#ifndef MICA_TESTS_GGUF_COPY_H
#define MICA_TESTS_GGUF_COPY_H

#include "test_util.h"

#include "gguf/gguf.h"

/* Writes src with key = value (added or replaced) to dst. */
static inline void tu_gguf_copy_with_str(const char *src, const char *dst, const char *key,
                                         const char *value)
{
    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, src, &err)) fail_msg("%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_writer_copy_kv(w, f), MICA_OK);
    assert_int_equal(gguf_writer_set_str(w, key, value), MICA_OK);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, &err))
            fail_msg("%s", err.msg);
    }
    if (gguf_writer_write(w, dst, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
    gguf_close(f);
}

#endif
