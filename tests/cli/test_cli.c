/*
 * test_cli.c - the `mica` command as a user runs it (build/mica in a child process): --help
 * everywhere; bad input (missing file, not GGUF, unsupported architecture or tensor type,
 * missing tensor, wrong shape, missing vocabulary) gives exactly one line
 * `mica: FILE: ...` on stderr, exit code 1 and no output; `logits` writes llama.cpp's
 * reference layout; `tokenize --ids`; `run` reproduces llama.cpp's greedy text for
 * stories260K with a peak RSS under 16 MB (weights mapped, not copied).
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include "gguf/gguf.h"
#include "tensor/tensor.h"

#include <fcntl.h>
#include <math.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void tmp_path(char *buf, size_t cap, const char *name)
{
    run_tmp_path(buf, cap, "cli", name);
}

/* One line "mica: <path>: ...<needle>..." on stderr, exit 1, nothing on stdout. */
static void expect_error(const char *const *args, const char *path, const char *needle)
{
    run_result r = run_mica(args);
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "mica: %s: ", path);
    if (r.status != 1 || strncmp(r.err, prefix, strlen(prefix)) || !strstr(r.err, needle) ||
        strchr(r.err, '\n') != r.err + strlen(r.err) - 1 || r.out_len != 0)
        fail_msg("expected exit 1 and one line '%s...%s...', got exit %d, stderr '%s', %zu bytes "
                 "of stdout",
                 prefix, needle, r.status, r.err, r.out_len);
    run_free(&r);
}

static void test_help(void **state)
{
    const char *cmds[] = {"info", "tokenize", "run", "logits"};
    run_result r = run_mica((const char *[]){"--help", NULL});
    assert_int_equal(r.status, 0);
    for (size_t i = 0; i < 4; i++) assert_non_null(strstr(r.out, cmds[i]));
    run_free(&r);
    for (size_t i = 0; i < 4; i++) {
        r = run_mica((const char *[]){cmds[i], "--help", NULL});
        assert_int_equal(r.status, 0);
        assert_non_null(strstr(r.out, "usage: mica"));
        run_free(&r);
    }
    r = run_mica((const char *[]){"frobnicate", NULL});
    assert_int_equal(r.status, 1);
    run_free(&r);
}

/* ---- a tiny llama model written with gguf_writer, optionally broken ----------------- */

typedef struct tiny_opts {
    const char *arch;           /* general.architecture (default "llama") */
    const char *skip_tensor;    /* leave this tensor out */
    const char *skip_key;       /* leave this key out */
    const char *reshape_tensor; /* write this [32, 32] tensor as [32, 16] */
    uint32_t attn_q_type;       /* type of blk.0.attn_q.weight (default F32) */
} tiny_opts;

static float tiny_data[32 * 64 * 2];

static void add_tensor(gguf_writer *w, const tiny_opts *o, const char *name, int64_t ne0,
                       int64_t ne1)
{
    if (o->skip_tensor && !strcmp(name, o->skip_tensor)) return;
    int64_t ne[2] = {ne0, ne1};
    uint32_t type = GGUF_T_F32;
    if (o->reshape_tensor && !strcmp(name, o->reshape_tensor)) ne[1] /= 2;
    if (!strcmp(name, "blk.0.attn_q.weight") && o->attn_q_type) type = o->attn_q_type;
    mica_err err;
    if (gguf_writer_add_tensor(w, name, type, ne1 > 1 ? 2 : 1, ne, tiny_data, &err))
        fail_msg("%s", err.msg);
}

static void set_key_u32(gguf_writer *w, const tiny_opts *o, const char *key, uint32_t v)
{
    if (!o->skip_key || strcmp(key, o->skip_key)) gguf_writer_set_u32(w, key, v);
}

