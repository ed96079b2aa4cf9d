/*
 * test_bench_cli.c - `mica bench` as a user runs it (build/mica in a child process) on a tiny
 * `mica synth` model: every --json line is one JSON object (checked by a small validating
 * parser here) with the documented fields; the model's facts agree with the file (parameters
 * and tensor bytes summed from its tensor table, the type it was made in); -p, -n, -r and -t
 * show up as the tests run, the rounds and the threads; the mean and sd are those of the
 * rounds' samples; the default table has llama-bench's columns; bad input gives one line
 * `mica: ...` and exit 1. Also speed_model_info_read's bytes per decoded token (the
 * bandwidth bound of bench_shapes) against a closed-form count.
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include "engine/speed.h"
#include "gguf/gguf.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

static char model_path[512];

static int setup(void **state)
{
    run_tmp_path(model_path, sizeof model_path, "bcli", "model.gguf");
    run_result r = run_mica((const char *[]){"synth", "--arch", "qwen2", "--dims",
                                             "n_embd=64,n_layer=2,n_head=4,n_head_kv=2,n_ff=128",
                                             "--type", "q8_0", "-o", model_path, NULL});
    if (r.status) fail_msg("synth: %s", r.err);
    run_free(&r);
    return 0;
}

static int teardown(void **state)
{
    unlink(model_path);
    return 0;
}

/* ---- a small JSON reader: validates a value and finds an object's members ------------ */

static const char *js_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

static const char *js_value(const char *p);

static const char *js_string(const char *p)
{
    if (*p++ != '"') return NULL;
    for (; *p != '"'; p++) {
        if (!*p || (unsigned char)*p < 0x20) return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!isxdigit((unsigned char)p[i])) return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || !*p) {
                return NULL;
            }
        }
    }
    return p + 1;
}

/* JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *js_number(const char *p)
{
    if (*p == '-') p++;
    if (*p == '0')
        p++;
    else if (isdigit((unsigned char)*p))
        while (isdigit((unsigned char)*p)) p++;
    else
        return NULL;
    if (*p == '.') {
        if (!isdigit((unsigned char)*++p)) return NULL;
        while (isdigit((unsigned char)*p)) p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!isdigit((unsigned char)*p)) return NULL;
        while (isdigit((unsigned char)*p)) p++;
    }
    return p;
}

/* Members (or elements) separated by commas up to `close`. */
static const char *js_list(const char *p, char close, bool members)
{
    p = js_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
        if (members) {
            if (!(p = js_string(p))) return NULL;
            p = js_ws(p);
            if (*p++ != ':') return NULL;
        }
        if (!(p = js_value(js_ws(p)))) return NULL;
        p = js_ws(p);
        if (*p == close) return p + 1;
        if (*p++ != ',') return NULL;
        p = js_ws(p);
    }
}

static const char *js_value(const char *p)
{
    if (*p == '{') return js_list(p, '}', true);
    if (*p == '[') return js_list(p, ']', false);
    if (*p == '"') return js_string(p);
    for (const char *const *w = (const char *const[]){"true", "false", "null", NULL}; *w; w++)
        if (!strncmp(p, *w, strlen(*w))) return p + strlen(*w);
    return js_number(p);
}

/* The value of top-level member `key` of a valid object (the text right after the colon). */
static const char *js_member(const char *obj, const char *key)
{
    const char *p = js_ws(obj + 1);
    while (*p == '"') {
        const char *k = p + 1, *end = js_string(p);
        const char *v = js_ws(js_ws(end) + 1);
        if ((size_t)(end - 1 - k) == strlen(key) && !strncmp(k, key, strlen(key))) return v;
        p = js_ws(js_value(v));
        if (*p == ',') p = js_ws(p + 1);
    }
    return NULL;
}

static double js_num(const char *obj, const char *key)
{
    const char *v = js_member(obj, key);
    if (!v || !js_number(v)) fail_msg("member '%s' is not a number in %s", key, obj);
    return strtod(v, NULL);
}

static void js_str_is(const char *obj, const char *key, const char *want)
{
    const char *v = js_member(obj, key);
    char quoted[600];
    snprintf(quoted, sizeof quoted, "\"%s\"", want);
    if (!v || strncmp(v, quoted, strlen(quoted)))
        fail_msg("member '%s' is not %s in %s", key, quoted, obj);
}

/* ---- helpers ------------------------------------------------------------------------- */

