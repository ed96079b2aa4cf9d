/*
 * test_data_cli.c - `mica data sensors`: N JSON lines with the fields, the same file for the
 * same seed, --lang and --task respected, the file appears only when complete; bad options
 * are errors naming the option.
 */
#define _GNU_SOURCE
#include "cli_run.h"

static char *write_dataset(const char *name, const char *const *extra)
{
    char path[512];
    run_tmp_path(path, sizeof path, "data", name);
    const char *args[16] = {"data", "sensors", "--n", "40", "-o", path};
    int n = 6;
    while (*extra) args[n++] = *extra++;
    args[n] = NULL;
    run_result r = run_mica(args);
    if (r.status) fail_msg("mica data failed: %s", r.err);
    assert_non_null(strstr(r.err, "40 examples"));
    run_free(&r);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
    char *text = tu_read_file(path, NULL);
    unlink(path);
    return text;
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_writes_jsonl(void **state)
{
    (void)state;
    char *a = write_dataset("a", (const char *const[]){"--seed", "4", NULL});
    char *b = write_dataset("b", (const char *const[]){"--seed", "4", NULL});
    char *c = write_dataset(
        "c", (const char *const[]){"--seed", "4", "--lang", "zh", "--task", "site-b", NULL});
    assert_string_equal(a, b);
    assert_int_equal(count(a, "\n"), 40);
    assert_int_equal(count(a, "{\"prompt\":"), 40);
    assert_int_equal(count(a, "\"completion\":"), 40);
    assert_int_equal(count(c, "\"lang\":\"zh\""), 40);
    assert_int_equal(count(c, "\"task\":\"site-b\""), 40);
    assert_int_equal(count(c, "状态:"), 40);
    free(a);
    free(b);
    free(c);
}

static void test_bad_options(void **state)
{
    (void)state;
    const char *const *cases[] = {
        (const char *const[]){"data", "sensors", "--n", "5", "-o", "-", "--task", "x", NULL},
        (const char *const[]){"data", "sensors", "--n", "5", "-o", "-", "--lang", "fr", NULL},
        (const char *const[]){"data", "sensors", "-o", "-", NULL},
        (const char *const[]){"data", "weather", "--n", "5", NULL},
        (const char *const[]){"data", "sensors", "--n", "5", "-o", "/nonexistent/dir/x", NULL},
    };
    static const char *const msgs[] = {"--task", "--lang", "--n", "weather", "/nonexistent/dir"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_result r = run_mica(cases[i]);
        assert_int_equal(r.status, 1);
        if (!strstr(r.err, msgs[i])) fail_msg("case %zu: %s", i, r.err);
        run_free(&r);
    }
    run_result r = run_mica((const char *const[]){"data", "--help", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "docs/sensors.md"));
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writes_jsonl),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
