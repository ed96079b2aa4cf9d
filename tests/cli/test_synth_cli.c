/*
 * test_synth_cli.c - `mica synth` as a user runs it (build/mica in a child process): small
 * --dims models of each architecture (llama dense, llama MoE, qwen2) in every type load and
 * generate with `mica run`; the summary's parameter count is the closed-form count of the
 * shape; the presets' counts (--dry-run, nothing written) are llamacpp-bench.md's 358.36 M
 * and 147.37 M; llama-quantize's mix unless --pure; the same seed gives the same bytes; bad
 * input (unknown architecture, preset or type, bad --dims, an unwritable output, a full
 * disk) gives one line `mica: ...`, exit 1 and no output file (nor its temporary files).
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include "gguf/gguf.h"

#include <unistd.h>

#define DIMS_DENSE "n_embd=256,n_layer=2,n_head=4,n_head_kv=2,n_ff=256,n_vocab=320"
#define DIMS_MOE   DIMS_DENSE ",n_expert=4,n_expert_used=2"

static void tmp_path(char *buf, size_t cap, const char *name)
{
    run_tmp_path(buf, cap, "scli", name);
}

static void expect_ok(const run_result *r, const char *what)
{
    if (r->status != 0) fail_msg("%s: exit %d, stderr: %s", what, r->status, r->err);
}

/* Neither path nor any of the files written on the way to it exist. */
static void expect_no_files(const char *path)
{
    const char *suffixes[] = {"", ".tmp", ".f16.tmp", ".f16.tmp.tmp"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        if (tu_exists(p)) fail_msg("%s was left behind", p);
    }
}

/* One line "mica: ...<needle>..." on stderr, exit 1, nothing on stdout, no files. */
static void expect_error_limited(const char *const *args, const char *needle, const char *out,
                                 long fsize_limit)
{
    run_result r = run_mica_limited(args, fsize_limit);
    if (r.status != 1 || strncmp(r.err, "mica: ", 6) || !strstr(r.err, needle) ||
        strchr(r.err, '\n') != r.err + strlen(r.err) - 1 || r.out_len != 0)
        fail_msg("expected exit 1 and one line 'mica: ...%s...', got exit %d, stderr '%s', %zu "
                 "bytes of stdout",
                 needle, r.status, r.err, r.out_len);
    if (out) expect_no_files(out);
    run_free(&r);
}

static void expect_error(const char *const *args, const char *needle, const char *out)
{
    expect_error_limited(args, needle, out, 0);
}

/* Parameters of a shape by formula: embedding, output unless tied, per layer q, k, v, o,
 * biases, two norms, and the dense FFN or the router and the experts. */
static long long formula_params(long long vocab, long long e, long long layers, long long heads,
                                long long heads_kv, long long ff, long long experts, bool tied,
                                bool bias)
{
    const long long kv = heads_kv * (e / heads);
    long long layer = 2 * e * e + 2 * e * kv + 2 * e + (bias ? e + 2 * kv : 0);
    layer += experts ? e * experts + experts * 3 * e * ff : 3 * e * ff;
    return vocab * e * (tied ? 1 : 2) + e + layers * layer;
}

static void test_help(void **state)
{
    run_result r = run_mica((const char *[]){"--help", NULL});
    expect_ok(&r, "mica --help");
    assert_non_null(strstr(r.out, "synth"));
    run_free(&r);
    r = run_mica((const char *[]){"synth", "--help", NULL});
    expect_ok(&r, "synth --help");
    const char *want[] = {"usage: mica synth",
                          "qwen2-0.5b, moe-8x",
                          "n_embd=",
                          "n_expert_used",
                          "q8_0",
                          "fp8_e4m3",
                          "q4_k",
                          "--pure"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(r.out, want[i])) fail_msg("--help lacks '%s':\n%s", want[i], r.out);
    run_free(&r);
}

