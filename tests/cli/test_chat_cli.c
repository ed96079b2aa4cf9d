/*
 * test_chat_cli.c - `mica chat` over a pipe, greedy on stories260K (no template: ChatML):
 * /reset forgets the conversation (the same question then gets the answer it gets in a fresh
 * session); the second turn, evaluated on top of the cached first one, equals `mica run` on
 * the whole ChatML conversation written out by hand; --json-schema makes every answer (and
 * mica run's output) a document of the schema; --help; a missing model is an error.
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include <stdbool.h>

#define MODEL_PATH(buf) TU_SHARED_PATH(buf, "testdata/stories260K/models/stories260K.F32.gguf")

static run_result chat(const char *model, const char *input)
{
    char path[512];
    run_tmp_path(path, sizeof path, "chat", "input");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(input, f);
    fclose(f);
    const char *args[] = {"chat", "-m", model, "--temp", "0", "-n", "12", "-t", "1", NULL};
    run_result r = run_mica_io(args, path, 0);
    unlink(path);
    if (r.status) fail_msg("mica chat failed: %s", r.err);
    return r;
}

static bool ends_with(const char *s, size_t n, const char *tail)
{
    const size_t t = strlen(tail);
    return n >= t && !memcmp(s + n - t, tail, t);
}

static void test_reset_forgets(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    run_result fresh = chat(model, "Where is the cat?\n");
    run_result after = chat(model, "Tell me a story.\n/reset\nWhere is the cat?\n");
    assert_true(fresh.out_len > 1);
    if (!ends_with(after.out, after.out_len, fresh.out))
        fail_msg("after /reset: '%s', fresh: '%s'", after.out, fresh.out);
    assert_non_null(strstr(after.err, "reset"));
    run_free(&fresh);
    run_free(&after);
}

static void test_second_turn_equals_whole_prompt(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    run_result first = chat(model, "Hi\n");
    run_result both = chat(model, "Hi\nWhere is the cat?\n");
    /* The first answer is the first line(s) of both; the rest answers the second message. */
    assert_true(both.out_len > first.out_len && !memcmp(both.out, first.out, first.out_len));
    char answer1[512];
    snprintf(answer1, sizeof answer1, "%.*s", (int)first.out_len - 1, first.out);
    char prompt[2048];
    snprintf(prompt, sizeof prompt,
             "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n"
             "<|im_start|>user\nWhere is the cat?<|im_end|>\n<|im_start|>assistant\n",
             answer1);
    const char *args[] = {"run", "-m", model, "-p", prompt, "--temp",
                          "0",   "-n", "12",  "-t", "1",    NULL};
    run_result ref = run_mica(args);
    assert_int_equal(ref.status, 0);
    const char *second = both.out + first.out_len;
    if (strlen(second) != ref.out_len + 1 || memcmp(second, ref.out, ref.out_len))
        fail_msg("second turn '%s', mica run on the whole conversation '%s'", second, ref.out);
    run_free(&first);
    run_free(&both);
    run_free(&ref);
}

/* --json-schema: every answer (and mica run's output) is a document of the schema. */
static void test_json_schema(void **state)
{
    (void)state;
    char model[1024], schema[512], input[512];
    MODEL_PATH(model);
    run_tmp_path(schema, sizeof schema, "chat", "schema.json");
    run_tmp_path(input, sizeof input, "chat", "schema_input");
    FILE *f = fopen(schema, "w");
    fputs("{\"type\":\"object\",\"properties\":{\"status\":{\"enum\":[\"normal\",\"warning\"]}},"
          "\"required\":[\"status\"]}",
          f);
    fclose(f);
    f = fopen(input, "w");
    fputs("Hello\nAgain\n", f);
    fclose(f);
    const char *args[] = {"chat", "-m", model, "--json-schema", schema, "-n", "60",
                          "-t",   "1",  NULL};
    run_result r = run_mica_io(args, input, 0);
    if (r.status && strstr(r.err, "needs a build with Jansson")) {
        printf("SKIP: built without Jansson\n");
        run_free(&r);
        skip();
    }
    assert_int_equal(r.status, 0);
    int answers = 0;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n"), answers++) {
        if (line[strspn(line, " ")] != '{' || !strstr(line, "\"status\"") || !strchr(line, '}'))
            fail_msg("answer '%s' is not a document of the schema", line);
    }
    assert_int_equal(answers, 2);
    run_free(&r);
    const char *run_args[] = {"run",  "-m", model, "-p", "Once", "--json-schema",
                              schema, "-n", "60",  "-t", "1",    NULL};
    r = run_mica(run_args);
    assert_int_equal(r.status, 0);
    assert_true(r.out[strspn(r.out, " ")] == '{' && strstr(r.out, "\"status\""));
    run_free(&r);
    unlink(schema);
    unlink(input);
}

static void test_help_and_errors(void **state)
{
    (void)state;
    run_result r = run_mica((const char *const[]){"chat", "--help", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "/reset"));
    run_free(&r);
    r = run_mica((const char *const[]){"chat", "-m", "/nonexistent/model.gguf", NULL});
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "mica: /nonexistent/model.gguf"));
    run_free(&r);
    /* without -m: the default model, here one that is not there */
    setenv("MICA_DEFAULT_MODEL", "/nonexistent/default.gguf", 1);
    r = run_mica((const char *const[]){"chat", NULL});
    unsetenv("MICA_DEFAULT_MODEL");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "mica: /nonexistent/default.gguf"));
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reset_forgets),
        cmocka_unit_test(test_second_turn_equals_whole_prompt),
        cmocka_unit_test(test_json_schema),
        cmocka_unit_test(test_help_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
