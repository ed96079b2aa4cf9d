/*
 * test_core.c - tests src/core/core.c: error messages, bounded buffers, UTF-8 coding.
 */
#include "test_util.h"

#include "core/core.h"

static void test_fail_formats_message(void **state)
{
    mica_err err = {0};
    mica_status st =
        core_fail(&err, MICA_EFORMAT, "%s: bad key '%s' (offset %d)", "f.gguf", "k", 12);
    assert_int_equal(st, MICA_EFORMAT);
    assert_int_equal(err.status, MICA_EFORMAT);
    assert_string_equal(err.msg, "f.gguf: bad key 'k' (offset 12)");
    core_fail_prefix(&err, "load");
    assert_string_equal(err.msg, "load: f.gguf: bad key 'k' (offset 12)");
}

static void test_buf_respects_cap(void **state)
{
    core_buf b;
    core_buf_init(&b, 8);
    assert_true(core_buf_append(&b, "abcd", 4));
    assert_true(core_buf_printf(&b, "%d", 1234));
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "abcd1234");
    assert_false(core_buf_append(&b, "x", 1));
    assert_int_equal(b.len, 8);
    core_buf_free(&b);
}

static void test_utf8_roundtrip(void **state)
{
    const uint32_t cps[] = {0x41, 0xE9, 0x2581, 0x4E2D, 0x1F600, 0x10FFFF};
    for (size_t i = 0; i < sizeof cps / sizeof cps[0]; i++) {
        char buf[4];
        int n = core_utf8_encode(cps[i], buf);
        int l = 0;
        assert_int_equal(core_utf8_decode(buf, (size_t)n, &l), cps[i]);
        assert_int_equal(l, n);
    }
    int l = 0;
    assert_int_equal(core_utf8_decode("\xE4\xB8", 2, &l), 0xFFFD); /* truncated */
    assert_int_equal(l, 1);
    assert_int_equal(core_utf8_decode("\xFF", 1, &l), 0xFFFD);
}

/* splitmix64's published outputs for seed 0 fill the state; the outputs are xoshiro256**'s
 * (computed from the algorithm's definition in Python, independently of this code). */
static void test_rng_reference_stream(void **state)
{
    (void)state;
    core_rng r;
    core_rng_seed(&r, 0);
    assert_true(r.s[0] == 0xe220a8397b1dcdafull && r.s[1] == 0x6e789e6aa1b965f4ull &&
                r.s[2] == 0x06c45d188009454full && r.s[3] == 0xf88bb8a8724c81ecull);
    assert_true(core_rng_next(&r) == 0x99ec5f36cb75f2b4ull);
    assert_true(core_rng_next(&r) == 0xbf6e1f784956452aull);
    assert_true(core_rng_next(&r) == 0x1a5f849d4933e6e0ull);
}

static void test_rng_below_is_uniform(void **state)
{
    (void)state;
    core_rng r;
    core_rng_seed(&r, 42);
    int counts[3] = {0};
    for (int i = 0; i < 30000; i++) {
        const uint64_t v = core_rng_below(&r, 3);
        assert_true(v < 3);
        counts[v]++;
    }
    for (int k = 0; k < 3; k++) assert_in_range(counts[k], 9500, 10500);
    for (int i = 0; i < 1000; i++) {
        const double u = core_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
    }
}

static void test_json_string_escapes(void **state)
{
    (void)state;
    core_buf b;
    core_buf_init(&b, 256);
    const char in[] = "a\"b\\c\nd\x01\xe6\xb8\xa9";
    assert_true(core_buf_append_json_str(&b, in, sizeof in - 1));
    const char want[] = "\"a\\\"b\\\\c\\nd\\u0001\xe6\xb8\xa9\"";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.data, want, b.len);
    core_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_formats_message), cmocka_unit_test(test_buf_respects_cap),
        cmocka_unit_test(test_utf8_roundtrip),       cmocka_unit_test(test_rng_reference_stream),
        cmocka_unit_test(test_rng_below_is_uniform), cmocka_unit_test(test_json_string_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
