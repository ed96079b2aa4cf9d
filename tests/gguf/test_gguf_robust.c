/*
 * test_gguf_robust.c - tests that src/gguf/gguf_read.c refuses bad input with a message
 * and never crashes: files that cannot be opened, hand-built files with one defect each,
 * every truncation of two small valid files, and thousands of seeded random byte flips
 * (each must give an error or a file whose accessors all work). Buffers are allocated at
 * their exact size so that AddressSanitizer sees any read past the end.
 */
#include "test_util.h"

#include "gguf/gguf.h"
#include "gguf_bytes.h"
#include "gguf_exercise.h"

#include <unistd.h>

#define VOCAB_GGUF "testdata/llamacpp/tokenizer/synthetic-spm-512.gguf"

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/gguf_robust_%d_%s", tu_tmpdir(), (int)getpid(), name);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* Opens path expecting status want and a message containing the path and `needle`. */
static void expect_open_fails(const char *path, mica_status want, const char *needle)
{
    gguf_file *f = (gguf_file *)1;
    mica_err err = {0};
    mica_status st = gguf_open(&f, path, &err);
    if (st != want) fail_msg("%s: got status %d (%s) want %d", path, st, err.msg, want);
    assert_null(f);
    assert_int_equal(err.status, want);
    if (!strstr(err.msg, path) || !strstr(err.msg, needle))
        fail_msg("message \"%s\" lacks the path or \"%s\"", err.msg, needle);
}

static void test_open_errors(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "missing.gguf");
    expect_open_fails(path, MICA_EIO, "No such file");
    expect_open_fails(tu_tmpdir(), MICA_EIO, "directory");

    tmp_path(path, sizeof path, "empty.gguf");
    write_file(path, "", 0);
    expect_open_fails(path, MICA_EFORMAT, "empty");
    unlink(path);

    uint8_t hdr[24] = "GGML";
    tmp_path(path, sizeof path, "magic.gguf");
    write_file(path, hdr, sizeof hdr);
    expect_open_fails(path, MICA_EFORMAT, "not a GGUF file (bad magic)");
    memcpy(hdr, "GGUF", 4);
    write_file(path, hdr, 10);
    expect_open_fails(path, MICA_EFORMAT, "truncated");
    uint32_t versions[] = {1, 4, 0, 0x03000000};
    const char *needles[] = {"version 1", "version 4", "version 0", "big-endian"};
    for (int i = 0; i < 4; i++) {
        memcpy(hdr + 4, &versions[i], 4);
        write_file(path, hdr, sizeof hdr);
        expect_open_fails(path, MICA_EFORMAT, needles[i]);
    }
    unlink(path);

    gguf_file *f = (gguf_file *)1;
    mica_err err = {0};
    assert_int_equal(gguf_open_memory(&f, hdr, 0, "zero", &err), MICA_EFORMAT);
    assert_null(f);
    assert_non_null(strstr(err.msg, "zero"));
}

/* ---- hand-built files ---------------------------------------------------------------- */

static void bb_header(bb *b, uint64_t n_tensors, uint64_t n_kv)
{
    b->n = 0;
    bb_put(b, "GGUF", 4);
    bb_u32(b, 3);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void bb_kv_u32(bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_VT_U32);
    bb_u32(b, v);
}
/* A tensor info with up to 2 dims. */
static void bb_tensor(bb *b, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1,
                      uint32_t type, uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    bb_u64(b, (uint64_t)ne0);
    if (n_dims > 1) bb_u64(b, (uint64_t)ne1);
    bb_u32(b, type);
    bb_u64(b, offset);
}
/* Pads to `align` and appends n zero bytes of tensor data. */
static void bb_data(bb *b, size_t align, size_t n)
{
    b->n = (b->n + align - 1) / align * align + n;
    assert_true(b->n <= sizeof b->d);
}

/* Parses b from an exact-size copy; returns the status and leaves the message in err. */
static mica_status open_bb(const bb *b, mica_err *err)
{
    uint8_t *copy = malloc(b->n ? b->n : 1);
    assert_non_null(copy);
    memcpy(copy, b->d, b->n);
    gguf_file *f = NULL;
    mica_status st = gguf_open_memory(&f, copy, b->n, "case.gguf", err);
    gguf_close(f);
    free(copy);
    return st;
}

static void expect_bb_fails(const bb *b, const char *needle)
{
    mica_err err = {0};
    mica_status st = open_bb(b, &err);
    if (st != MICA_EFORMAT) fail_msg("expected a format error with \"%s\", got %d", needle, st);
    if (!strstr(err.msg, needle) || !strstr(err.msg, "case.gguf"))
        fail_msg("message \"%s\" lacks \"%s\" or the name", err.msg, needle);
}

