/*
 * test_quantize_cli.c - `mica quantize` and `mica perplexity` as a user runs them (build/mica
 * in a child process): quantizing each llama.cpp test model F32 -> Q8_0 / Q4_0 gives the
 * file llama-quantize wrote, byte for byte, whose logits (`mica logits`) match llama.cpp's
 * Q8_0/Q4_0 references within the README's tolerance, with Q8_0 tensor data at most 0.27x
 * the F32 data; stories260K falls back to F16 for its 172-wide rows and says so; --keep-f16
 * and --budget-mb/--calib; perplexity and --kl-base (0 against itself, > 0 for Q4_0); and
 * every bad input (unknown type, quantized input, output = input, full disk, ...) gives one
 * line `mica: ...`, exit 1, no stdout and no output file (nor OUT.tmp).
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include "gguf/gguf.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void tmp_path(char *buf, size_t cap, const char *name)
{
    run_tmp_path(buf, cap, "qcli", name);
}

static void expect_ok(const run_result *r, const char *what)
{
    if (r->status != 0) fail_msg("%s: exit %d, stderr: %s", what, r->status, r->err);
}

/* One line "mica: <prefix>...<needle>..." on stderr, exit 1, nothing on stdout, and neither
 * OUT nor OUT.tmp exists afterwards (when out is given). */
static void expect_error_limited(const char *const *args, const char *prefix, const char *needle,
                                 const char *out, long fsize_limit)
{
    run_expect_error(run_mica_limited(args, fsize_limit), prefix, needle);
    if (out) {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s.tmp", out);
        if (tu_exists(out) || tu_exists(tmp)) fail_msg("%s or its .tmp was left behind", out);
    }
}

static void expect_error(const char *const *args, const char *prefix, const char *needle,
                         const char *out)
{
    expect_error_limited(args, prefix, needle, out, 0);
}

static long file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) fail_msg("%s: missing", path);
    return (long)st.st_size;
}

/* Bytes of tensor data (the file without its header, metadata and padding before data). */
static uint64_t data_bytes(const char *path)
{
    gguf_file *f = NULL;
    mica_err err;
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    const uint64_t n = f->size - f->data_offset;
    gguf_close(f);
    return n;
}

static void expect_same_bytes(const char *got, const char *want)
{
    size_t a, b;
    char *x = tu_read_file(got, &a), *y = tu_read_file(want, &b);
    if (a != b) fail_msg("%s has %zu bytes, %s %zu", got, a, want, b);
    for (size_t i = 0; i < a; i++)
        if (x[i] != y[i]) fail_msg("%s differs from %s at byte %zu", got, want, i);
    free(x);
    free(y);
}

static void test_help(void **state)
{
    const char *cmds[] = {"quantize", "perplexity"};
    run_result r = run_mica((const char *[]){"--help", NULL});
    expect_ok(&r, "mica --help");
    for (int i = 0; i < 2; i++) assert_non_null(strstr(r.out, cmds[i]));
    run_free(&r);
    for (int i = 0; i < 2; i++) {
        r = run_mica((const char *[]){cmds[i], "--help", NULL});
        expect_ok(&r, cmds[i]);
        assert_non_null(strstr(r.out, "usage: mica"));
        run_free(&r);
    }
    r = run_mica((const char *[]){"quantize", "--help", NULL});
    assert_non_null(strstr(r.out, "q8_0"));
    assert_non_null(strstr(r.out, "--keep-f16"));
    run_free(&r);
}

/* ---- llama.cpp's test models ---------------------------------------------------------- */

static const char *const models[] = {"llama-dense", "llama-moe", "qwen2-dense", "qwen2moe",
                                     "qwen3-dense", "qwen3moe",  "olmoe",       "granitemoe"};

#define PROMPT "1,300,301,302,259,261,400,450,511,3,13,100,258,262,350,499"

