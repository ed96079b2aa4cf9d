/*
 * bench_shapes.c - prompt processing (ppN) and decode (tgN) speed on random-weight models of
 * the shapes in ../shared/reference/llamacpp-bench.md, as llama-bench measures them, with
 * the ratio to llama.cpp's figures there and, for decode, the share of the memory-bandwidth
 * bound (build/bench_shapes; --help).
 *
 * Per (shape, type) the model is written with model_synth's preset of that shape
 * (qwen2-0.5b: qwen2 with q/k/v biases and the tied output; moe-8x: llama with 8 experts)
 * and, for block types, llama-quantize's mix from F16, as the reference files were made;
 * only the random weights differ. The files go into a temporary folder removed at the end,
 * or are kept and reused with --dir. Each round is speed_run (src/engine/speed.h), as
 * `mica bench` runs it: ppN evaluates N prompt tokens in one mica_decode from an empty
 * cache; tgN decodes N tokens one at a time from an empty cache. One warm-up round each,
 * then -r timed rounds that alternate between the models so that drift and other load hit
 * all of them alike; each test's figure is the mean ± sd of its rounds' t/s (llama-bench's
 * "avg ± stdev").
 *
 * Bandwidth bound: the weight bytes one decoded token reads (every matrix once; for an MoE
 * the router and the used experts) times tg t/s, divided by the read bandwidth bench_bw.h
 * measures with the same thread count (--bw to give it instead). The byte count comes from
 * the file's tensor table (speed_model_info_read), not from mica's counters. On a shared
 * machine both the bandwidth and the CPU time a process gets change from minute to minute,
 * so the bandwidth is measured in every round (median of 3 passes, between the models'
 * tests) and the bound uses the median over the rounds; and each test reports its "CPU
 * share": the process's CPU time over wall time x threads, about 100 % when every thread
 * had a core to itself (the pool's workers spin while they wait) and lower when other
 * processes took turns on the cores.
 *
 * Output: a table and one summary line per test on stdout; progress on stderr when it is a
 * terminal; "bench_shapes: what" and exit 1 on an error.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_bw.h"
#include "engine/speed.h"
#include "mica.h"
#include "model/model_synth.h"
#include "tensor/tensor.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define BS_MAX_TOKENS 4096
#define BS_MAX_REPS   1000
#define BS_MAX_MODELS 8

/* ---- the reference shapes and llama.cpp's figures (2 threads, -p 64 -n 32 -r 3) ------ */

typedef struct bs_shape {
    const char *name;   /* as in llamacpp-bench.md */
    const char *key;    /* --shapes name */
    const char *preset; /* model_synth_preset name */
} bs_shape;

static const bs_shape bs_shapes[] = {
    {"big-qwen2-0.5b-shape", "qwen2", "qwen2-0.5b"},
    {"big-llama-moe-8x", "moe", "moe-8x"},
};

typedef struct bs_ref {
    const char *shape;
    uint32_t type;
    double pp, tg; /* median of run means, t/s */
} bs_ref;

static const bs_ref bs_refs[] = {
    {"qwen2", GGUF_T_F16, 360.6, 55.4},   {"qwen2", GGUF_T_Q8_0, 211.3, 55.2},
    {"qwen2", GGUF_T_Q4_0, 569.5, 126.1}, {"moe", GGUF_T_F16, 1171.5, 378.3},
    {"moe", GGUF_T_Q8_0, 1279.9, 451.3},  {"moe", GGUF_T_Q4_0, 1894.8, 728.4},
};

/* The targets for the qwen2 shape (ratio to llama.cpp); 0 where none is set. */
static double bs_target_pp(const char *shape, uint32_t type)
{
    if (strcmp(shape, "qwen2")) return 0;
    return type == GGUF_T_Q8_0 ? 1.5 : type == GGUF_T_Q4_0 ? 1.1 : 0;
}

static double bs_target_tg(const char *shape, uint32_t type)
{
    return !strcmp(shape, "qwen2") && (type == GGUF_T_Q8_0 || type == GGUF_T_Q4_0) ? 1.0 : 0;
}

/* ---- options ---------------------------------------------------------------------------- */

typedef struct bs_opts {
    int threads, reps, n_prompt, n_gen;
    const char *shapes, *types, *dir;
    double bw;   /* GB/s given with --bw; 0: measure */
    long bw_mib; /* buffer of the bandwidth measurement */
    bool run_pp, run_tg;
} bs_opts;

static bool bs_tty;

