/*
 * test_eval_cli.c - `mica eval` on stories260K: references made by `mica run` (greedy, the
 * single-sequence path) are matched exactly by eval's batched answers, a wrong reference is
 * counted wrong, contains and label judge prefixes and first sentences; bad input names the
 * file and line.
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include <jansson.h>

#define MODEL_PATH(buf) TU_SHARED_PATH(buf, "testdata/stories260K/models/stories260K.F32.gguf")

static char *greedy(const char *model, const char *prompt)
{
    const char *args[] = {"run", "-m", model, "-p", prompt, "--temp",
                          "0",   "-n", "12",  "-t", "1",    NULL};
    run_result r = run_mica(args);
    assert_int_equal(r.status, 0);
    free(r.err);
    return r.out;
}

static void write_lines(const char *path, json_t *records)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    size_t i;
    json_t *rec;
    json_array_foreach(records, i, rec)
    {
        json_dumpf(rec, f, JSON_COMPACT);
        fputc('\n', f);
    }
    fclose(f);
}

static void test_scores(void **state)
{
    (void)state;
    char model[1024], data[512];
    MODEL_PATH(model);
    run_tmp_path(data, sizeof data, "eval", "data.jsonl");
    static const char *const prompts[] = {"Once upon a time", "The cat", "Lily went to"};
    json_t *recs = json_array();
    for (int i = 0; i < 3; i++) {
        char *out = greedy(model, prompts[i]);
        json_array_append_new(recs, json_pack("{s:s,s:s,s:s}", "prompt", prompts[i], "completion",
                                              out, "label", i ? "B" : "A"));
        if (i == 0) /* contains: a prefix of the answer; exact: wrong */
            json_array_append_new(recs, json_pack("{s:s,s:s%,s:s}", "prompt", prompts[i],
                                                  "completion", out, (size_t)4, "label", "A"));
        free(out);
    }
    json_array_append_new(recs, json_pack("{s:s,s:s,s:s}", "prompt", "The dog", "completion",
                                          "zzz. qqq", "label", "C"));
    write_lines(data, recs);
    json_decref(recs);
    const char *args[] = {"eval",
                          "-m",
                          model,
                          "--data",
                          data,
                          "-n",
                          "12",
                          "-t",
                          "1",
                          "--metric",
                          "exact,contains,label",
                          NULL};
    run_result r = run_mica(args);
    if (r.status) fail_msg("%s", r.err);
    assert_non_null(strstr(r.out, "exact     60.00 %  (3 of 5)"));
    assert_non_null(strstr(r.out, "contains  80.00 %  (4 of 5)"));
    assert_non_null(strstr(r.err, "5 examples answered"));
    run_free(&r);
    unlink(data);
}

static void test_bad_input(void **state)
{
    (void)state;
    char model[1024], data[512];
    MODEL_PATH(model);
    run_tmp_path(data, sizeof data, "eval", "bad.jsonl");
    FILE *f = fopen(data, "w");
    fputs("{\"prompt\":\"a\",\"completion\":\"b\"}\n\n{\"prompt\": oops}\n", f);
    fclose(f);
    run_result r = run_mica((const char *const[]){"eval", "-m", model, "--data", data, NULL});
    assert_int_equal(r.status, 1);
    char want[600];
    snprintf(want, sizeof want, "%s:3:", data);
    if (!strstr(r.err, want)) fail_msg("%s", r.err);
    run_free(&r);
    f = fopen(data, "w");
    fputs("{\"prompt\":\"a\"}\n", f);
    fclose(f);
    r = run_mica((const char *const[]){"eval", "-m", model, "--data", data, NULL});
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "completion"));
    run_free(&r);
    r = run_mica(
        (const char *const[]){"eval", "-m", model, "--data", data, "--metric", "bleu", NULL});
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "bleu"));
    run_free(&r);
    unlink(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scores),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