static void test_defects_in_metadata(void **state)
{
    bb b;
    mica_err err;
    bb_header(&b, 0, 2);
    bb_kv_u32(&b, "a", 1);
    bb_kv_u32(&b, "b", 2);
    assert_int_equal(open_bb(&b, &err), MICA_OK);

    bb_header(&b, 0, 2);
    bb_kv_u32(&b, "a", 1);
    bb_kv_u32(&b, "a", 2);
    expect_bb_fails(&b, "duplicate key 'a'");

    bb_header(&b, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    expect_bb_fails(&b, "unknown value type 13 (key 'k'");

    bb_header(&b, 0, 1);
    bb_str(&b, "nest");
    bb_u32(&b, GGUF_VT_ARRAY);
    bb_u32(&b, GGUF_VT_ARRAY);
    bb_u64(&b, 0);
    expect_bb_fails(&b, "arrays of arrays");

    bb_header(&b, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_VT_ARRAY);
    bb_u32(&b, GGUF_VT_U32);
    bb_u64(&b, UINT64_MAX / 2); /* must not be allocated */
    bb_u32(&b, 0);
    expect_bb_fails(&b, "cannot fit");

    bb_header(&b, 0, 1);
    bb_str(&b, "strs");
    bb_u32(&b, GGUF_VT_ARRAY);
    bb_u32(&b, GGUF_VT_STRING);
    bb_u64(&b, 3);
    bb_str(&b, "x");
    bb_u64(&b, 1000); /* second string runs past the end */
    bb_u64(&b, 0);
    expect_bb_fails(&b, "key 'strs'");

    bb_header(&b, 0, 1);
    bb_u64(&b, UINT64_MAX); /* key length */
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    expect_bb_fails(&b, "string length");

    bb_header(&b, 0, UINT64_MAX);
    bb_kv_u32(&b, "a", 1);
    expect_bb_fails(&b, "keys cannot fit");

    bb_header(&b, UINT64_MAX / 8, 1);
    bb_kv_u32(&b, "a", 1);
    expect_bb_fails(&b, "tensors cannot fit");

    bb_header(&b, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_VT_STRING);
    bb_str(&b, "32");
    expect_bb_fails(&b, "general.alignment");
    uint32_t bad[] = {0, 3, 48};
    for (int i = 0; i < 3; i++) {
        bb_header(&b, 0, 1);
        bb_kv_u32(&b, "general.alignment", bad[i]);
        expect_bb_fails(&b, "power of two");
    }
    /* Any integer type may hold the alignment. */
    bb_header(&b, 1, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_VT_U8);
    uint8_t a8 = 64;
    bb_put(&b, &a8, 1);
    bb_tensor(&b, "t", 1, 4, 1, GGUF_T_F32, 0);
    bb_data(&b, 64, 16);
    gguf_file *f = NULL;
    assert_int_equal(gguf_open_memory(&f, b.d, b.n, "a8", &err), MICA_OK);
    assert_int_equal(f->alignment, 64);
    assert_int_equal(f->data_offset, 128); /* 24 + kv 30 + tensor info 33, rounded up */
    gguf_close(f);
}

static void test_defects_in_tensors(void **state)
{
    bb b;
    mica_err err;
    bb_header(&b, 2, 0);
    bb_tensor(&b, "x", 2, 32, 2, GGUF_T_Q8_0, 0);
    bb_tensor(&b, "y", 1, 3, 1, GGUF_T_F32, 96);
    bb_data(&b, 32, 96 + 12);
    assert_int_equal(open_bb(&b, &err), MICA_OK);
    b.n -= 1;
    expect_bb_fails(&b, "past the end of the file (size");

    bb_header(&b, 1, 0);
    bb_tensor(&b, "x", 2, 33, 1, GGUF_T_Q8_0, 0);
    bb_data(&b, 32, 64);
    expect_bb_fails(&b, "not a multiple of the Q8_0 block size 32 (tensor 'x'");

    bb_header(&b, 1, 0);
    bb_tensor(&b, "x", 1, 4, 1, 4, 0);
    bb_data(&b, 32, 64);
    expect_bb_fails(&b, "unknown tensor type 4");

    bb_header(&b, 1, 0);
    bb_tensor(&b, "x", 2, 4, -1, GGUF_T_F32, 0);
    bb_data(&b, 32, 64);
    expect_bb_fails(&b, "negative");

    bb_header(&b, 1, 0);
    bb_str(&b, "x");
    bb_u32(&b, 5);
    for (int i = 0; i < 5; i++) bb_u64(&b, 1);
    bb_u32(&b, GGUF_T_F32);
    bb_u64(&b, 0);
    bb_data(&b, 32, 32);
    expect_bb_fails(&b, "n_dims = 5");

    bb_header(&b, 1, 0);
    bb_tensor(&b, "x", 2, INT64_C(1) << 32, INT64_C(1) << 32, GGUF_T_F32, 0);
    bb_data(&b, 32, 32);
    expect_bb_fails(&b, "overflow");

    char name[80];
    memset(name, 'n', 64);
    name[64] = '\0';
    bb_header(&b, 1, 0);
    bb_tensor(&b, name, 1, 4, 1, GGUF_T_F32, 0);
    bb_data(&b, 32, 16);
    expect_bb_fails(&b, "too long");
    name[63] = '\0';
    bb_header(&b, 1, 0);
    bb_tensor(&b, name, 1, 4, 1, GGUF_T_F32, 0);
    bb_data(&b, 32, 16);
    assert_int_equal(open_bb(&b, &err), MICA_OK);

    bb_header(&b, 1, 0); /* a name with a NUL inside, built by hand */
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, 1);
    bb_u64(&b, 4);
    bb_u32(&b, GGUF_T_F32);
    bb_u64(&b, 0);
    bb_data(&b, 32, 16);
    expect_bb_fails(&b, "NUL");

    bb_header(&b, 2, 0);
    bb_tensor(&b, "x", 1, 4, 1, GGUF_T_F32, 0);
    bb_tensor(&b, "x", 1, 4, 1, GGUF_T_F32, 32);
    bb_data(&b, 32, 64);
    expect_bb_fails(&b, "duplicate tensor name 'x'");

    /* Offsets: aligned and packed in order, as ggml requires. */
    bb_header(&b, 2, 0);
    bb_tensor(&b, "x", 1, 4, 1, GGUF_T_F32, 0);
    bb_tensor(&b, "y", 1, 4, 1, GGUF_T_F32, 16);
    bb_data(&b, 32, 64);
    expect_bb_fails(&b, "data offset 16, expected 32");
    bb_header(&b, 1, 0);
    bb_tensor(&b, "x", 1, 4, 1, GGUF_T_F32, UINT64_MAX - 7);
    bb_data(&b, 32, 64);
    expect_bb_fails(&b, "tensor 'x'");
}