static int bs_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (bs_tty) fputs("\r\033[K", stderr);
    fputs("bench_shapes: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void bs_progress(const char *fmt, ...)
{
    if (!bs_tty) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("\r\033[Kbench_shapes: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

static void bs_usage(void)
{
    puts("usage: bench_shapes [options]\n"
         "ppN / tgN tokens per second on random-weight models of llama.cpp's benchmark shapes\n"
         "(../shared/reference/llamacpp-bench.md), the ratio to llama.cpp's figures, and the\n"
         "decode share of the memory-bandwidth bound.\n"
         "\n"
         "  -t, --threads N   threads (default 2, as the reference)\n"
         "  -r, --reps N      timed rounds per test after one warm-up (default 5)\n"
         "  -p, --prompt N    prompt tokens of the pp test (default 64)\n"
         "  -n, --gen N       tokens of the tg test (default 32)\n"
         "      --shapes L    comma list of qwen2, moe (default qwen2)\n"
         "      --types L     comma list of f16, q8_0, q4_0 (default q8_0,q4_0,f16)\n"
         "      --dir DIR     keep the models in DIR and reuse them on the next run\n"
         "      --bw GBS      read bandwidth in GB/s instead of measuring it\n"
         "      --bw-mib N    buffer of the bandwidth measurement in MiB (default 1024)\n"
         "      --tests L     comma list of pp, tg (default pp,tg)\n"
         "  -h, --help        this text");
}

static bool bs_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

/* Returns 0 to run, 1 on a usage error (reported), 2 after --help. */
static int bs_parse(int argc, char **argv, bs_opts *o)
{
    *o = (bs_opts){.threads = 2,
                   .reps = 5,
                   .n_prompt = 64,
                   .n_gen = 32,
                   .shapes = "qwen2",
                   .types = "q8_0,q4_0,f16",
                   .bw_mib = 1024,
                   .run_pp = true,
                   .run_tg = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bs_usage();
            return 2;
        }
        if (i + 1 >= argc) return bs_fail("%s: unknown option or missing value (see --help)", a);
        const char *v = argv[++i];
        bool ok = true;
        int n = 0;
        if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = bs_int(v, 1, 512, &o->threads);
        else if (!strcmp(a, "-r") || !strcmp(a, "--reps"))
            ok = bs_int(v, 1, BS_MAX_REPS, &o->reps);
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            ok = bs_int(v, 1, BS_MAX_TOKENS, &o->n_prompt);
        else if (!strcmp(a, "-n") || !strcmp(a, "--gen"))
            ok = bs_int(v, 1, BS_MAX_TOKENS, &o->n_gen);
        else if (!strcmp(a, "--shapes"))
            o->shapes = v;
        else if (!strcmp(a, "--types"))
            o->types = v;
        else if (!strcmp(a, "--dir"))
            o->dir = v;
        else if (!strcmp(a, "--tests")) {
            o->run_pp = strstr(v, "pp") != NULL;
            o->run_tg = strstr(v, "tg") != NULL;
            ok = (o->run_pp || o->run_tg) && strspn(v, "ptg,") == strlen(v);
        } else if (!strcmp(a, "--bw-mib") && (ok = bs_int(v, 64, 1 << 20, &n)))
            o->bw_mib = n;
        else if (!strcmp(a, "--bw")) {
            char *end;
            o->bw = strtod(v, &end);
            ok = end != v && !*end && o->bw > 0;
        } else if (ok)
            return bs_fail("%s: unknown option (see --help)", a);
        if (!ok) return bs_fail("%s %s: bad value (see --help)", a, v);
    }
    return 0;
}

/* ---- models ----------------------------------------------------------------------------- */

typedef struct bs_model {
    const bs_shape *shape;
    uint32_t type;
    const bs_ref *ref;
    model_synth_params params;
    char path[1200];
    bool remove; /* written into the temporary folder */
    mica_model *model;
    mica_context *ctx;
    double *pp, *tg;         /* t/s of each timed round */
    double *pp_cpu, *tg_cpu; /* CPU share of each timed round */
    int n_rounds;
    double bytes_per_token; /* weights a decoded token reads */
} bs_model;

static const char *bs_type_name(uint32_t type)
{
    return type == GGUF_T_F16 ? "f16" : type == GGUF_T_Q8_0 ? "q8_0" : "q4_0";
}

static bool bs_type_from(const char *s, size_t len, uint32_t *out)
{
    static const uint32_t types[] = {GGUF_T_F16, GGUF_T_Q8_0, GGUF_T_Q4_0};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strlen(bs_type_name(types[i])) == len && !strncmp(s, bs_type_name(types[i]), len)) {
            *out = types[i];
            return true;
        }
    return false;
}

static const bs_shape *bs_shape_from(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof bs_shapes / sizeof bs_shapes[0]; i++)
        if (strlen(bs_shapes[i].key) == len && !strncmp(s, bs_shapes[i].key, len))
            return &bs_shapes[i];
    return NULL;
}