/* `mica logits` of a model on the reference prompt against a reference .bin. */
static double compare_logits(const char *model, const char *ref, const char *tokens, double atol)
{
    char out[512];
    tmp_path(out, sizeof out, "logits.bin");
    run_result r = run_mica(
        (const char *[]){"logits", "-m", model, "--tokens", tokens, "-o", out, "-t", "2", NULL});
    expect_ok(&r, model);
    run_free(&r);
    size_t got_len, want_len;
    float *got = (float *)tu_read_file(out, &got_len);
    float *want = (float *)tu_read_file(ref, &want_len);
    assert_int_equal(got_len, want_len);
    const double d = tu_check_close(model, got, want, got_len / sizeof(float), atol);
    free(got);
    free(want);
    unlink(out);
    return d;
}

static double mean_abs_diff(const char *a_path, const char *b_path)
{
    size_t na, nb;
    float *a = (float *)tu_read_file(a_path, &na), *b = (float *)tu_read_file(b_path, &nb);
    assert_int_equal(na, nb);
    double s = 0;
    for (size_t i = 0; i < na / sizeof(float); i++) s += fabs((double)a[i] - (double)b[i]);
    free(a);
    free(b);
    return s / (double)(na / sizeof(float));
}

static void test_llamacpp_models(void **state)
{
    const char *types[] = {"Q8_0", "Q4_0"};
    for (size_t m = 0; m < 8; m++) {
        char f32[1024], rel[256], out[512];
        snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.F32.gguf", models[m]);
        TU_SHARED_PATH(f32, rel);
        for (int t = 0; t < 2; t++) {
            char ref_model[1024], ref_logits[1024];
            snprintf(rel, sizeof rel, "testdata/llamacpp/models/%s.%s.gguf", models[m], types[t]);
            TU_SHARED_PATH(ref_model, rel);
            snprintf(rel, sizeof rel, "testdata/llamacpp/logits/%s.%s.f32kv.bin", models[m],
                     types[t]);
            TU_SHARED_PATH(ref_logits, rel);
            tmp_path(out, sizeof out, "model.gguf");
            run_result r =
                run_mica((const char *[]){"quantize", f32, out, types[t], "-t", "2", NULL});
            expect_ok(&r, out);
            assert_non_null(strstr(r.err, "mica: wrote "));
            run_free(&r);
            /* llama-quantize's file, byte for byte: same metadata order, tensor order,
             * types, dimensions, and quantized bytes. */
            expect_same_bytes(out, ref_model);
            /* README section 5: with activation quantization emulated, 1e-5. */
            const double d = compare_logits(out, ref_logits, PROMPT, 1e-5);
            printf("%s %s: identical to llama-quantize's file; logits max |diff| %.2g\n", models[m],
                   types[t], d);
            if (t == 0) {
                const double ratio = (double)data_bytes(out) / (double)data_bytes(f32);
                printf("%s Q8_0 tensor data / F32 tensor data = %.4f (files: %.4f)\n", models[m],
                       ratio, (double)file_size(out) / (double)file_size(f32));
                assert_true(ratio <= 0.27);
            }
            unlink(out);
        }
    }
}

/* stories260K: ffn_down rows of 172 are no multiple of 32; llama-quantize has no fallback
 * for Q8_0/Q4_0 and stops, mica uses F16 (llama.cpp's last resort, which the reference
 * files were made with) and says so once per tensor. */
static void test_stories_fallback(void **state)
{
    const char *types[] = {"Q8_0", "Q4_0"};
    char f32[1024], out[512];
    TU_SHARED_PATH(f32, "testdata/stories260K/models/stories260K.F32.gguf");
    for (int t = 0; t < 2; t++) {
        char rel[256], ref_model[1024], ref_logits[1024];
        snprintf(rel, sizeof rel, "testdata/stories260K/models/stories260K.%s.gguf", types[t]);
        TU_SHARED_PATH(ref_model, rel);
        snprintf(rel, sizeof rel, "testdata/stories260K/logits/stories260K.%s.f32kv.bin", types[t]);
        TU_SHARED_PATH(ref_logits, rel);
        tmp_path(out, sizeof out, "stories.gguf");
        run_result r = run_mica((const char *[]){"quantize", f32, out, types[t], NULL});
        expect_ok(&r, out);
        int n = 0;
        for (const char *p = r.err; (p = strstr(p, "rows of 172 are not a multiple of")); p++) n++;
        assert_int_equal(n, 5);
        assert_non_null(strstr(r.err, "blk.4.ffn_down.weight"));
        assert_non_null(strstr(r.err, "falling back to F16"));
        run_free(&r);
        expect_same_bytes(out, ref_model);
        compare_logits(out, ref_logits, "1,403,407,261,378", 1e-5);
        unlink(out);
    }
}

