/*
 * bench_moe.c - decode speed of a Mixture-of-Experts model against a dense model with the
 * same number of active parameters, measured in the same run (make bench; --help).
 *
 * Writes two random-weight "llama" models into a temporary folder (removed at the end):
 * an MoE with n_expert experts of FFN size ff of which n_used run per token, and a dense
 * model whose FFN size is n_used * ff, everything else (type, sizes, vocabulary) identical,
 * so both read the same weights per token but for the router's n_embd x n_expert. Then,
 * per model: load, a context with -t threads, a prompt in one batch and -n greedy tokens
 * one at a time through mica_decode; one untimed warm-up round, then -r timed rounds that
 * alternate between the models so that clock drift hits both alike. Reports the median time
 * of one token's mica_decode call per model and the MoE/dense ratio (the target is
 * at most 1.2x). The default sizes are those of big-llama-moe-8x in
 * ../shared/reference/llamacpp-bench.md, so the MoE figure compares with llama.cpp's tg32 there.
 * Progress goes to stderr only when it is a terminal; the table and the
 * one-line summary go to stdout. Exit 0, or 1 with "bench_moe: what" on stderr.
 */
#define _POSIX_C_SOURCE 200809L

#include "mica.h"
#include "model/model_synth.h"
#include "tensor/tensor.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BENCH_MAX_TOKENS 4096
#define BENCH_MAX_REPS   1000
#define BENCH_SEED       0x6d696361 /* "mica" */

typedef struct bench_opts {
    int threads, reps, n_gen, n_prompt;
    uint32_t type;
    int n_embd, n_ff, n_layer, n_head, n_expert, n_used, n_vocab;
    uint64_t seed;
    bool json;
} bench_opts;

/* One of the two models under test. */
typedef struct bench_model {
    const char *label; /* "dense", "MoE" */
    model_synth_params params;
    char path[1100]; /* the folder (< 1024) and a file name */
    bool written;
    mica_model *model;
    mica_context *ctx;
    float *logits;      /* (n_vocab) */
    double *tok_s;      /* seconds of each timed one-token decode: reps * n_gen */
    int n_tok;          /* filled entries of tok_s */
    int64_t n_total;    /* parameters */
    int64_t n_active;   /* parameters one token reads */
    double median_s;    /* per token */
    double weight_gb_s; /* active weight bytes per second */
} bench_model;

static bool bench_tty;