/* --dry-run prints the count and writes nothing; the figures are llamacpp-bench.md's. */
static void test_preset_counts(void **state)
{
    char out[512];
    tmp_path(out, sizeof out, "preset.gguf");
    const struct {
        const char *preset, *md;
        long long params;
    } presets[] = {
        {"qwen2-0.5b", "(358.36 M)", formula_params(512, 896, 24, 14, 2, 4864, 0, true, true)},
        {"moe-8x", "(147.37 M)", formula_params(512, 512, 8, 8, 8, 1408, 8, false, false)},
    };
    for (size_t i = 0; i < 2; i++) {
        run_result r = run_mica((const char *[]){"synth", "--preset", presets[i].preset, "--type",
                                                 "q8_0", "--dry-run", "-o", out, NULL});
        expect_ok(&r, presets[i].preset);
        char want[64];
        snprintf(want, sizeof want, "params %lld %s", presets[i].params, presets[i].md);
        if (!strstr(r.out, want)) fail_msg("expected '%s' in:\n%s", want, r.out);
        expect_no_files(out);
        run_free(&r);
    }
    /* The preset's shape, its architecture's defaults, and --dims on top of it. */
    run_result r = run_mica((const char *[]){"synth", "--preset", "qwen2-0.5b", "--dims",
                                             "n_layer=2", "--type", "q8_0", "--dry-run", NULL});
    expect_ok(&r, "preset + dims");
    assert_non_null(strstr(r.out, "qwen2 n_vocab=512 n_ctx=4096 n_embd=896 n_layer=2 n_head=14 "
                                  "n_head_kv=2 n_ff=4864"));
    assert_non_null(strstr(r.out, "tied=1 qkv_bias=1 rope_base=1e+06 norm_eps=1e-06"));
    run_free(&r);
}

typedef struct arch_case {
    const char *name, *arch, *dims;
    long long params;
} arch_case;

/* Synthesizes, checks the summary, then generates a few tokens with `mica run`. */
static void synth_and_run(const arch_case *c, const char *type)
{
    char out[512], what[128];
    tmp_path(out, sizeof out, "model.gguf");
    snprintf(what, sizeof what, "%s %s", c->name, type);
    run_result r =
        run_mica((const char *[]){"synth", "--arch", c->arch, "--dims", c->dims, "--type", type,
                                  "-s", "3", "-o", out, "-t", "2", NULL});
    expect_ok(&r, what);
    char want[1024];
    snprintf(want, sizeof want, "mica: wrote %s: %s", out, c->arch);
    if (strncmp(r.err, want, strlen(want))) fail_msg("%s: summary '%s'", what, r.err);
    snprintf(want, sizeof want, "%lld params", c->params);
    if (!strstr(r.err, want)) fail_msg("%s: expected '%s' in '%s'", what, want, r.err);
    assert_int_equal(r.out_len, 0);
    run_free(&r);
    r = run_mica((const char *[]){"run", "-m", out, "-p", "hello", "-n", "4", "--temp", "0", "-t",
                                  "2", NULL});
    expect_ok(&r, what);
    run_free(&r);
    unlink(out);
}

static void test_archs_and_types(void **state)
{
    const arch_case cases[] = {
        {"dense", "llama", DIMS_DENSE, formula_params(320, 256, 2, 4, 2, 256, 0, false, false)},
        {"moe", "llama", DIMS_MOE, formula_params(320, 256, 2, 4, 2, 256, 4, false, false)},
        {"qwen2", "qwen2", DIMS_DENSE, formula_params(320, 256, 2, 4, 2, 256, 0, true, true)},
    };
    const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k", "fp8_e4m3"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
            synth_and_run(&cases[c], types[t]);
}

/* Type of tensor `name` in the file at path. */
static uint32_t tensor_type(const char *path, const char *name)
{
    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) fail_msg("%s: no tensor %s", path, name);
    const uint32_t type = t->type;
    gguf_close(f);
    return type;
}

/* llama-quantize's Q4_0 mix raises the output matrix (to Q6_K when its rows fit, as
 * llamacpp-bench.md says of the MoE); --pure leaves every matrix Q4_0. */
static void test_mix_and_pure(void **state)
{
    char out[512];
    tmp_path(out, sizeof out, "mix.gguf");
    run_result r = run_mica(
        (const char *[]){"synth", "--dims", DIMS_DENSE, "--type", "q4_0", "-o", out, NULL});
    expect_ok(&r, "mix");
    assert_non_null(strstr(r.err, "1 Q6_K"));
    assert_non_null(strstr(r.err, "llama-quantize's mix"));
    run_free(&r);
    assert_int_equal(tensor_type(out, "output.weight"), GGUF_T_Q6_K);
    assert_int_equal(tensor_type(out, "blk.0.ffn_up.weight"), GGUF_T_Q4_0);
    r = run_mica((const char *[]){"synth", "--dims", DIMS_DENSE, "--type", "q4_0", "--pure", "-o",
                                  out, NULL});
    expect_ok(&r, "pure");
    assert_null(strstr(r.err, "Q6_K"));
    run_free(&r);
    assert_int_equal(tensor_type(out, "output.weight"), GGUF_T_Q4_0);
    unlink(out);
}

