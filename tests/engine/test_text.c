/*
 * test_text.c - the text of a generation as the scheduler hands it out (src/engine/text.c):
 * stop strings found across token boundaries with the text before them kept, tails that
 * could start a stop string held back and released when they do not, a character split
 * over tokens sent whole, invalid bytes, overlong forms and surrogates sent as U+FFFD.
 */
#include "test_util.h"

#include "engine/engine.h"

#define FFFD "\xEF\xBF\xBD"

typedef struct feed {
    eng_text t;
    core_buf out, all;
} feed;

static void feed_init(feed *f, const char *const *stops, int n)
{
    mica_err err;
    assert_int_equal(eng_text_init(&f->t, stops, n, 1024, &err), MICA_OK);
    core_buf_init(&f->out, 4096);
    core_buf_init(&f->all, 4096);
}

static eng_text_result push(feed *f, const char *piece)
{
    f->out.len = 0;
    eng_text_result r = eng_text_push(&f->t, piece, strlen(piece), &f->out);
    assert_true(core_buf_append(&f->all, f->out.data ? f->out.data : "", f->out.len));
    return r;
}

static void flush(feed *f)
{
    f->out.len = 0;
    assert_true(eng_text_flush(&f->t, &f->out));
    assert_true(core_buf_append(&f->all, f->out.data ? f->out.data : "", f->out.len));
}

static void expect_all(feed *f, const char *want)
{
    assert_int_equal(f->all.len, strlen(want));
    assert_memory_equal(f->all.data, want, f->all.len);
    eng_text_free(&f->t);
    core_buf_free(&f->out);
    core_buf_free(&f->all);
}

static void test_stop_across_tokens(void **state)
{
    (void)state;
    const char *stops[] = {"\n\nUser:", "END"};
    feed f;
    feed_init(&f, stops, 2);
    assert_int_equal(push(&f, "Hello"), ENG_TEXT_OK);
    assert_int_equal(push(&f, " world\n"), ENG_TEXT_OK);
    assert_int_equal(f.out.len, 6); /* "\n" may start "\n\nUser:": held back */
    assert_int_equal(push(&f, "\nUs"), ENG_TEXT_OK);
    assert_int_equal(f.out.len, 0);
    assert_int_equal(push(&f, "er: hi"), ENG_TEXT_STOP);
    expect_all(&f, "Hello world");
}

static void test_held_tail_released(void **state)
{
    (void)state;
    const char *stops[] = {"END"};
    feed f;
    feed_init(&f, stops, 1);
    assert_int_equal(push(&f, "the EN"), ENG_TEXT_OK);
    assert_int_equal(f.out.len, 4);
    assert_int_equal(push(&f, "D"), ENG_TEXT_STOP);
    expect_all(&f, "the ");

    feed_init(&f, stops, 1);
    push(&f, "an EN");
    push(&f, "TRY");
    flush(&f);
    expect_all(&f, "an ENTRY");

    feed_init(&f, stops, 1);
    push(&f, "last E"); /* generation ends (length) while a tail is held */
    flush(&f);
    expect_all(&f, "last E");
}

static void test_utf8_split_and_invalid(void **state)
{
    (void)state;
    feed f;
    feed_init(&f, NULL, 0);
    push(&f, "caf\xC3");
    assert_int_equal(f.out.len, 3); /* the first byte of 'é' waits */
    push(&f, "\xA9!");
    push(&f, "\xE2\x82"); /* first two bytes of '€' */
    push(&f, "\xAC");
    flush(&f);
    expect_all(&f, "caf\xC3\xA9!\xE2\x82\xAC");

    feed_init(&f, NULL, 0);
    push(&f, "a\xFF"
             "b");            /* an invalid byte */
    push(&f, "\xC0\xAF");     /* an overlong '/' */
    push(&f, "\xED\xA0\x80"); /* a surrogate */
    push(&f, "\xEF\xBF\xBD"); /* a real U+FFFD stays one */
    push(&f, "\xF0\x9F");     /* a truncated 4-byte character at the end */
    flush(&f);
    /* One U+FFFD per invalid byte or rejected sequence, two for the truncated character. */
    expect_all(&f, "a" FFFD "b" FFFD FFFD FFFD FFFD FFFD);
}

static void test_bad_stops(void **state)
{
    (void)state;
    eng_text t;
    mica_err err;
    char longest[ENG_MAX_STOP_LEN + 2];
    memset(longest, 'x', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    const char *too_long[] = {longest};
    assert_int_equal(eng_text_init(&t, too_long, 1, 1024, &err), MICA_EINVAL);
    eng_text_free(&t);
    const char *many[ENG_MAX_STOPS + 1] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    assert_int_equal(eng_text_init(&t, many, ENG_MAX_STOPS + 1, 1024, &err), MICA_EINVAL);
    eng_text_free(&t);
    const char *empty[] = {""}; /* ignored: it would stop before any text */
    feed f;
    feed_init(&f, empty, 1);
    assert_int_equal(push(&f, "text"), ENG_TEXT_OK);
    expect_all(&f, "text");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_across_tokens),
        cmocka_unit_test(test_held_tail_released),
        cmocka_unit_test(test_utf8_split_and_invalid),
        cmocka_unit_test(test_bad_stops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