static int bench_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (bench_tty) fputs("\r\033[K", stderr);
    fputs("bench_moe: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void bench_progress(const char *fmt, ...)
{
    if (!bench_tty) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("\r\033[Kbench_moe: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

/* ---- options -------------------------------------------------------------------------- */

static void bench_usage(FILE *f)
{
    fputs("usage: bench_moe [options]\n"
          "Decode time per token of a random MoE model against a dense model with the same\n"
          "active parameters (dense FFN size = used x expert FFN size), same weight type.\n"
          "\n"
          "  -t, --threads N   threads per context (default 2)\n"
          "  -r, --reps N      timed rounds per model, after one warm-up round (default 5)\n"
          "  -n, --tokens N    tokens decoded one at a time per round (default 32)\n"
          "  -p, --prompt N    prompt tokens decoded in one batch first (default 16)\n"
          "      --type T      weight type: f32, f16, q8_0, q4_0 (default q8_0)\n"
          "      --embd N      embedding size (default 512)\n"
          "      --ff N        FFN size of one expert (default 1408)\n"
          "      --layers N    layers (default 8)\n"
          "      --heads N     attention heads (default 8)\n"
          "      --experts N   experts (default 8)\n"
          "      --used N      experts used per token (default 2)\n"
          "      --vocab N     vocabulary size (default 512)\n"
          "      --seed N      weight seed (default 0x6d696361)\n"
          "      --json        also print the figures as one JSON line\n"
          "  -h, --help        this text\n"
          "\n"
          "The models are written to a temporary folder under $TMPDIR (default /tmp) and\n"
          "removed at the end. Progress goes to stderr when it is a terminal.\n",
          f);
}

static bool bench_parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool bench_parse_type(const char *s, uint32_t *out)
{
    static const struct {
        const char *name;
        uint32_t type;
    } types[] = {
        {"f32", GGUF_T_F32}, {"f16", GGUF_T_F16}, {"q8_0", GGUF_T_Q8_0}, {"q4_0", GGUF_T_Q4_0}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(s, types[i].name)) {
            *out = types[i].type;
            return true;
        }
    return false;
}

typedef struct bench_int_opt {
    const char *short_name, *long_name;
    long lo, hi;
    size_t offset; /* of an int field in bench_opts */
} bench_int_opt;

#define BENCH_OPT(s, l, lo, hi, field)                                                             \
    {                                                                                              \
        s, l, lo, hi, offsetof(bench_opts, field)                                                  \
    }

static const bench_int_opt bench_int_opts[] = {
    BENCH_OPT("-t", "--threads", 1, 512, threads),
    BENCH_OPT("-r", "--reps", 1, BENCH_MAX_REPS, reps),
    BENCH_OPT("-n", "--tokens", 1, BENCH_MAX_TOKENS, n_gen),
    BENCH_OPT("-p", "--prompt", 1, BENCH_MAX_TOKENS, n_prompt),
    BENCH_OPT(NULL, "--embd", 1, 1 << 16, n_embd),
    BENCH_OPT(NULL, "--ff", 1, 1 << 20, n_ff),
    BENCH_OPT(NULL, "--layers", 1, 4096, n_layer),
    BENCH_OPT(NULL, "--heads", 1, 4096, n_head),
    BENCH_OPT(NULL, "--experts", 1, 1024, n_expert),
    BENCH_OPT(NULL, "--used", 1, 1024, n_used),
    BENCH_OPT(NULL, "--vocab", MODEL_SYNTH_MIN_VOCAB, 1 << 22, n_vocab),
};

static void bench_set_int(bench_opts *o, const bench_int_opt *d, long v)
{
    *(int *)((char *)o + d->offset) = (int)v;
}

/* Returns 0 to run, 1 on a usage error (reported), 2 after --help. */
static int bench_parse(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.threads = 2,
                      .reps = 5,
                      .n_gen = 32,
                      .n_prompt = 16,
                      .type = GGUF_T_Q8_0,
                      .n_embd = 512,
                      .n_ff = 1408,
                      .n_layer = 8,
                      .n_head = 8,
                      .n_expert = 8,
                      .n_used = 2,
                      .n_vocab = 512,
                      .seed = BENCH_SEED};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return 2;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (i + 1 >= argc) return bench_fail("%s: unknown option or missing value (see --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--type")) {
            if (!bench_parse_type(v, &o->type))
                return bench_fail("--type %s: expected f32, f16, q8_0 or q4_0", v);
            continue;
        }
        if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 0);
            if (errno || end == v || *end) return bench_fail("--seed %s: not a number", v);
            continue;
        }
        const bench_int_opt *d = NULL;
        for (size_t k = 0; k < sizeof bench_int_opts / sizeof bench_int_opts[0]; k++)
            if ((bench_int_opts[k].short_name && !strcmp(a, bench_int_opts[k].short_name)) ||
                !strcmp(a, bench_int_opts[k].long_name))
                d = &bench_int_opts[k];
        if (!d) return bench_fail("%s: unknown option (see --help)", a);
        long n;
        if (!bench_parse_int(v, d->lo, d->hi, &n))
            return bench_fail("%s %s: expected an integer in [%ld, %ld]", a, v, d->lo, d->hi);
        bench_set_int(o, d, n);
    }
    if (o->n_used > o->n_expert)
        return bench_fail("--used %d is more than --experts %d", o->n_used, o->n_expert);
    return 0;
}

/* ---- models --------------------------------------------------------------------------- */

static const char *bench_type_name(uint32_t type)
{
    switch (type) {
    case GGUF_T_F32:
        return "f32";
    case GGUF_T_F16:
        return "f16";
    case GGUF_T_Q8_0:
        return "q8_0";
    default:
        return "q4_0";
    }
}

static void bench_write_progress(void *ctx, int64_t done, int64_t total)
{
    bench_progress("writing the %s model: %3d%%", ((const bench_model *)ctx)->label,
                   (int)(100 * done / total));
}