static void test_seed(void **state)
{
    char a[512], b[512];
    tmp_path(a, sizeof a, "seed_a.gguf");
    tmp_path(b, sizeof b, "seed_b.gguf");
    const char *seeds[] = {"5", "5", "6"};
    size_t na = 0, nb;
    char *da = NULL;
    for (int i = 0; i < 3; i++) {
        run_result r =
            run_mica((const char *[]){"synth", "--arch", "qwen2", "--dims", "n_layer=1", "--type",
                                      "q8_0", "--seed", seeds[i], "-o", i ? b : a, NULL});
        expect_ok(&r, "seed");
        run_free(&r);
        if (i == 0) {
            da = tu_read_file(a, &na);
            continue;
        }
        char *db = tu_read_file(b, &nb);
        assert_int_equal(na, nb);
        if ((memcmp(da, db, na) == 0) != (i == 1))
            fail_msg("seed %s vs 5: the bytes should %s", seeds[i], i == 1 ? "agree" : "differ");
        free(db);
    }
    free(da);
    unlink(a);
    unlink(b);
}

static void test_bad_input(void **state)
{
    char out[512];
    tmp_path(out, sizeof out, "bad.gguf");
#define SYNTH(...) ((const char *[]){"synth", __VA_ARGS__, NULL})
    expect_error(SYNTH("--arch", "gpt2", "--dims", "n_layer=1", "--type", "q8_0", "-o", out),
                 "unknown architecture 'gpt2' (architectures: llama, qwen2)", out);
    expect_error(SYNTH("--preset", "qwen2-7b", "--type", "q8_0", "-o", out),
                 "unknown preset 'qwen2-7b' (presets: qwen2-0.5b, moe-8x)", out);
    expect_error(SYNTH("--preset", "moe-8x", "--arch", "qwen2", "--type", "q8_0", "-o", out),
                 "moe-8x is a llama model", out);
    expect_error(SYNTH("--dims", "n_layer=1", "--type", "q5_9", "-o", out), "unknown type 'q5_9'",
                 out);
    expect_error(SYNTH("--dims", "n_layers=1", "--type", "q8_0", "-o", out),
                 "'n_layers=1' is not KEY=N", out);
    expect_error(SYNTH("--dims", "n_layer=x", "--type", "q8_0", "-o", out), "'n_layer=x'", out);
    expect_error(SYNTH("--dims", "n_layer=-1", "--type", "q8_0", "-o", out), "'n_layer=-1'", out);
    expect_error(SYNTH("--dims", "n_layer", "--type", "q8_0", "-o", out), "'n_layer'", out);
    expect_error(SYNTH("--dims", "", "--type", "q8_0", "-o", out), "empty", out);
    expect_error(SYNTH("--dims", "n_head=3", "--type", "q8_0", "-o", out), "n_head 3", out);
    expect_error(SYNTH("--dims", "n_layer=0", "--type", "q8_0", "-o", out), "n_layer 0", out);
    expect_error(SYNTH("--dims", "n_expert=4", "--type", "q8_0", "-o", out), "n_expert_used 0",
                 out);
    expect_error(SYNTH("--arch", "qwen2", "--dims", "n_expert=4,n_expert_used=2", "--type", "q8_0",
                       "-o", out),
                 "qwen2 has no experts", out);
    expect_error(SYNTH("--dims", "n_embd=48,n_ff=64", "--type", "q8_0", "--pure", "-o", out),
                 "block size", out);
    expect_error(SYNTH("--dims", "n_layer=1", "-o", out), "--type is required", out);
    expect_error(SYNTH("--type", "q8_0", "-o", out), "--preset or --dims", out);
    expect_error(SYNTH("--dims", "n_layer=1", "--type", "q8_0"), "-o FILE is required", NULL);
    expect_error(SYNTH("--dims", "n_layer=1", "--type", "q8_0", "--bogus", "-o", out),
                 "unknown option '--bogus'", out);
    expect_error(SYNTH("--dims", "n_layer=1", "--type", "q8_0", "-o", "/nonexistent/dir/x.gguf"),
                 "/nonexistent/dir/x.gguf", "/nonexistent/dir/x.gguf");
    /* A full disk, with and without the F16 step of the mix. */
    expect_error_limited(SYNTH("--dims", DIMS_DENSE, "--type", "q8_0", "-o", out), out, out,
                         100000);
    expect_error_limited(SYNTH("--dims", DIMS_DENSE, "--type", "f32", "-o", out), out, out, 100000);
#undef SYNTH
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_preset_counts),
        cmocka_unit_test(test_archs_and_types),
        cmocka_unit_test(test_mix_and_pure),
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