/* ---- exercising whatever parsed ------------------------------------------------------ */

/* Parses data[0..n) from an exact-size copy: an error, or a file that survives gguf_exercise(). */
static bool parse_copy(const uint8_t *data, size_t n, uint64_t *sum)
{
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, data, n);
    gguf_file *f = NULL;
    mica_err err = {0};
    mica_status st = gguf_open_memory(&f, copy, n, "fuzz", &err);
    if (st == MICA_OK) {
        *sum += gguf_exercise(f);
        gguf_close(f);
    } else {
        assert_null(f);
        assert_true(st == MICA_EFORMAT || st == MICA_ENOMEM);
        assert_non_null(strstr(err.msg, "fuzz"));
    }
    free(copy);
    return st == MICA_OK;
}

/* A small file with every kind of kv and three tensors; the last tensor's size is a
 * multiple of 32, so the file has no trailing padding and every truncation is an error. */
static uint8_t *make_small_file(size_t *n)
{
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    const char *const strs[3] = {"<unk>", "", "\xe2\x96\x81hello"};
    const int32_t ints[4] = {1, -2, 3, -4};
    const float fl[2] = {0.5f, -1.5f};
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "llama.block_count", 1), MICA_OK);
    assert_int_equal(gguf_writer_set_f32(w, "llama.eps", 1e-5f), MICA_OK);
    assert_int_equal(gguf_writer_set_bool(w, "flag", true), MICA_OK);
    assert_int_equal(gguf_writer_set_u64(w, "big", 1u << 31), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokens", strs, 3), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "ints", GGUF_VT_I32, ints, 4), MICA_OK);
    assert_int_equal(gguf_writer_set_arr(w, "floats", GGUF_VT_F32, fl, 2), MICA_OK);
    static uint8_t data[256];
    for (int i = 0; i < 256; i++) data[i] = (uint8_t)i;
    const int64_t ne_a[2] = {4, 2}, ne_b[1] = {32}, ne_c[2] = {8, 4};
    mica_err err;
    assert_int_equal(gguf_writer_add_tensor(w, "a", GGUF_T_F32, 2, ne_a, data, &err), MICA_OK);
    assert_int_equal(gguf_writer_add_tensor(w, "b", GGUF_T_Q8_0, 1, ne_b, data, &err), MICA_OK);
    assert_int_equal(gguf_writer_add_tensor(w, "c", GGUF_T_F32, 2, ne_c, data, &err), MICA_OK);
    char path[512];
    tmp_path(path, sizeof path, "small.gguf");
    assert_int_equal(gguf_writer_write(w, path, &err), MICA_OK);
    gguf_writer_free(w);
    uint8_t *buf = (uint8_t *)tu_read_file(path, n);
    unlink(path);
    return buf;
}