static void bench_init_models(const bench_opts *o, const char *dir, bench_model *dense,
                              bench_model *moe)
{
    model_synth_params p = model_synth_default_params();
    p.n_vocab = o->n_vocab;
    p.n_ctx = 4096;
    p.n_embd = o->n_embd;
    p.n_layer = o->n_layer;
    p.n_head = p.n_head_kv = o->n_head;
    p.type = o->type;
    p.seed = o->seed;
    moe->label = "MoE";
    moe->params = p;
    moe->params.n_ff = o->n_ff;
    moe->params.n_expert = o->n_expert;
    moe->params.n_expert_used = o->n_used;
    dense->label = "dense";
    dense->params = p;
    dense->params.n_ff = o->n_ff * o->n_used;
    snprintf(moe->path, sizeof moe->path, "%s/moe.gguf", dir);
    snprintf(dense->path, sizeof dense->path, "%s/dense.gguf", dir);
}

static int bench_prepare(const bench_opts *o, bench_model *b)
{
    mica_err err;
    b->params.progress = bench_write_progress;
    b->params.progress_ctx = b;
    model_synth_count(&b->params, &b->n_total, &b->n_active);
    b->written = true; /* a failed write leaves no file; unlink then fails quietly */
    if (model_synth_write(b->path, &b->params, &err)) return bench_fail("%s", err.msg);
    bench_progress("loading the %s model", b->label);
    if (mica_model_load(&b->model, b->path, &err)) return bench_fail("%s", err.msg);
    mica_context_params cp = mica_context_default_params();
    cp.n_threads = o->threads;
    cp.n_ctx = o->n_prompt + o->n_gen;
    if (mica_context_new(&b->ctx, b->model, cp, &err)) return bench_fail("%s", err.msg);
    b->logits = malloc((size_t)b->params.n_vocab * sizeof *b->logits);
    b->tok_s = malloc((size_t)o->reps * (size_t)o->n_gen * sizeof *b->tok_s);
    if (!b->logits || !b->tok_s) return bench_fail("out of memory");
    return 0;
}

static void bench_release(bench_model *b)
{
    mica_context_free(b->ctx);
    mica_model_free(b->model);
    free(b->logits);
    free(b->tok_s);
    if (b->written) unlink(b->path);
}

/* ---- timing --------------------------------------------------------------------------- */

static int bench_argmax(const float *x, int32_t n, mica_token *out)
{
    int32_t best = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return bench_fail("logit %d is %g, not finite", i, (double)x[i]);
        if (x[i] > x[best]) best = i;
    }
    *out = best;
    return 0;
}

/* One round: the prompt from position 0, then n_gen greedy tokens, each timed when `timed`. */
static int bench_round(const bench_opts *o, bench_model *b, bool timed)
{
    mica_err err;
    mica_token prompt[BENCH_MAX_TOKENS];
    uint32_t r = 12345;
    prompt[0] = mica_model_bos(b->model);
    for (int i = 1; i < o->n_prompt; i++) {
        r = r * 1103515245u + 12345u;
        prompt[i] = (mica_token)(3 + (r >> 8) % (uint32_t)(b->params.n_vocab - 3));
    }
    mica_seq_truncate(b->ctx, 0, 0);
    if (mica_decode(b->ctx, 0, prompt, o->n_prompt, 0, false, b->logits, &err))
        return bench_fail("%s: %s", b->label, err.msg);
    for (int i = 0; i < o->n_gen; i++) {
        mica_token t;
        if (bench_argmax(b->logits, b->params.n_vocab, &t)) return 1;
        const double t0 = core_now();
        if (mica_decode(b->ctx, 0, &t, 1, o->n_prompt + i, false, b->logits, &err))
            return bench_fail("%s: %s", b->label, err.msg);
        if (timed) b->tok_s[b->n_tok++] = core_now() - t0;
    }
    return 0;
}

static int bench_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* A warm-up round each (page faults, caches), then timed rounds alternating the models. */
static int bench_time(const bench_opts *o, bench_model *models, int n_models)
{
    for (int m = 0; m < n_models; m++) {
        bench_progress("warming up the %s model", models[m].label);
        if (bench_round(o, &models[m], false)) return 1;
    }
    for (int rep = 0; rep < o->reps; rep++)
        for (int m = 0; m < n_models; m++) {
            bench_progress("round %d/%d, %s model", rep + 1, o->reps, models[m].label);
            if (bench_round(o, &models[m], true)) return 1;
        }
    const double bytes_per_param = (double)tensor_row_size(o->type, 32) / 32.0;
    for (int m = 0; m < n_models; m++) {
        bench_model *b = &models[m];
        b->median_s = bench_median(b->tok_s, b->n_tok);
        b->weight_gb_s = (double)b->n_active * bytes_per_param / b->median_s / 1e9;
    }
    return 0;
}

