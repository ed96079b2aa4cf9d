/*
 * cmd_bench.c - `mica bench -m MODEL`: prompt (ppN) and decode (tgN) tokens per second as
 * llama-bench measures them (speed_run in src/engine/speed.c): per test one warm-up round,
 * then -r timed rounds, reported as mean ± sample standard deviation. Output on stdout: a
 * markdown table like llama-bench's, or with --json one JSON object per line per test;
 * progress on stderr when it is a terminal, and a one-line summary on stderr at the end.
 */
#include "cli.h"
#include "core/core.h"
#include "engine/speed.h"
#include "tensor/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char bench_help[] =
    "usage: mica bench -m MODEL [-p 64] [-n 32] [-t 2] [-r 3] [--json]\n"
    "\n"
    "Tokens per second as llama-bench measures them: ppN evaluates N prompt tokens in one\n"
    "batch from an empty cache; tgN decodes N tokens one at a time from an empty cache. Each\n"
    "test runs once to warm up, then R timed rounds; the figure is the mean ± the sample\n"
    "standard deviation of the rounds' t/s. See docs/bench.md.\n"
    "\n"
    "  -m, --model FILE    GGUF model\n"
    "  -p, --n-prompt N    prompt tokens of the pp test (default 64; 0: no pp test)\n"
    "  -n, --n-gen N       tokens of the tg test (default 32; 0: no tg test)\n"
    "  -t, --threads N     threads (default 2)\n"
    "  -r, --repetitions R timed rounds per test (default 3)\n"
    "      --json          one JSON object per line per test instead of the table: model,\n"
    "                      arch, type (the dominant weight type), n_params, size_bytes,\n"
    "                      backend, simd, threads, test, n_prompt, n_gen, reps,\n"
    "                      tokens_per_second (mean), sd, samples (each round's t/s)\n";

#define BENCH_MAX_TOKENS 65536
#define BENCH_MAX_REPS   1000

typedef struct bench_opts {
    const char *model;
    long n_prompt, n_gen, n_threads, reps;
    bool json;
} bench_opts;

static int bench_parse(int argc, char **argv, bench_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        if (cli_is(&a, "-m", "--model")) {
            if (!(o->model = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-p", "--n-prompt")) {
            if (!cli_int(&a, 0, BENCH_MAX_TOKENS, &o->n_prompt)) return 1;
        } else if (cli_is(&a, "-n", "--n-gen")) {
            if (!cli_int(&a, 0, BENCH_MAX_TOKENS, &o->n_gen)) return 1;
        } else if (cli_is(&a, "-t", "--threads")) {
            if (!cli_int(&a, 1, 1024, &o->n_threads)) return 1;
        } else if (cli_is(&a, "-r", "--repetitions")) {
            if (!cli_int(&a, 1, BENCH_MAX_REPS, &o->reps)) return 1;
        } else if (cli_is(&a, NULL, "--json")) {
            o->json = true;
        } else {
            return cli_unknown(&a);
        }
    }
    if (!o->model) return cli_fail("bench: -m MODEL is required");
    if (!o->n_prompt && !o->n_gen) return cli_fail("bench: -p 0 and -n 0 leave nothing to run");
    return 0;
}

/* One test's result. */
typedef struct bench_result {
    speed_test test;
    int32_t n;
    char name[16];   /* "pp64" */
    double *samples; /* (reps) t/s */
    double mean, sd;
} bench_result;

/* Warm-up, then the timed rounds. */
static int bench_test(const bench_opts *o, mica_context *c, bench_result *r, cli_progress *prog)
{
    mica_err err;
    double warm;
    cli_progress_update(prog, r->name, "warm-up", 0, o->reps);
    if (speed_run(c, r->test, r->n, &warm, &err)) return cli_fail("%s: %s", o->model, err.msg);
    for (int i = 0; i < o->reps; i++) {
        cli_progress_update(prog, r->name, "round", i, o->reps);
        if (speed_run(c, r->test, r->n, &r->samples[i], &err))
            return cli_fail("%s: %s", o->model, err.msg);
    }
    cli_progress_update(prog, r->name, "round", o->reps, o->reps);
    speed_stats(r->samples, (int)o->reps, &r->mean, &r->sd);
    return 0;
}

static void bench_print_json(const bench_opts *o, const speed_model_info *info,
                             const bench_result *r)
{
    core_buf b;
    core_buf_init(&b, 1 << 20);
    core_buf_printf(&b, "{\"model\":");
    core_buf_append_json_str(&b, o->model, strlen(o->model));
    core_buf_printf(&b, ",\"arch\":");
    core_buf_append_json_str(&b, info->arch, strlen(info->arch));
    core_buf_printf(&b,
                    ",\"type\":\"%s\",\"n_params\":%lld,\"size_bytes\":%llu,\"backend\":\"CPU\","
                    "\"simd\":\"%s\",\"threads\":%ld,\"test\":\"%s\",\"n_prompt\":%d,"
                    "\"n_gen\":%d,\"reps\":%ld,\"tokens_per_second\":%.4f,\"sd\":%.4f,"
                    "\"samples\":[",
                    gguf_ttype_name(info->type), (long long)info->n_params,
                    (unsigned long long)info->size_bytes, tensor_simd_name(), o->n_threads, r->name,
                    r->test == SPEED_PP ? r->n : 0, r->test == SPEED_TG ? r->n : 0, o->reps,
                    r->mean, r->sd);
    for (long i = 0; i < o->reps; i++) core_buf_printf(&b, "%s%.4f", i ? "," : "", r->samples[i]);
    core_buf_printf(&b, "]}");
    if (b.data) printf("%.*s\n", (int)b.len, b.data);
    core_buf_free(&b);
}

static void bench_print_header(void)
{
    printf("| %-30s | %10s | %10s | %-18s | %7s | %10s | %20s |\n", "model", "size", "params",
           "backend", "threads", "test", "t/s");
    puts("| ------------------------------ | ---------: | ---------: "
         "| ------------------ | ------: | ---------: | -------------------: |");
}

static void bench_print_row(const bench_opts *o, const speed_model_info *info,
                            const bench_result *r)
{
    char model[64], size[32], params[32], backend[32], tps[48];
    snprintf(model, sizeof model, "%s %s", info->arch, gguf_ttype_name(info->type));
    snprintf(size, sizeof size, "%.2f MiB", info->size_bytes / 1048576.0);
    snprintf(params, sizeof params, "%.2f M", info->n_params / 1e6);
    snprintf(backend, sizeof backend, "CPU (%s)", tensor_simd_name());
    snprintf(tps, sizeof tps, "%.2f ± %.2f", r->mean, r->sd);
    /* "±" is two bytes but one column: pad the t/s field by one more. */
    printf("| %-30s | %10s | %10s | %-18s | %7ld | %10s | %21s |\n", model, size, params, backend,
           o->n_threads, r->name, tps);
}

static void bench_summary(const bench_opts *o, const bench_result *res, int n)
{
    fprintf(stderr, "mica: bench %s:", o->model);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "%s %s %.2f ± %.2f t/s", i ? "," : "", res[i].name, res[i].mean, res[i].sd);
    fprintf(stderr, " (%ld threads, %ld rounds, %s kernels)\n", o->n_threads, o->reps,
            tensor_simd_name());
}