/* Every proper prefix must be refused, with one exception: a file without tensors may end
 * right after its metadata (llama.cpp's vocab files do), so the prefix that stops exactly
 * there is complete; allowed_end is that length, or 0 when there is none. */
static void check_all_truncations(const uint8_t *data, size_t size, size_t allowed_end)
{
    uint64_t sum = 0;
    assert_true(parse_copy(data, size, &sum));
    for (size_t n = 0; n < size; n++)
        if (parse_copy(data, n, &sum) != (n == allowed_end && n > 0))
            fail_msg("truncation to %zu of %zu bytes: wrong outcome", n, size);
}

static void test_every_truncation(void **state)
{
    size_t n;
    uint8_t *small = make_small_file(&n);
    check_all_truncations(small, n, 0);
    free(small);

    char path[1024];
    TU_SHARED_PATH(path, VOCAB_GGUF);
    uint8_t *vocab = (uint8_t *)tu_read_file(path, &n);
    assert_int_equal(n, 11744);
    /* Its metadata ends at 11722 (gguf_read.py's walk), then 22 bytes pad to 11744. */
    check_all_truncations(vocab, n, 11722);
    free(vocab);
}

/* xorshift64*: a fixed seed keeps failures reproducible. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Flips 1-4 bytes, mostly in the metadata (header, lengths, counts, types) rather than in
 * tensor data, to values that stress length and count fields. */
static void mutate(uint8_t *buf, size_t size, size_t meta_end, uint64_t *rng)
{
    static const uint8_t special[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0x40, 0x20, 0x09, 0x08};
    int flips = 1 + (int)(rng_next(rng) % 4);
    for (int i = 0; i < flips; i++) {
        uint64_t r = rng_next(rng);
        size_t head = size < 64 ? size : 64;
        size_t pos = (size_t)(rng_next(rng) % (r % 4 == 0 ? size : r % 4 == 1 ? head : meta_end));
        uint64_t how = rng_next(rng) % 4;
        if (how == 0)
            buf[pos] = special[rng_next(rng) % sizeof special];
        else if (how == 1)
            buf[pos] ^= (uint8_t)(1u << (rng_next(rng) % 8));
        else if (how == 2)
            buf[pos] = (uint8_t)(buf[pos] + (rng_next(rng) % 2 ? 1 : 0xff));
        else
            buf[pos] = (uint8_t)rng_next(rng);
    }
}

static void fuzz_file(const uint8_t *data, size_t size, int rounds, uint64_t seed)
{
    gguf_file *f = NULL;
    mica_err err;
    assert_int_equal(gguf_open_memory(&f, data, size, "orig", &err), MICA_OK);
    size_t meta_end = (size_t)f->data_offset < size ? (size_t)f->data_offset : size;
    gguf_close(f);
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    uint64_t rng = seed, sum = 0;
    int ok = 0;
    for (int i = 0; i < rounds; i++) {
        memcpy(buf, data, size);
        mutate(buf, size, meta_end, &rng);
        ok += parse_copy(buf, size, &sum);
    }
    /* Both outcomes must have happened, or the flips tested nothing. */
    print_message("%d of %d mutated files parsed (checksum %llu)\n", ok, rounds,
                  (unsigned long long)sum);
    assert_true(ok > 0 && ok < rounds);
    free(buf);
}

static void test_random_flips(void **state)
{
    size_t n;
    uint8_t *small = make_small_file(&n);
    fuzz_file(small, n, 10000, 0x9E3779B97F4A7C15ull);
    free(small);

    char path[1024];
    TU_SHARED_PATH(path, VOCAB_GGUF);
    uint8_t *vocab = (uint8_t *)tu_read_file(path, &n);
    fuzz_file(vocab, n, 4000, 12345);
    free(vocab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_errors),        cmocka_unit_test(test_defects_in_metadata),
        cmocka_unit_test(test_defects_in_tensors), cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_random_flips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
