/*
 * test_tokenizer_cli.c - `mica tokenizer train`: the vocabulary GGUF appears only when complete
 * and loads with tok_load; a .jsonl file gives the same vocabulary as a text file holding its
 * decoded "prompt" and "completion" strings (escapes, surrogate pairs, other keys and nested
 * values skipped); bad options, missing or empty inputs and malformed JSON lines are one-line
 * errors naming the option or file:line.
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

static run_result train(const char *out, const char *const *files)
{
    const char *args[16] = {"tokenizer", "train", "--vocab", "300", "-o", out};
    int n = 6;
    while (*files) args[n++] = *files++;
    args[n] = NULL;
    return run_mica(args);
}

/* Each JSON line below, decoded: its prompt and completion, each followed by a line break. */
static const char jsonl[] =
    "{\"label\":\"x\",\"prompt\":\"\\u6e29\\u5ea6\\u0032\\\"q\\\"\\\\ \\ud83d\\ude00 tab\\t\","
    "\"extra\":{\"a\":[1,-2.5e3,{\"b\":null}],\"t\":true},\"completion\":\"Status: ok.\\nnext\"}\n"
    "\n"
    "  {\"completion\": \"\\/only completion\\r\", \"prompt\": \"\"}  \n"
    "{\"completion\":\"temperature 28.5\\u00b0C, humidity 62%\"}\n";
static const char decoded[] = "温度2\"q\"\\ 😀 tab\t\nStatus: ok.\nnext\n"
                              "\n/only completion\r\n"
                              "temperature 28.5°C, humidity 62%\n";

static char *read_whole(const char *path, size_t *len)
{
    char *data = tu_read_file(path, len);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
    return data;
}

static void test_jsonl_equals_text(void **state)
{
    (void)state;
    char j[512], t[512], out_j[512], out_t[512];
    run_tmp_path(j, sizeof j, "tok", "corpus.jsonl");
    run_tmp_path(t, sizeof t, "tok", "corpus.txt");
    run_tmp_path(out_j, sizeof out_j, "tok", "j.gguf");
    run_tmp_path(out_t, sizeof out_t, "tok", "t.gguf");
    write_file(j, jsonl);
    write_file(t, decoded);
    run_result r = train(out_j, (const char *const[]){j, NULL});
    if (r.status) fail_msg("mica tokenizer train failed: %s", r.err);
    if (!strstr(r.err, "tokens/byte") || !strstr(r.err, "pre-tokenizer qwen2"))
        fail_msg("summary: %s", r.err);
    run_free(&r);
    r = train(out_t, (const char *const[]){t, NULL});
    assert_int_equal(r.status, 0);
    run_free(&r);
    size_t nj, nt;
    char *a = read_whole(out_j, &nj), *b = read_whole(out_t, &nt);
    assert_int_equal(nj, nt);
    assert_memory_equal(a, b, nj);
    free(a);
    free(b);

    gguf_file *f = NULL;
    tok_vocab *v = NULL;
    mica_err err;
    if (gguf_open(&f, out_j, &err) || tok_load(&v, f, &err)) fail_msg("%s", err.msg);
    assert_string_equal(tok_model_name(v), "gpt2");
    assert_true(tok_n_vocab(v) <= 300);
    tok_free(v);
    gguf_close(f);
    unlink(j);
    unlink(t);
    unlink(out_j);
    unlink(out_t);
}

static void expect_error(const char *const *args, const char *needle)
{
    run_result r = run_mica(args);
    assert_int_equal(r.status, 1);
    if (!strstr(r.err, needle) || strncmp(r.err, "mica: ", 6))
        fail_msg("'%s' lacks '%s'", r.err, needle);
    run_free(&r);
}

static void test_errors(void **state)
{
    (void)state;
    char out[512], empty[512], bad[512], nonstr[512], nokeys[512];
    run_tmp_path(out, sizeof out, "tok", "err.gguf");
    run_tmp_path(empty, sizeof empty, "tok", "empty.txt");
    run_tmp_path(bad, sizeof bad, "tok", "bad.jsonl");
    run_tmp_path(nonstr, sizeof nonstr, "tok", "nonstr.jsonl");
    run_tmp_path(nokeys, sizeof nokeys, "tok", "nokeys.jsonl");
    write_file(empty, "");
    write_file(bad, "{\"prompt\":\"a\"}\n{\"prompt\":\"b\\x\"}\n");
    write_file(nonstr, "{\"prompt\":3}\n");
    write_file(nokeys, "{\"text\":\"a\"}\n");

    expect_error((const char *const[]){"tokenizer", "train", "--vocab", "300", "-o", out,
                                       "/nonexistent/corpus.txt", NULL},
                 "/nonexistent/corpus.txt");
    expect_error(
        (const char *const[]){"tokenizer", "train", "--vocab", "100", "-o", out, empty, NULL},
        "--vocab");
    expect_error(
        (const char *const[]){"tokenizer", "train", "--vocab", "300", "-o", out, empty, NULL},
        "empty corpus");
    char where[600];
    snprintf(where, sizeof where, "%s:2: bad escape", bad);
    expect_error(
        (const char *const[]){"tokenizer", "train", "--vocab", "300", "-o", out, bad, NULL}, where);
    expect_error(
        (const char *const[]){"tokenizer", "train", "--vocab", "300", "-o", out, nonstr, NULL},
        "must be strings");
    expect_error(
        (const char *const[]){"tokenizer", "train", "--vocab", "300", "-o", out, nokeys, NULL},
        "no \"prompt\" or \"completion\"");
    expect_error((const char *const[]){"tokenizer", "train", "--vocab", "300", "-o", out, NULL},
                 "no input files");
    expect_error((const char *const[]){"tokenizer", "train", "--vocab", "300", bad, NULL},
                 "-o FILE is required");
    expect_error((const char *const[]){"tokenizer", "train", "-o", out, bad, NULL},
                 "--vocab N is required");
    expect_error((const char *const[]){"tokenizer", "train", "--vocab", "300", "--pre", "nope",
                                       "-o", out, nokeys, NULL},
                 "no \"prompt\"");
    write_file(nokeys, "some text\n");
    char txt[600];
    snprintf(txt, sizeof txt, "%s.txt", nokeys);
    rename(nokeys, txt);
    expect_error((const char *const[]){"tokenizer", "train", "--vocab", "300", "--pre", "nope",
                                       "-o", out, txt, NULL},
                 "unknown pre-tokenizer 'nope'");
    expect_error((const char *const[]){"tokenizer", "train", "--vocab", "300", "-o",
                                       "/nonexistent/dir/v.gguf", txt, NULL},
                 "/nonexistent/dir/v.gguf");
    expect_error((const char *const[]){"tokenizer", "fit", NULL}, "unknown action 'fit'");
    expect_error((const char *const[]){"tokenizer", "train", "--bogus", NULL}, "--bogus");
    assert_int_not_equal(access(out, F_OK), 0);

    run_result r = run_mica((const char *const[]){"tokenizer", "--help", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: mica tokenizer train --vocab N"));
    run_free(&r);
    unlink(empty);
    unlink(bad);
    unlink(nonstr);
    unlink(txt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl_equals_text),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