typedef struct file_facts {
    long long n_params, bytes;
} file_facts;

static file_facts read_facts(const char *path)
{
    gguf_file *f;
    mica_err err;
    if (gguf_open(&f, path, &err)) fail_msg("%s", err.msg);
    file_facts ff = {0};
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        ff.n_params += gguf_tensor_nelements(&f->tensors[i]);
        ff.bytes += (long long)f->tensors[i].nbytes;
    }
    gguf_close(f);
    return ff;
}

/* Splits stdout into lines (in place); returns how many. */
static int split_lines(char *out, char **lines, int max)
{
    int n = 0;
    for (char *s = strtok(out, "\n"); s && n < max; s = strtok(NULL, "\n")) lines[n++] = s;
    return n;
}

/* One JSON line: valid, with the fields, agreeing with the file and the options. */
static void check_line(const char *line, const char *test, int reps, int threads)
{
    const char *end = js_value(line);
    if (line[0] != '{' || !end || *js_ws(end)) fail_msg("not one JSON object: %s", line);
    const file_facts ff = read_facts(model_path);
    js_str_is(line, "model", model_path);
    js_str_is(line, "arch", "qwen2");
    js_str_is(line, "type", "Q8_0");
    js_str_is(line, "test", test);
    assert_int_equal((long long)js_num(line, "n_params"), ff.n_params);
    assert_int_equal((long long)js_num(line, "size_bytes"), ff.bytes);
    assert_int_equal((int)js_num(line, "threads"), threads);
    assert_int_equal((int)js_num(line, "reps"), reps);
    const int n = atoi(test + 2);
    assert_int_equal((int)js_num(line, test[0] == 'p' ? "n_prompt" : "n_gen"), n);
    assert_int_equal((int)js_num(line, test[0] == 'p' ? "n_gen" : "n_prompt"), 0);
    double s[64];
    const int got = tu_json_numbers(line, "samples", s, 64);
    assert_int_equal(got, reps);
    double mean = 0, ss = 0;
    for (int i = 0; i < got; i++) mean += s[i] / got;
    for (int i = 0; i < got; i++) ss += (s[i] - mean) * (s[i] - mean);
    const double sd = got > 1 ? sqrt(ss / (got - 1)) : 0;
    const double tps = js_num(line, "tokens_per_second"), jsd = js_num(line, "sd");
    if (!(tps > 0) || fabs(tps - mean) > 1e-3 * mean + 1e-3 || fabs(jsd - sd) > 1e-3 * mean + 1e-3)
        fail_msg("mean %g / sd %g are not those of the samples (%g / %g): %s", tps, jsd, mean, sd,
                 line);
}