static const bs_ref *bs_ref_for(const bs_shape *s, uint32_t type)
{
    for (size_t i = 0; i < sizeof bs_refs / sizeof bs_refs[0]; i++)
        if (!strcmp(bs_refs[i].shape, s->key) && bs_refs[i].type == type) return &bs_refs[i];
    return NULL;
}

static void bs_write_progress(void *ctx, int64_t done, int64_t total)
{
    const bs_model *b = ctx;
    bs_progress("writing %s %s: %3d%%", b->shape->name, bs_type_name(b->type),
                (int)(100 * done / total));
}

static int bs_prepare(const bs_opts *o, bs_model *b, const char *dir)
{
    mica_err err;
    model_synth_params *p = &b->params;
    *p = model_synth_default_params();
    if (model_synth_preset(p, b->shape->preset, &err)) return bs_fail("%s", err.msg);
    p->type = b->type;
    p->llama_mix = true;
    p->n_threads = o->threads;
    p->progress = bs_write_progress;
    p->progress_ctx = b;
    if ((size_t)snprintf(b->path, sizeof b->path, "%s/%s.%s.gguf", dir, b->shape->name,
                         bs_type_name(b->type)) >= sizeof b->path)
        return bs_fail("--dir %s is too long", dir);
    struct stat st;
    if (!(o->dir && stat(b->path, &st) == 0)) {
        if (model_synth_check(p, &err)) return bs_fail("%s", err.msg);
        b->remove = !o->dir;
        if (model_synth_write(b->path, p, &err)) return bs_fail("%s", err.msg);
    }
    bs_progress("loading %s", b->path);
    speed_model_info info;
    if (speed_model_info_read(b->path, &info, &err)) return bs_fail("%s", err.msg);
    b->bytes_per_token = info.decode_bytes;
    if (mica_model_load(&b->model, b->path, &err)) return bs_fail("%s", err.msg);
    mica_context_params cp = mica_context_default_params();
    cp.n_threads = o->threads;
    cp.n_ctx = o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen;
    if (mica_context_new(&b->ctx, b->model, cp, &err)) return bs_fail("%s", err.msg);
    b->pp = calloc((size_t)o->reps, sizeof *b->pp);
    b->tg = calloc((size_t)o->reps, sizeof *b->tg);
    b->pp_cpu = calloc((size_t)o->reps, sizeof *b->pp_cpu);
    b->tg_cpu = calloc((size_t)o->reps, sizeof *b->tg_cpu);
    if (!b->pp || !b->tg || !b->pp_cpu || !b->tg_cpu) return bs_fail("out of memory");
    return 0;
}

static void bs_release(bs_model *b)
{
    mica_context_free(b->ctx);
    mica_model_free(b->model);
    free(b->pp);
    free(b->tg);
    free(b->pp_cpu);
    free(b->tg_cpu);
    if (b->remove) unlink(b->path);
}

/* Fills models[] from the --shapes x --types lists; returns the count or -1 (reported). */
static int bs_list_models(const bs_opts *o, bs_model *models)
{
    int n = 0;
    for (const char *s = o->shapes; *s;) {
        const size_t ls = strcspn(s, ",");
        const bs_shape *shape = bs_shape_from(s, ls);
        if (!shape) return bs_fail("--shapes: unknown shape '%.*s'", (int)ls, s), -1;
        for (const char *t = o->types; *t;) {
            const size_t lt = strcspn(t, ",");
            uint32_t type;
            if (!bs_type_from(t, lt, &type))
                return bs_fail("--types: unknown type '%.*s'", (int)lt, t), -1;
            if (n == BS_MAX_MODELS) return bs_fail("more than %d models", BS_MAX_MODELS), -1;
            models[n++] = (bs_model){.shape = shape, .type = type, .ref = bs_ref_for(shape, type)};
            t += lt + (t[lt] == ',');
        }
        s += ls + (s[ls] == ',');
    }
    return n;
}

/* ---- timing ----------------------------------------------------------------------------- */