static void test_keep_f16(void **state)
{
    char f32[1024], out[512];
    TU_SHARED_PATH(f32, "testdata/llamacpp/models/llama-dense.F32.gguf");
    tmp_path(out, sizeof out, "keep.gguf");
    run_result r = run_mica((const char *[]){"quantize", f32, out, "q4_0", "--keep-f16",
                                             "output.weight,blk.0.*,*.attn_v.weight", "-v", NULL});
    expect_ok(&r, out);
    assert_non_null(strstr(r.out, "keep-f16")); /* the -v table */
    run_free(&r);
    gguf_file *f = NULL;
    mica_err err;
    if (gguf_open(&f, out, &err)) fail_msg("%s", err.msg);
    const struct {
        const char *name;
        uint32_t type;
    } want[] = {
        {"output.weight", GGUF_T_F16},          {"token_embd.weight", GGUF_T_Q4_0},
        {"blk.0.attn_q.weight", GGUF_T_F16},    {"blk.0.ffn_down.weight", GGUF_T_F16},
        {"blk.0.attn_norm.weight", GGUF_T_F32}, {"blk.1.attn_v.weight", GGUF_T_F16},
        {"blk.1.attn_q.weight", GGUF_T_Q4_0},   {"blk.1.ffn_up.weight", GGUF_T_Q4_0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const gguf_tensor *t = gguf_find_tensor(f, want[i].name);
        assert_non_null(t);
        if (t->type != want[i].type)
            fail_msg("%s: %s, want %s", want[i].name, gguf_ttype_name(t->type),
                     gguf_ttype_name(want[i].type));
    }
    gguf_close(f);
    /* The file runs, and keeping those tensors in F16 brings its logits closer to the F32
     * model's than llama.cpp's all-Q4_0 file's are. */
    char ref32[1024], ref4[1024], got[512];
    TU_SHARED_PATH(ref32, "testdata/llamacpp/logits/llama-dense.F32.f32kv.bin");
    TU_SHARED_PATH(ref4, "testdata/llamacpp/logits/llama-dense.Q4_0.f32kv.bin");
    tmp_path(got, sizeof got, "keep_logits.bin");
    r = run_mica((const char *[]){"logits", "-m", out, "--tokens", PROMPT, "-o", got, NULL});
    expect_ok(&r, "logits of the --keep-f16 file");
    run_free(&r);
    const double e_keep = mean_abs_diff(got, ref32), e_q4 = mean_abs_diff(ref4, ref32);
    printf("mean |logit - F32 logit|: --keep-f16 file %.3g, all-Q4_0 file %.3g\n", e_keep, e_q4);
    assert_true(e_keep < e_q4);
    unlink(got);
    unlink(out);
}

static void test_budget(void **state)
{
    char f32[1024], text[1024], out[512], calib[512];
    TU_SHARED_PATH(f32, "testdata/stories260K/models/stories260K.F32.gguf");
    TU_SHARED_PATH(text, "datasets/tinyshakespeare/input.txt");
    size_t len;
    char *s = tu_read_file(text, &len);
    tmp_path(calib, sizeof calib, "calib.txt");
    FILE *fp = fopen(calib, "w");
    fwrite(s, 1, 600, fp);
    fclose(fp);
    free(s);
    tmp_path(out, sizeof out, "budget.gguf");
    /* stories260K.Q4_0.gguf is 277024 bytes; 0.29 MiB = 304087 leaves room for some F16. */
    run_result r = run_mica((const char *[]){"quantize", f32, out, "q4_0", "--budget-mb", "0.29",
                                             "--calib", calib, "-c", "128", NULL});
    expect_ok(&r, out);
    assert_non_null(strstr(r.out, "sensitivity: mean KL divergence"));
    int kept = 0;
    for (const char *p = r.out; (p = strstr(p, " budget\n")); p++) kept++;
    assert_true(kept > 0);
    run_free(&r);
    assert_true(file_size(out) <= (long)(0.29 * 1048576));
    assert_true(file_size(out) > 277024);
    unlink(out);
    /* A budget below the plain Q4_0 file is an error naming the input. */
    expect_error((const char *[]){"quantize", f32, out, "q4_0", "--budget-mb", "0.2", "--calib",
                                  calib, NULL},
                 f32, "less than", out);
    unlink(calib);
}

/* ---- perplexity ---------------------------------------------------------------------- */

static double field(const char *out, const char *key)
{
    const char *p = strstr(out, key);
    if (!p) fail_msg("'%s' not in output: %s", key, out);
    return strtod(p + strlen(key), NULL);
}

static void test_perplexity(void **state)
{
    char f32[1024], q4[1024], shakespeare[1024], text[512], out[512];
    TU_SHARED_PATH(f32, "testdata/llamacpp/models/llama-dense.F32.gguf");
    TU_SHARED_PATH(shakespeare, "datasets/tinyshakespeare/input.txt");
    TU_SHARED_PATH(q4, "testdata/llamacpp/models/llama-dense.Q4_0.gguf");
    size_t len;
    char *s = tu_read_file(shakespeare, &len);
    tmp_path(text, sizeof text, "text.txt");
    FILE *tf = fopen(text, "w");
    fwrite(s, 1, 4000, tf); /* about 2000 tokens of this vocabulary */
    fclose(tf);
    free(s);
    tmp_path(out, sizeof out, "ppl.gguf");
    run_result r = run_mica((const char *[]){"quantize", f32, out, "q4_0", NULL});
    expect_ok(&r, out);
    run_free(&r);

    /* Against itself: KL exactly 0 and the same perplexity. */
    r = run_mica((const char *[]){"perplexity", "-m", f32, "-f", text, "--kl-base", f32, "-c",
                                  "128", "--chunks", "4", NULL});
    expect_ok(&r, "perplexity F32 vs F32");
    const double ppl32 = field(r.out, "perplexity: ");
    assert_true(ppl32 > 1 && ppl32 < 2 * 512); /* random weights: about the vocabulary size */
    assert_non_null(strstr(r.out, "kl-divergence: mean 0.000000 +/- 0.000000, max 0.000000"));
    assert_true(field(r.out, "base perplexity: ") == ppl32);
    assert_non_null(strstr(r.out, "top-1 agreement: 100.00%"));
    assert_non_null(strstr(r.err, "4 chunks of 128 tokens, 252 scored"));
    run_free(&r);

    /* Our Q4_0 against the F32 base: KL > 0; the perplexity is the model's own. */
    r = run_mica((const char *[]){"perplexity", "-m", out, "-f", text, "--kl-base", f32, "-c",
                                  "128", "--chunks", "4", NULL});
    expect_ok(&r, "perplexity Q4_0 vs F32");
    const double kl = field(r.out, "kl-divergence: mean ");
    assert_true(kl > 0);
    assert_true(field(r.out, "base perplexity: ") == ppl32);
    const double ppl4 = field(r.out, "perplexity: ");
    run_free(&r);
    /* llama-quantize's Q4_0 file gives the same numbers (it is the same file). */
    r = run_mica(
        (const char *[]){"perplexity", "-m", q4, "-f", text, "-c", "128", "--chunks", "4", NULL});
    expect_ok(&r, "perplexity llama.cpp Q4_0");
    assert_true(field(r.out, "perplexity: ") == ppl4);
    run_free(&r);
    unlink(out);

    /* Errors: a text shorter than one chunk names the text; a missing base names it. */
    char small[512];
    tmp_path(small, sizeof small, "small.txt");
    FILE *fp = fopen(small, "w");
    fputs("to be or not to be", fp);
    fclose(fp);
    expect_error((const char *[]){"perplexity", "-m", f32, "-f", small, "-c", "128", NULL}, small,
                 "fewer than one chunk of 128", NULL);
    expect_error((const char *[]){"perplexity", "-m", f32, "-f", small, "--kl-base",
                                  "/nonexistent.gguf", NULL},
                 "/nonexistent.gguf", "No such file", NULL);
    expect_error((const char *[]){"perplexity", "-m", f32, NULL}, "perplexity", "-f TEXT", NULL);
    unlink(small);
    unlink(text);
}

/* ---- bad input ----------------------------------------------------------------------- */

static void test_bad_input(void **state)
{
    char f32[1024], q8[1024], in[512], out[512], calib[512];
    TU_SHARED_PATH(f32, "testdata/llamacpp/models/llama-dense.F32.gguf");
    TU_SHARED_PATH(q8, "testdata/llamacpp/models/llama-dense.Q8_0.gguf");
    tmp_path(out, sizeof out, "bad.gguf");
    tmp_path(calib, sizeof calib, "bad_calib.txt");
    FILE *fp = fopen(calib, "w");
    fputs("some calibration text, long enough to be a chunk or two of tokens", fp);
    fclose(fp);

    expect_error((const char *[]){"quantize", f32, out, "q3_k", NULL}, "quantize",
                 "unknown type 'q3_k' (types: ", out);
    expect_error((const char *[]){"quantize", q8, out, "q4_0", NULL}, q8,
                 "is already quantized (Q8_0)", out);
    expect_error((const char *[]){"quantize", "/nonexistent/in.gguf", out, "q8_0", NULL},
                 "/nonexistent/in.gguf", "No such file", out);
    expect_error((const char *[]){"quantize", f32, out, NULL}, "quantize", "TYPE are required",
                 out);
    expect_error((const char *[]){"quantize", f32, out, "q4_0", "--keep-f16", "nothing.*", NULL},
                 f32, "'nothing.*' matches no quantizable tensor", out);
    expect_error((const char *[]){"quantize", f32, out, "q4_0", "--budget-mb", "1", NULL},
                 "quantize", "needs a calibration text", out);
    expect_error(
        (const char *[]){"quantize", f32, out, "f16", "--budget-mb", "1", "--calib", calib, NULL},
        "quantize", "not a quantized type", out);
    expect_error((const char *[]){"quantize", f32, out, "q4_0", "--frobnicate", NULL}, "quantize",
                 "unknown option", out);

    /* The output path is the input file (same name, or another name for it): refused, and
     * the input is untouched. */
    tmp_path(in, sizeof in, "in.gguf");
    char link_path[512];
    tmp_path(link_path, sizeof link_path, "link.gguf");
    size_t n;
    char *bytes = tu_read_file(f32, &n);
    fp = fopen(in, "wb");
    fwrite(bytes, 1, n, fp);
    fclose(fp);
    free(bytes);
    assert_int_equal(symlink(in, link_path), 0);
    expect_error((const char *[]){"quantize", in, in, "q8_0", NULL}, in,
                 "the output file is the input file", NULL);
    expect_error((const char *[]){"quantize", in, link_path, "q8_0", NULL}, link_path,
                 "the output file is the input file", NULL);
    expect_same_bytes(in, f32);
    unlink(link_path);
    unlink(in);

    /* A full disk: writing stops at 64 KiB; the error names the file, and neither the
     * output nor its temporary file is left. */
    expect_error_limited((const char *[]){"quantize", f32, out, "q8_0", NULL}, out, "write failed",
                         out, 64 * 1024);
    unlink(calib);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_llamacpp_models),
        cmocka_unit_test(test_stories_fallback),
        cmocka_unit_test(test_keep_f16),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_perplexity),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
