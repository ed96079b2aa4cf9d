/*
 * test_logs_cli.c - `mica logs` as an operator runs it (build/mica in a child process) over a
 * request log this test writes through the store API: --help; list (table and --json, filtered
 * by --key-id and --before in unix seconds and ISO-8601); show (text with prompt and response,
 * escape bytes neutralised, content-free rows, --json); export (JSON lines read back with
 * Jansson); purge by key (count printed, bytes gone from the database and WAL files) and
 * --all; and bad input giving one line `mica: <what>: ...`, exit 1 and no output.
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include "store/store.h"

#include <jansson.h>

#define T0 1795867200000LL /* 2026-11-28T12:00:00Z */

static const char *const marker_a = "MARKER-key-a-prompt-8d1f";
static const char *const marker_b = "MARKER-key-b-prompt-2c7e";

/* DIR with requests.db holding: r1, r2 (key_a, at T0 and T0+2s), r3 (key_b, T0+1s, an escape
 * byte in its prompt), r4 (no key, no content, T0+3s). */
static void make_log(char *dir, size_t cap)
{
    run_tmp_path(dir, cap, "logs", "data");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    store *s;
    mica_err err;
    store_opts o = {.create = true};
    if (store_open(&s, dir, &o, &err)) fail_msg("%s", err.msg);
    char p1[128], p3[128];
    snprintf(p1, sizeof p1, "first %s", marker_a);
    snprintf(p3, sizeof p3, "third \x1b[31m %s", marker_b);
    store_log_row rows[] = {
        {.id = "r1",
         .created_at = T0,
         .key_id = "key_a",
         .tier = "vip",
         .model = "stories",
         .endpoint = "/v1/chat/completions",
         .status = 200,
         .prompt_tokens = 5,
         .completion_tokens = 7,
         .total_ms = 120,
         .prompt = p1,
         .response = "answer one"},
        {.id = "r2",
         .created_at = T0 + 2000,
         .key_id = "key_a",
         .tier = "vip",
         .model = "stories",
         .endpoint = "/v1/completions",
         .status = 200,
         .prompt = marker_a,
         .response = "answer two"},
        {.id = "r3",
         .created_at = T0 + 1000,
         .key_id = "key_b",
         .tier = "standard",
         .model = "stories",
         .endpoint = "/v1/chat/completions",
         .status = 200,
         .prompt = p3,
         .response = "answer three"},
        {.id = "r4",
         .created_at = T0 + 3000,
         .tier = "batch",
         .model = "stories",
         .endpoint = "/v1/chat/completions",
         .status = 429},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (store_log_insert(s, &rows[i], &err)) fail_msg("%s", err.msg);
    store_close(s);
}

static void rm_log(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static run_result logs(const char *dir, const char *const *args)
{
    const char *argv[32] = {"logs", "--data-dir", dir};
    int n = 3;
    while (args[n - 3] && n < 31) argv[n] = args[n - 3], n++;
    argv[n] = NULL;
    return run_mica(argv);
}

static run_result logs_ok(const char *dir, const char *const *args)
{
    run_result r = logs(dir, args);
    if (r.status != 0) fail_msg("mica logs %s: exit %d, stderr '%s'", args[0], r.status, r.err);
    return r;
}

/* The ids on stdout, in order, as one comma-separated string ("r1,r3"). */
static void ids_of(const char *out, char *buf, size_t cap)
{
    buf[0] = '\0';
    const char *ids[] = {"r1", "r2", "r3", "r4"};
    for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        for (size_t i = 0; i < 4; i++) {
            char pat[8];
            snprintf(pat, sizeof pat, " %s ", ids[i]);
            const char *nl = strchr(p, '\n');
            const char *hit = strstr(p, pat);
            if (hit && (!nl || hit < nl)) {
                if (buf[0]) strncat(buf, ",", cap - strlen(buf) - 1);
                strncat(buf, ids[i], cap - strlen(buf) - 1);
            }
        }
    }
}

/* run_expect_error with "<prefix>: ". */
static void expect_error(run_result r, const char *prefix, const char *needle)
{
    char want[1100];
    snprintf(want, sizeof want, "%s: ", prefix);
    run_expect_error(r, want, needle);
}

static bool file_has(const char *dir, const char *suffix, const char *marker)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s%s", dir, STORE_DB_NAME, suffix);
    return tu_file_has(p, marker);
}

