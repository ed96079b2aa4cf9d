/*
 * test_lora_cli.c - LoRA on the command line (build/mica in a child process): `mica logits
 * --lora FILE:SCALE` writes llama.cpp's logits for base + adapter; `mica lora merge` writes a
 * model whose `mica logits` are the same references; `mica run --lora` generates; bad
 * adapters and arguments give one line `mica: FILE: ...`, exit 1, and no output file.
 */
#define _GNU_SOURCE
#include "cli_run.h"

#define N_TOKENS 16
#define N_VOCAB  512
#define TOKENS   "1,300,301,302,259,261,400,450,511,3,13,100,258,262,350,499"

static void shared_file(char *buf, size_t cap, const char *rel)
{
    char path[1024];
    TU_SHARED_PATH(path, rel);
    snprintf(buf, cap, "%s", path);
}

/* `mica logits` of the reference prompt against lora/logits/<ref>.bin. */
static void check_logits(const char *model, const char *lora, const char *ref)
{
    char out[512], refp[1024], rel[256];
    run_tmp_path(out, sizeof out, "lora", "logits.bin");
    const char *args[] = {"logits", "-m", model, "--tokens", TOKENS,
                          "-o",     out,  "-t",  "2",        lora ? "--lora" : NULL,
                          lora,     NULL};
    run_result r = run_mica(args);
    if (r.status) fail_msg("mica logits: %s", r.err);
    snprintf(rel, sizeof rel, "testdata/llamacpp/lora/logits/%s.bin", ref);
    shared_file(refp, sizeof refp, rel);
    size_t n_got, n_want;
    float *got = (float *)tu_read_file(out, &n_got), *want = (float *)tu_read_file(refp, &n_want);
    assert_int_equal(n_got, n_want);
    assert_int_equal(n_got, sizeof(float) * N_TOKENS * N_VOCAB);
    const double d = tu_check_close(ref, got, want, N_TOKENS * N_VOCAB, 1e-5);
    printf("mica logits %s%s vs %s: max|diff| %.2e\n", lora ? "--lora " : "", lora ? lora : "", ref,
           d);
    free(got);
    free(want);
    run_free(&r);
    remove(out);
}

static void test_logits_lora(void **state)
{
    char model[1024], adapter[1024], spec[1100];
    shared_file(model, sizeof model, "testdata/llamacpp/models/qwen2moe.F32.gguf");
    shared_file(adapter, sizeof adapter, "testdata/llamacpp/lora/adapters/lora-qwen2moe-full.gguf");
    snprintf(spec, sizeof spec, "%s:0.5", adapter);
    check_logits(model, spec, "lora-qwen2moe-full.s0.5.f32kv");
    check_logits(model, adapter, "lora-qwen2moe-full.s1.0.f32kv");
}

static void test_merge(void **state)
{
    char model[1024], adapter[1024], out[512];
    shared_file(model, sizeof model, "testdata/llamacpp/models/llama-dense.F32.gguf");
    shared_file(adapter, sizeof adapter, "testdata/llamacpp/lora/adapters/lora-llama-dense.gguf");
    run_tmp_path(out, sizeof out, "lora", "merged.gguf");
    char spec[1100];
    snprintf(spec, sizeof spec, "%s:0.5", adapter);
    run_result r = run_mica((const char *[]){"lora", "merge", model, spec, "-o", out, NULL});
    if (r.status) fail_msg("mica lora merge: %s", r.err);
    assert_non_null(strstr(r.err, "merged 1 adapter(s)"));
    run_free(&r);
    check_logits(out, NULL, "lora-llama-dense.s0.5.f32kv");
    remove(out);
}

static void test_run_lora(void **state)
{
    char model[1024], adapter[1024];
    shared_file(model, sizeof model, "testdata/llamacpp/models/llama-dense.F32.gguf");
    shared_file(adapter, sizeof adapter, "testdata/llamacpp/lora/adapters/lora-llama-dense.gguf");
    run_result r = run_mica((const char *[]){"run", "-m", model, "-p", "hello", "-n", "4", "--temp",
                                             "0", "--lora", adapter, "-t", "1", NULL});
    if (r.status) fail_msg("mica run --lora: %s", r.err);
    assert_non_null(strstr(r.err, "generated"));
    run_free(&r);
}

/* One line on stderr naming `want`, exit 1, nothing on stdout, no output file. */
static void expect_error(const char *const *args, const char *out, const char *want)
{
    run_result r = run_mica(args);
    printf("expected error: %s", r.err);
    assert_int_equal(r.status, 1);
    assert_int_equal(r.out_len, 0);
    assert_true(!strncmp(r.err, "mica: ", 6));
    assert_non_null(strchr(r.err, '\n'));
    assert_int_equal(strchr(r.err, '\n') - r.err, (long)strlen(r.err) - 1); /* one line */
    if (!strstr(r.err, want)) fail_msg("'%s' does not say '%s'", r.err, want);
    if (out) {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", out);
        assert_false(tu_exists(out));
        assert_false(tu_exists(tmp));
    }
    run_free(&r);
}

static void test_errors(void **state)
{
    char model[1024], other[1024], out[512];
    shared_file(model, sizeof model, "testdata/llamacpp/models/llama-dense.F32.gguf");
    shared_file(other, sizeof other, "testdata/llamacpp/lora/adapters/lora-qwen2-dense.gguf");
    run_tmp_path(out, sizeof out, "lora", "bad.gguf");
    expect_error((const char *[]){"lora", "merge", model, other, "-o", out, NULL}, out,
                 "architecture 'qwen2', the model is 'llama'");
    expect_error((const char *[]){"lora", "merge", model, model, "-o", out, NULL}, out,
                 "not a LoRA adapter");
    expect_error((const char *[]){"lora", "merge", model, "-o", out, NULL}, out,
                 "at least one ADAPTER");
    expect_error((const char *[]){"lora", "split", NULL}, NULL, "unknown subcommand 'split'");
    expect_error((const char *[]){"logits", "-m", model, "--tokens", "1,2", "-o", out, "--lora",
                                  "/nonexistent.gguf:2", NULL},
                 out, "/nonexistent.gguf");
    expect_error((const char *[]){"run", "-m", model, "-p", "hi", "--lora", other, NULL}, NULL,
                 other);
    run_result r = run_mica((const char *[]){"lora", "--help", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: mica lora merge"));
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_lora),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_run_lora),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