/* Sets up the tests that -p and -n ask for; returns how many. */
static int bench_plan(const bench_opts *o, bench_result *res, double *samples)
{
    int n = 0;
    const long sizes[2] = {o->n_prompt, o->n_gen};
    for (int t = 0; t < 2; t++) {
        if (!sizes[t]) continue;
        res[n] = (bench_result){.test = t ? SPEED_TG : SPEED_PP,
                                .n = (int32_t)sizes[t],
                                .samples = samples + n * o->reps};
        snprintf(res[n].name, sizeof res[n].name, "%s%ld", t ? "tg" : "pp", sizes[t]);
        n++;
    }
    return n;
}

static int bench_run(const bench_opts *o, mica_context *c, const speed_model_info *info)
{
    bench_result res[2];
    double *samples = calloc(2 * (size_t)o->reps, sizeof *samples);
    if (!samples) return cli_fail("bench: out of memory");
    const int n = bench_plan(o, res, samples);
    cli_progress prog;
    cli_progress_init(&prog);
    int rc = 0;
    if (!o->json) bench_print_header();
    for (int i = 0; i < n && !rc; i++) {
        rc = bench_test(o, c, &res[i], &prog);
        cli_progress_clear(&prog);
        if (rc) break;
        if (o->json)
            bench_print_json(o, info, &res[i]);
        else
            bench_print_row(o, info, &res[i]);
        fflush(stdout);
    }
    if (!rc) bench_summary(o, res, n);
    free(samples);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(bench_help, stdout);
        return 0;
    }
    bench_opts o = {.n_prompt = 64, .n_gen = 32, .n_threads = 2, .reps = 3};
    if (bench_parse(argc, argv, &o)) return 1;
    mica_err err;
    speed_model_info info;
    if (speed_model_info_read(o.model, &info, &err)) return cli_fail_err(&err);
    mica_model *m = NULL;
    mica_context *c = NULL;
    if (mica_model_load(&m, o.model, &err)) return cli_fail_err(&err);
    mica_context_params cp = mica_context_default_params();
    cp.n_threads = (int32_t)o.n_threads;
    cp.n_ctx = (int32_t)(o.n_prompt > o.n_gen ? o.n_prompt : o.n_gen);
    int rc = mica_context_new(&c, m, cp, &err) ? cli_fail_err(&err) : bench_run(&o, c, &info);
    mica_context_free(c);
    mica_model_free(m);
    return rc;
}
