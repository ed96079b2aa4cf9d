/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader (src/gguf): parses each input with
 * gguf_open_memory and, when it parses, calls every accessor on every kv and tensor so
 * that AddressSanitizer/UBSan see any read that validation let through. Owns nothing
 * else; not part of the CMake build (see fuzz/README.md for how to build and run it).
 */
#include "../tests/gguf/gguf_exercise.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Not static, so the compiler keeps the reads that feed it. */
volatile uint64_t fuzz_gguf_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    mica_err err;
    if (gguf_open_memory(&f, data, size, "fuzz", &err) == MICA_OK) {
        fuzz_gguf_sink += gguf_exercise(f);
        gguf_close(f);
    } else if (f != NULL || err.msg[0] == '\0') {
        abort(); /* an error must leave no file and say something */
    }
    return 0;
}