static void write_tiny(const char *path, tiny_opts o)
{
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "a", "b", "c", "\xe2\x96\x81", "ab"};
    const float scores[8] = {0, 0, 0, -1, -2, -3, -4, -0.5f};
    const int32_t types[8] = {2, 3, 3, 1, 1, 1, 1, 1};
    for (size_t i = 0; i < sizeof tiny_data / sizeof tiny_data[0]; i++)
        tiny_data[i] = 0.01f * (float)((i * 7919) % 13) - 0.06f;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", o.arch ? o.arch : "llama");
    set_key_u32(w, &o, "llama.context_length", 64);
    set_key_u32(w, &o, "llama.embedding_length", 32);
    set_key_u32(w, &o, "llama.block_count", 1);
    set_key_u32(w, &o, "llama.feed_forward_length", 64);
    set_key_u32(w, &o, "llama.attention.head_count", 2);
    gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    if (!o.skip_key || strcmp(o.skip_key, "tokenizer.ggml.tokens"))
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 8);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_F32, scores, 8);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_I32, types, 8);
    add_tensor(w, &o, "token_embd.weight", 32, 8);
    add_tensor(w, &o, "output_norm.weight", 32, 1);
    add_tensor(w, &o, "blk.0.attn_norm.weight", 32, 1);
    add_tensor(w, &o, "blk.0.attn_q.weight", 32, 32);
    add_tensor(w, &o, "blk.0.attn_k.weight", 32, 32);
    add_tensor(w, &o, "blk.0.attn_v.weight", 32, 32);
    add_tensor(w, &o, "blk.0.attn_output.weight", 32, 32);
    add_tensor(w, &o, "blk.0.ffn_norm.weight", 32, 1);
    add_tensor(w, &o, "blk.0.ffn_gate.weight", 32, 64);
    add_tensor(w, &o, "blk.0.ffn_up.weight", 32, 64);
    add_tensor(w, &o, "blk.0.ffn_down.weight", 64, 32);
    mica_err err;
    if (gguf_writer_write(w, path, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
}

static void expect_run_error(const char *path, const char *needle)
{
    expect_error((const char *[]){"run", "-m", path, "-p", "ab", "-n", "2", NULL}, path, needle);
}

static void test_tiny_model_runs(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "tiny.gguf");
    write_tiny(path, (tiny_opts){0});
    run_result r = run_mica((const char *[]){"run", "-m", path, "-p", "ab", "-n", "3", NULL});
    if (r.status != 0) fail_msg("tiny model: exit %d: %s", r.status, r.err);
    run_free(&r);
    unlink(path);
}

static void test_bad_input(void **state)
{
    char path[512];
    expect_run_error("/nonexistent/model.gguf", "No such file");
    tmp_path(path, sizeof path, "not.gguf");
    FILE *f = fopen(path, "w");
    fputs("this is not a model\n", f);
    fclose(f);
    expect_run_error(path, "GGUF");
    expect_error((const char *[]){"info", path, NULL}, path, "GGUF");

    write_tiny(path, (tiny_opts){.arch = "gptj"});
    expect_run_error(path, "architecture 'gptj'");
    write_tiny(path, (tiny_opts){.skip_tensor = "blk.0.ffn_up.weight"});
    expect_run_error(path, "'blk.0.ffn_up.weight': missing");
    write_tiny(path, (tiny_opts){.reshape_tensor = "blk.0.attn_v.weight"});
    expect_run_error(path, "'blk.0.attn_v.weight' has shape [32, 16]");
    write_tiny(path, (tiny_opts){.attn_q_type = GGUF_T_Q4_1});
    expect_run_error(path, "Q4_1");
    write_tiny(path, (tiny_opts){.skip_key = "tokenizer.ggml.tokens"});
    expect_run_error(path, "tokenizer.ggml.tokens");
    write_tiny(path, (tiny_opts){.skip_key = "llama.block_count"});
    expect_run_error(path, "llama.block_count");
    unlink(path);
}

static void test_logits_matches_llamacpp(void **state)
{
    char model[1024], ref[1024], out[512];
    TU_SHARED_PATH(model, "testdata/llamacpp/models/qwen2-dense.F32.gguf");
    TU_SHARED_PATH(ref, "testdata/llamacpp/logits/qwen2-dense.F32.f32kv.bin");
    tmp_path(out, sizeof out, "logits.bin");
    const char *toks = "1,300,301,302,259,261,400,450,511,3,13,100,258,262,350,499";
    size_t ref_len, got_len;
    float *want = (float *)tu_read_file(ref, &ref_len);
    for (int incremental = 0; incremental < 2; incremental++) {
        run_result r =
            run_mica((const char *[]){"logits", "-m", model, "--tokens", toks, "-o", out, "-t", "2",
                                      incremental ? "--incremental" : NULL, NULL});
        if (r.status) fail_msg("logits: exit %d: %s", r.status, r.err);
        run_free(&r);
        float *got = (float *)tu_read_file(out, &got_len);
        assert_int_equal(got_len, ref_len);
        tu_check_close("mica logits vs llama.cpp", got, want, ref_len / sizeof(float), 1e-5);
        free(got);
        unlink(out);
    }
    free(want);
    /* A bad token id is an error and leaves no file behind. */
    expect_error((const char *[]){"logits", "-m", model, "--tokens", "1,512", "-o", out, NULL},
                 "logits", "--tokens");
    assert_false(tu_exists(out));
}