/* CPU time of the whole process (all threads), in seconds. */
static double bs_cpu_time(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
           1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

/* Runs one test, storing its t/s and CPU share; false on an error (reported). */
static bool bs_run_test(const bs_opts *o, bs_model *b, speed_test test, double *tps, double *cpu)
{
    mica_err err;
    const double c0 = bs_cpu_time(), t0 = core_now();
    if (speed_run(b->ctx, test, test == SPEED_PP ? o->n_prompt : o->n_gen, tps, &err))
        return bs_fail("%s: %s", b->path, err.msg), false;
    *cpu = (bs_cpu_time() - c0) / ((core_now() - t0) * o->threads);
    return true;
}

/* Warm-up, then o->reps rounds over the models, each followed by a bandwidth measurement
 * (bw[rep], GB/s) unless --bw gave it. */
static int bs_time(const bs_opts *o, bs_model *models, int n, double *bw)
{
    double unused;
    for (int m = 0; m < n; m++) {
        bs_progress("warm-up %s %s", models[m].shape->name, bs_type_name(models[m].type));
        if ((o->run_pp && !bs_run_test(o, &models[m], SPEED_PP, &unused, &unused)) ||
            (o->run_tg && !bs_run_test(o, &models[m], SPEED_TG, &unused, &unused)))
            return 1;
    }
    for (int rep = 0; rep < o->reps; rep++) {
        for (int m = 0; m < n; m++) {
            bs_model *b = &models[m];
            bs_progress("round %d/%d: %s %s", rep + 1, o->reps, b->shape->name,
                        bs_type_name(b->type));
            if ((o->run_pp && !bs_run_test(o, b, SPEED_PP, &b->pp[rep], &b->pp_cpu[rep])) ||
                (o->run_tg && !bs_run_test(o, b, SPEED_TG, &b->tg[rep], &b->tg_cpu[rep])))
                return 1;
            b->n_rounds = rep + 1;
        }
        bw[rep] = o->bw;
        if (o->bw > 0) continue;
        bs_progress("round %d/%d: read bandwidth with %d threads", rep + 1, o->reps, o->threads);
        bw_result r = {0};
        if (!bw_measure(o->threads, (size_t)o->bw_mib << 20, 3, NULL, &r))
            return bs_fail("cannot measure the bandwidth (memory or threads)");
        bw[rep] = r.median;
    }
    return 0;
}

/* ---- report ----------------------------------------------------------------------------- */

static const char *bs_verdict(double ratio, double target)
{
    return target <= 0 ? "" : ratio >= target ? "met" : "MISSED";
}

static double bs_median(const double *v, int n)
{
    double *c = malloc((size_t)n * sizeof *c);
    if (!c) return NAN;
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, bw_cmp_double);
    const double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    free(c);
    return m;
}