static run_result bench(const char *const *args)
{
    run_result r = run_mica(args);
    if (r.status) fail_msg("bench: exit %d: %s", r.status, r.err);
    return r;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_json_defaults(void **state)
{
    run_result r = bench((const char *[]){"bench", "-m", model_path, "--json", NULL});
    char *lines[8];
    assert_int_equal(split_lines(r.out, lines, 8), 2);
    check_line(lines[0], "pp64", 3, 2);
    check_line(lines[1], "tg32", 3, 2);
    /* The summary line on stderr. */
    assert_non_null(strstr(r.err, "mica: bench "));
    assert_non_null(strstr(r.err, "pp64 "));
    assert_non_null(strstr(r.err, "(2 threads, 3 rounds"));
    run_free(&r);
}

static void test_options_respected(void **state)
{
    run_result r = bench((const char *[]){"bench", "-m", model_path, "--json", "-p", "16", "-n",
                                          "8", "-r", "5", "-t", "1", NULL});
    char *lines[8];
    assert_int_equal(split_lines(r.out, lines, 8), 2);
    check_line(lines[0], "pp16", 5, 1);
    check_line(lines[1], "tg8", 5, 1);
    run_free(&r);
    /* -p 0 / -n 0 leave one test out; one round has sd 0. */
    r = bench((const char *[]){"bench", "-m", model_path, "--json", "-p", "0", "-n", "4", "-r", "1",
                               NULL});
    assert_int_equal(split_lines(r.out, lines, 8), 1);
    check_line(lines[0], "tg4", 1, 2);
    assert_true(js_num(lines[0], "sd") == 0);
    run_free(&r);
    r = bench((const char *[]){"bench", "-m", model_path, "--json", "-n", "0", "-r", "2", NULL});
    assert_int_equal(split_lines(r.out, lines, 8), 1);
    check_line(lines[0], "pp64", 2, 2);
    run_free(&r);
}

static void test_table(void **state)
{
    run_result r =
        bench((const char *[]){"bench", "-m", model_path, "-p", "8", "-n", "4", "-r", "2", NULL});
    char *lines[8];
    assert_int_equal(split_lines(r.out, lines, 8), 4);
    const char *cols[] = {"model", "size", "params", "backend", "threads", "test", "t/s"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (!strstr(lines[0], cols[i])) fail_msg("header lacks '%s': %s", cols[i], lines[0]);
    for (int l = 0; l < 4; l++) {
        int bars = 0;
        for (const char *c = lines[l]; *c; c++) bars += *c == '|';
        if (bars != 8) fail_msg("line %d has %d columns: %s", l, bars - 1, lines[l]);
    }
    assert_non_null(strstr(lines[1], "---: |"));
    assert_non_null(strstr(lines[2], "qwen2 Q8_0"));
    assert_non_null(strstr(lines[2], " pp8 "));
    assert_non_null(strstr(lines[2], " ± "));
    assert_non_null(strstr(lines[3], " tg4 "));
    run_free(&r);
}

/* Q8_0: 34 bytes per block of 32. */
static long long q8_bytes(long long row, long long rows)
{
    return row / 32 * 34 * rows;
}

/* A pure Q8_0 MoE (n_embd 64, n_ff 128, 4 experts of which 2 run, KV width 32): a token reads
 * q, k, v, o, the F32 norms and router, half of each expert stack, one embedding row and the
 * whole output matrix. */
static void test_decode_bytes(void **state)
{
    char path[512];
    run_tmp_path(path, sizeof path, "bcli", "moe.gguf");
    run_result r = run_mica((const char *[]){
        "synth", "--dims",
        "n_embd=64,n_layer=2,n_head=4,n_head_kv=2,n_ff=128,n_expert=4,n_expert_used=2", "--type",
        "q8_0", "--pure", "-o", path, NULL});
    if (r.status) fail_msg("synth: %s", r.err);
    run_free(&r);
    const long long layer = 2 * q8_bytes(64, 64) + 2 * q8_bytes(64, 32) + 2 * 64 * 4 + 64 * 4 * 4 +
                            (2 * q8_bytes(64, 128 * 4) + q8_bytes(128, 64 * 4)) / 2;
    const long long want = 2 * layer + q8_bytes(64, 1) + 64 * 4 + q8_bytes(64, 320);
    speed_model_info info;
    mica_err err;
    if (speed_model_info_read(path, &info, &err)) fail_msg("%s", err.msg);
    assert_int_equal((long long)info.decode_bytes, want);
    assert_string_equal(info.arch, "llama");
    assert_int_equal(info.type, GGUF_T_Q8_0);
    assert_int_equal(info.n_of_type[GGUF_T_F32], 2 * 3 + 1); /* norms, routers, output_norm */
    unlink(path);
}

static void expect_error(const char *const *args, const char *needle)
{
    run_expect_error(run_mica(args), "", needle);
}

static void test_bad_input(void **state)
{
    run_result r = run_mica((const char *[]){"bench", "--help", NULL});
    if (r.status || !strstr(r.out, "usage: mica bench") || !strstr(r.out, "tokens_per_second"))
        fail_msg("bench --help: %s", r.out);
    run_free(&r);
    expect_error((const char *[]){"bench", NULL}, "-m MODEL is required");
    expect_error((const char *[]){"bench", "-m", "/nonexistent/m.gguf", NULL},
                 "/nonexistent/m.gguf");
    expect_error((const char *[]){"bench", "-m", model_path, "-r", "0", NULL}, "-r");
    expect_error((const char *[]){"bench", "-m", model_path, "-p", "-1", NULL}, "-p");
    expect_error((const char *[]){"bench", "-m", model_path, "-t", "x", NULL}, "-t");
    expect_error((const char *[]){"bench", "-m", model_path, "-p", "0", "-n", "0", NULL},
                 "nothing to run");
    expect_error((const char *[]){"bench", "-m", model_path, "--bogus", NULL},
                 "unknown option '--bogus'");
    expect_error((const char *[]){"bench", "-m", NULL}, "missing value");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_defaults), cmocka_unit_test(test_options_respected),
        cmocka_unit_test(test_table),         cmocka_unit_test(test_decode_bytes),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