/* ---- report --------------------------------------------------------------------------- */

static void bench_report(const bench_opts *o, const bench_model *dense, const bench_model *moe)
{
    const double ratio = moe->median_s / dense->median_s;
    char name[2][64];
    snprintf(name[0], sizeof name[0], "dense ff %d", dense->params.n_ff);
    snprintf(name[1], sizeof name[1], "MoE %dx top-%d ff %d", o->n_expert, o->n_used, o->n_ff);
    printf("bench_moe: %s, %d threads, n_embd %d, %d layers, %d heads, vocab %d, prompt %d, "
           "%d tokens x %d rounds (%s kernels)\n",
           bench_type_name(o->type), o->threads, o->n_embd, o->n_layer, o->n_head, o->n_vocab,
           o->n_prompt, o->n_gen, o->reps, tensor_simd_name());
    printf("%-24s %13s %14s %10s %10s %14s\n", "model", "params total", "params active", "ms/token",
           "tokens/s", "weights GB/s");
    const bench_model *rows[2] = {dense, moe};
    for (int i = 0; i < 2; i++)
        printf("%-24s %12.1fM %13.1fM %10.3f %10.1f %14.2f\n", name[i],
               (double)rows[i]->n_total / 1e6, (double)rows[i]->n_active / 1e6,
               rows[i]->median_s * 1e3, 1.0 / rows[i]->median_s, rows[i]->weight_gb_s);
    if (o->json)
        printf("{\"bench\":\"moe\",\"type\":\"%s\",\"threads\":%d,\"n_embd\":%d,\"n_layer\":%d,"
               "\"n_head\":%d,\"n_vocab\":%d,\"n_expert\":%d,\"n_expert_used\":%d,\"n_ff_exp\":%d,"
               "\"tokens\":%d,\"reps\":%d,\"dense_ms_per_token\":%.4f,"
               "\"moe_ms_per_token\":%.4f,\"dense_params_active\":%lld,"
               "\"moe_params_active\":%lld,\"moe_params_total\":%lld,\"ratio\":%.4f}\n",
               bench_type_name(o->type), o->threads, o->n_embd, o->n_layer, o->n_head, o->n_vocab,
               o->n_expert, o->n_used, o->n_ff, o->n_gen, o->reps, dense->median_s * 1e3,
               moe->median_s * 1e3, (long long)dense->n_active, (long long)moe->n_active,
               (long long)moe->n_total, ratio);
    printf("bench_moe: MoE %dx top-%d decode %.2fx the dense time (%s, %d threads, n_embd %d, "
           "%d layers)\n",
           o->n_expert, o->n_used, ratio, bench_type_name(o->type), o->threads, o->n_embd,
           o->n_layer);
}

/* ---- main ----------------------------------------------------------------------------- */

static int bench_run(const bench_opts *o, const char *dir)
{
    bench_model models[2] = {{0}, {0}};
    bench_model *dense = &models[0], *moe = &models[1];
    bench_init_models(o, dir, dense, moe);
    mica_err err;
    int rc = 0;
    for (int m = 0; m < 2 && !rc; m++)
        if (model_synth_check(&models[m].params, &err))
            rc = bench_fail("%s model: %s", models[m].label, err.msg);
    for (int m = 0; m < 2 && !rc; m++) rc = bench_prepare(o, &models[m]);
    if (!rc) rc = bench_time(o, models, 2);
    if (bench_tty) fputs("\r\033[K", stderr);
    if (!rc) bench_report(o, dense, moe);
    for (int m = 0; m < 2; m++) bench_release(&models[m]);
    return rc;
}

int main(int argc, char **argv)
{
    bench_tty = isatty(fileno(stderr));
    bench_opts o;
    int rc = bench_parse(argc, argv, &o);
    if (rc) return rc == 2 ? 0 : 1;
    const char *tmp = getenv("TMPDIR");
    char dir[1024];
    if ((size_t)snprintf(dir, sizeof dir, "%s/bench_moe.XXXXXX", tmp && *tmp ? tmp : "/tmp") >=
        sizeof dir)
        return bench_fail("TMPDIR is too long");
    if (!mkdtemp(dir)) return bench_fail("cannot create a folder %s: %s", dir, strerror(errno));
    rc = bench_run(&o, dir);
    if (rmdir(dir) != 0 && !rc) rc = bench_fail("cannot remove %s: %s", dir, strerror(errno));
    return rc;
}