static void test_help(void **state)
{
    run_result r = run_mica((const char *[]){"--help", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "logs"));
    run_free(&r);
    r = run_mica((const char *[]){"logs", "--help", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: mica logs"));
    assert_non_null(strstr(r.out, "purge"));
    run_free(&r);
}

static void test_list(void **state)
{
    char dir[512], ids[64];
    make_log(dir, sizeof dir);
    run_result r = logs_ok(dir, (const char *[]){"list", NULL});
    assert_non_null(strstr(r.out, "created_at"));
    ids_of(r.out, ids, sizeof ids);
    assert_string_equal(ids, "r1,r3,r2,r4"); /* oldest first */
    assert_non_null(strstr(r.out, "2026-11-28T12:00:00.000Z r1 key_a vip stories 200 5 7 120 yes"));
    assert_non_null(strstr(r.out, " r4 - batch stories 429 0 0 0 no"));
    assert_null(strstr(r.out, "MARKER")); /* list never prints prompts */
    run_free(&r);

    r = logs_ok(dir, (const char *[]){"list", "--key-id", "key_a", NULL});
    ids_of(r.out, ids, sizeof ids);
    assert_string_equal(ids, "r1,r2");
    run_free(&r);
    r = logs_ok(dir, (const char *[]){"list", "--before", "2026-11-28T12:00:02Z", NULL});
    ids_of(r.out, ids, sizeof ids);
    assert_string_equal(ids, "r1,r3");
    run_free(&r);
    r = logs_ok(dir, (const char *[]){"list", "--before", "1795867201", "--key-id", "key_a", NULL});
    ids_of(r.out, ids, sizeof ids);
    assert_string_equal(ids, "r1");
    run_free(&r);

    r = logs_ok(dir, (const char *[]){"list", "--json", NULL});
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) fail_msg("list --json line %d is not JSON: %s", n, line);
        assert_true(json_is_string(json_object_get(o, "id")));
        assert_null(json_object_get(o, "prompt"));
        json_decref(o);
        n++;
    }
    assert_int_equal(n, 4);
    run_free(&r);
    rm_log(dir);
}

static void test_show(void **state)
{
    char dir[512];
    make_log(dir, sizeof dir);
    run_result r = logs_ok(dir, (const char *[]){"show", "r3", NULL});
    assert_non_null(strstr(r.out, "key_id             key_b"));
    assert_non_null(strstr(r.out, "--- prompt\nthird ?[31m MARKER-key-b-prompt-2c7e\n"));
    assert_non_null(strstr(r.out, "--- response\nanswer three\n"));
    assert_null(strchr(r.out, '\x1b')); /* no escape sequence reaches the terminal */
    run_free(&r);
    r = logs_ok(dir, (const char *[]){"show", "r4", NULL});
    assert_non_null(strstr(r.out, "--- prompt (not stored)\n--- response (not stored)\n"));
    run_free(&r);
    r = logs_ok(dir, (const char *[]){"show", "r1", "--json", NULL});
    json_error_t je;
    json_t *o = json_loads(r.out, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "prompt")),
                        "first MARKER-key-a-prompt-8d1f");
    assert_string_equal(json_string_value(json_object_get(o, "response")), "answer one");
    json_decref(o);
    run_free(&r);
    rm_log(dir);
}

static void test_export(void **state)
{
    char dir[512];
    make_log(dir, sizeof dir);
    run_result r = logs_ok(dir, (const char *[]){"export", "--key-id", "key_a", NULL});
    char *save = NULL;
    const char *want[] = {"r1", "r2"};
    int n = 0;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) fail_msg("export line %d is not JSON: %s", n, line);
        assert_true(n < 2);
        assert_string_equal(json_string_value(json_object_get(o, "id")), want[n]);
        assert_string_equal(json_string_value(json_object_get(o, "key_id")), "key_a");
        assert_non_null(strstr(json_string_value(json_object_get(o, "prompt")), marker_a));
        json_decref(o);
        n++;
    }
    assert_int_equal(n, 2);
    run_free(&r);
    r = logs_ok(dir, (const char *[]){"export", NULL});
    assert_non_null(strstr(r.out, "\"prompt\":null"));
    assert_non_null(strstr(r.out, "\\u001B[31m")); /* JSON escapes the escape byte */
    run_free(&r);
    rm_log(dir);
}