static void test_tokenize_ids(void **state)
{
    char model[1024];
    TU_SHARED_PATH(model, "testdata/stories260K/models/stories260K.F32.gguf");
    run_result r = run_mica(
        (const char *[]){"tokenize", "-m", model, "-p", "Once upon a time", "--ids", NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "1 403 407 261 378\n");
    run_free(&r);
    r = run_mica((const char *[]){"tokenize", "-m", model, "-p", "Once upon a time", "--ids",
                                  "--no-bos", NULL});
    assert_string_equal(r.out, "403 407 261 378\n");
    run_free(&r);
}

static void test_run_stories_greedy_and_rss(void **state)
{
    char model[1024], text[1024];
    TU_SHARED_PATH(model, "testdata/stories260K/models/stories260K.F32.gguf");
    TU_SHARED_PATH(text, "testdata/stories260K/text/stories260K.F32.n64.f32kv.gen.txt");
    char *want = tu_read_file(text, NULL);
    run_result r = run_mica((const char *[]){"run", "-m", model, "-p", "Once upon a time", "-n",
                                             "64", "--temp", "0", "-t", "2", NULL});
    if (r.status) fail_msg("run: exit %d: %s", r.status, r.err);
    assert_string_equal(r.out, want);
    printf("mica run stories260K.F32 -n 64: peak RSS %.1f MB\n", (double)r.maxrss_kb / 1024.0);
#if defined(__SANITIZE_ADDRESS__)
    printf("SKIP: peak RSS bound not checked under AddressSanitizer\n");
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    printf("SKIP: peak RSS bound not checked under AddressSanitizer\n");
#else
    assert_true(r.maxrss_kb < 16 * 1024);
#endif
#else
    assert_true(r.maxrss_kb < 16 * 1024);
#endif
    run_free(&r);
    free(want);
}

/* `run --stats`: a row per layer and expert after the text; each evaluated token (the prompt
 * and every generated token but the last) is routed to expert_used_count (2) experts. */
static void test_run_stats(void **state)
{
    char model[1024];
    TU_SHARED_PATH(model, "testdata/llamacpp/models/qwen3moe.F32.gguf");
    run_result r = run_mica((const char *[]){"run", "-m", model, "-p", "the cat sat", "-n", "8",
                                             "--temp", "0", "--stats", NULL});
    if (r.status) fail_msg("run --stats: exit %d: %s", r.status, r.err);
    int n_prompt = -1, n_gen = -1;
    const char *summary = strstr(r.err, "mica: ");
    assert_non_null(summary);
    assert_int_equal(sscanf(summary, "mica: %d prompt tokens, %d generated", &n_prompt, &n_gen), 2);
    assert_int_equal(n_gen, 8);
    const char *table = strstr(r.err, "routing statistics: 2 layers, 8 experts, top-2\n");
    assert_non_null(table);
    unsigned long long per_layer[2] = {0, 0};
    int rows = 0;
    for (const char *line = strchr(table, '\n'); line; line = strchr(line + 1, '\n')) {
        int layer, expert;
        unsigned long long n;
        if (sscanf(line + 1, "%d %d %llu", &layer, &expert, &n) != 3) continue;
        assert_true(layer >= 0 && layer < 2 && expert == rows % 8);
        per_layer[layer] += n;
        rows++;
    }
    assert_int_equal(rows, 16);
    for (int l = 0; l < 2; l++) assert_int_equal(per_layer[l], (n_prompt + n_gen - 1) * 2);
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),         cmocka_unit_test(test_tiny_model_runs),
        cmocka_unit_test(test_bad_input),    cmocka_unit_test(test_logits_matches_llamacpp),
        cmocka_unit_test(test_tokenize_ids), cmocka_unit_test(test_run_stories_greedy_and_rss),
        cmocka_unit_test(test_run_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