static void bs_report(const bs_opts *o, const bs_model *models, int n, const double *bw_rounds)
{
    const int reps = models[0].n_rounds;
    const double bw = bs_median(bw_rounds, reps);
    double bw_lo = bw_rounds[0], bw_hi = bw_rounds[0];
    for (int i = 1; i < reps; i++) {
        bw_lo = fmin(bw_lo, bw_rounds[i]);
        bw_hi = fmax(bw_hi, bw_rounds[i]);
    }
    printf("bench_shapes: %d threads, pp%d / tg%d, %d rounds (mean ± sd), %s kernels; read "
           "bandwidth %.2f GB/s (%s: %.2f .. %.2f)\n",
           o->threads, o->n_prompt, o->n_gen, reps, tensor_simd_name(), bw,
           o->bw > 0 ? "given" : "median of the rounds", bw_lo, bw_hi);
    printf("%-22s %-5s %-5s %16s %8s %10s %7s %7s %5s %8s %8s %7s\n", "model", "type", "test",
           "t/s", "median", "llama.cpp", "ratio", "target", "cpu", "MB/tok", "GB/s", "% bound");
    for (int m = 0; m < n; m++) {
        const bs_model *b = &models[m];
        for (int test = 0; test < 2; test++) {
            if (!(test ? o->run_tg : o->run_pp)) continue;
            double mean, sd, cpu, cpu_sd;
            const double *v = test ? b->tg : b->pp;
            speed_stats(v, b->n_rounds, &mean, &sd);
            speed_stats(test ? b->tg_cpu : b->pp_cpu, b->n_rounds, &cpu, &cpu_sd);
            const double ref = b->ref ? (test ? b->ref->tg : b->ref->pp) : 0;
            const double target =
                test ? bs_target_tg(b->shape->key, b->type) : bs_target_pp(b->shape->key, b->type);
            const double ratio = ref > 0 ? mean / ref : 0;
            char name[16], tps[32], tgt[16];
            snprintf(name, sizeof name, "%s%d", test ? "tg" : "pp", test ? o->n_gen : o->n_prompt);
            snprintf(tps, sizeof tps, "%.1f ± %.1f", mean, sd);
            snprintf(tgt, sizeof tgt, target > 0 ? "%.1fx" : "-", target);
            printf("%-22s %-5s %-5s %16s %8.1f %10.1f %6.2fx %7s %4.0f%%", b->shape->name,
                   bs_type_name(b->type), name, tps, bs_median(v, b->n_rounds), ref, ratio, tgt,
                   100 * cpu);
            if (test) {
                const double gbs = b->bytes_per_token * mean / 1e9;
                printf(" %8.1f %8.2f %6.1f%%", b->bytes_per_token / 1e6, gbs, 100 * gbs / bw);
            }
            putchar('\n');
        }
    }
    for (int m = 0; m < n; m++) {
        const bs_model *b = &models[m];
        double pp = 0, tg = 0, sd;
        if (o->run_pp) speed_stats(b->pp, b->n_rounds, &pp, &sd);
        if (o->run_tg) speed_stats(b->tg, b->n_rounds, &tg, &sd);
        const double tpp = bs_target_pp(b->shape->key, b->type);
        const double ttg = bs_target_tg(b->shape->key, b->type);
        printf("bench_shapes: %s %s:", b->shape->name, bs_type_name(b->type));
        if (o->run_pp)
            printf(" pp%d %.1f t/s = %.2fx llama.cpp%s%s;", o->n_prompt, pp,
                   b->ref ? pp / b->ref->pp : 0, tpp > 0 ? ", target " : "",
                   tpp > 0 ? bs_verdict(b->ref ? pp / b->ref->pp : 0, tpp) : "");
        if (o->run_tg)
            printf(" tg%d %.1f t/s = %.2fx llama.cpp%s%s, %.0f%% of the bandwidth bound (target "
                   "85%%: %s)",
                   o->n_gen, tg, b->ref ? tg / b->ref->tg : 0, ttg > 0 ? ", target " : "",
                   ttg > 0 ? bs_verdict(b->ref ? tg / b->ref->tg : 0, ttg) : "",
                   100 * b->bytes_per_token * tg / 1e9 / bw,
                   bs_verdict(b->bytes_per_token * tg / 1e9 / bw, 0.85));
        putchar('\n');
    }
}

/* ---- main ------------------------------------------------------------------------------- */

static int bs_run(const bs_opts *o, const char *dir)
{
    bs_model models[BS_MAX_MODELS];
    const int n = bs_list_models(o, models);
    if (n < 0) return 1;
    double *bw = calloc((size_t)o->reps, sizeof *bw);
    if (!bw) return bs_fail("out of memory");
    int rc = 0, prepared = 0;
    for (; prepared < n && !rc; prepared++) rc = bs_prepare(o, &models[prepared], dir);
    if (!rc) rc = bs_time(o, models, n, bw);
    if (bs_tty) fputs("\r\033[K", stderr);
    if (!rc) bs_report(o, models, n, bw);
    for (int m = 0; m < prepared; m++) bs_release(&models[m]);
    free(bw);
    return rc;
}

int main(int argc, char **argv)
{
    bs_tty = isatty(fileno(stderr));
    bs_opts o;
    int rc = bs_parse(argc, argv, &o);
    if (rc) return rc == 2 ? 0 : 1;
    if (o.dir) {
        if (mkdir(o.dir, 0777) != 0 && errno != EEXIST)
            return bs_fail("cannot create %s: %s", o.dir, strerror(errno));
        return bs_run(&o, o.dir);
    }
    const char *tmp = getenv("TMPDIR");
    char dir[1024];
    if ((size_t)snprintf(dir, sizeof dir, "%s/bench_shapes.XXXXXX", tmp && *tmp ? tmp : "/tmp") >=
        sizeof dir)
        return bs_fail("TMPDIR is too long");
    if (!mkdtemp(dir)) return bs_fail("cannot create a folder %s: %s", dir, strerror(errno));
    rc = bs_run(&o, dir);
    if (rmdir(dir) != 0 && !rc) rc = bs_fail("cannot remove %s: %s", dir, strerror(errno));
    return rc;
}