static void test_purge(void **state)
{
    char dir[512], ids[64];
    make_log(dir, sizeof dir);
    assert_true(file_has(dir, "", marker_a) || file_has(dir, "-wal", marker_a));
    run_result r = logs_ok(dir, (const char *[]){"purge", "--key-id", "key_a", NULL});
    assert_string_equal(r.out, "purged 2 rows\n");
    run_free(&r);
    /* A deletion request leaves no bytes of the purged prompts in either file. */
    assert_false(file_has(dir, "", marker_a));
    assert_false(file_has(dir, "-wal", marker_a));
    assert_true(file_has(dir, "", marker_b));
    r = logs_ok(dir, (const char *[]){"list", NULL});
    ids_of(r.out, ids, sizeof ids);
    assert_string_equal(ids, "r3,r4");
    run_free(&r);
    r = logs_ok(dir, (const char *[]){"purge", "--key-id", "key_a", NULL});
    assert_string_equal(r.out, "purged 0 rows\n");
    run_free(&r);
    r = logs_ok(dir, (const char *[]){"purge", "--before", "2026-11-28T12:00:03Z", NULL});
    assert_string_equal(r.out, "purged 1 row\n");
    run_free(&r);
    r = logs_ok(dir, (const char *[]){"purge", "--all", NULL});
    assert_string_equal(r.out, "purged 1 row\n");
    run_free(&r);
    assert_false(file_has(dir, "", marker_b));
    rm_log(dir);
}

static void test_bad_input(void **state)
{
    char dir[512], db[600], missing[512];
    make_log(dir, sizeof dir);
    snprintf(db, sizeof db, "%s/%s", dir, STORE_DB_NAME);
    run_tmp_path(missing, sizeof missing, "logs", "missing");
    char missing_db[600];
    snprintf(missing_db, sizeof missing_db, "%s/%s", missing, STORE_DB_NAME);
    expect_error(logs(missing, (const char *[]){"list", NULL}), missing_db, "no request log");
    assert_false(tu_exists(missing)); /* list never creates a log */
    expect_error(logs(dir, (const char *[]){"list", "--before", "yesterday", NULL}),
                 "logs: --before", "yesterday");
    expect_error(logs(dir, (const char *[]){"list", "--before", NULL}), "logs --before",
                 "missing value");
    expect_error(logs(dir, (const char *[]){"frob", NULL}), "logs", "unknown action 'frob'");
    expect_error(logs(dir, (const char *[]){"list", "--frob", NULL}), "logs",
                 "unknown option '--frob'");
    expect_error(logs(dir, (const char *[]){"show", NULL}), "logs", "needs a request id");
    expect_error(logs(dir, (const char *[]){"show", "nope", NULL}), db, "no request 'nope'");
    expect_error(logs(dir, (const char *[]){"list", "extra", NULL}), "logs",
                 "unexpected argument 'extra'");
    expect_error(logs(dir, (const char *[]){"purge", NULL}), "logs",
                 "needs --key-id, --before or --all");
    expect_error(run_mica((const char *[]){"logs", NULL}), "logs", "say list");
    /* Nothing was deleted by the refused purge. */
    run_result r = logs_ok(dir, (const char *[]){"list", NULL});
    char ids[64];
    ids_of(r.out, ids, sizeof ids);
    assert_string_equal(ids, "r1,r3,r2,r4");
    run_free(&r);
    /* A file that is not a SQLite database. */
    rm_log(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    FILE *f = fopen(db, "wb");
    assert_non_null(f);
    for (int i = 0; i < 2048; i++) fputs("no sqlite here ", f);
    fclose(f);
    expect_error(logs(dir, (const char *[]){"list", NULL}), db, "not a database");
    rm_log(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),  cmocka_unit_test(test_list),
        cmocka_unit_test(test_show),  cmocka_unit_test(test_export),
        cmocka_unit_test(test_purge), cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
