/*
 * cmd_quantize.c - `mica quantize IN OUT TYPE`: parses the options, reads the calibration
 * text, calls quant_model_file (src/quant) and reports: the per-tensor table on stdout (with
 * --budget-mb or -v), the fallbacks and a one-line size summary on stderr. Nothing is
 * printed before the file is complete, so an error is one line and leaves no output file.
 */
#include "cli.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char quantize_help[] =
    "usage: mica quantize IN.gguf OUT.gguf TYPE [options]\n"
    "\n"
    "Quantizes a model stored in F32, F16 or BF16 to TYPE with llama-quantize's default mix:\n"
    "1-D tensors, norms and router gates stay F32; the output matrix (the embedding when it is\n"
    "tied) gets the higher of TYPE and Q6_K (Q8_0 when its rows do not fit Q6_K's blocks);\n"
    "with 8 experts attn_k/attn_v become Q8_0; q4_k follows the Q4_K_M mix. A tensor whose\n"
    "rows are not a multiple of TYPE's block falls back (to F16 where llama.cpp has no\n"
    "fallback), and the summary says so. OUT is written as OUT.tmp and renamed when complete.\n"
    "\n"
    "  TYPE                  %s\n"
    "      --keep-f16 LIST   keep the tensors matching these comma-separated globs in F16\n"
    "                        ('*' any run of characters, '?' one), e.g.\n"
    "                        output.weight,blk.0.*,*.attn_v.weight\n"
    "      --budget-mb N     then keep the most sensitive tensors in F16 while the file\n"
    "                        stays within N MiB (1 MiB = 1048576 bytes); needs --calib\n"
    "      --calib FILE      calibration text: a tensor's sensitivity is the mean KL\n"
    "                        divergence of the next-token distributions over FILE when only\n"
    "                        that tensor is quantized\n"
    "  -c, --ctx N           calibration chunk length in tokens (default: min(512, the\n"
    "                        model's context, the text))\n"
    "  -t, --threads N       threads (default: all CPUs)\n"
    "  -v, --verbose         print the per-tensor table (always printed with --budget-mb)\n";

#define QUANTIZE_MAX_CALIB (64u << 20) /* bytes of calibration text */

typedef struct quantize_opts {
    const char *in, *out, *type_name, *keep, *calib;
    double budget_mb;
    long n_ctx, n_threads;
    bool verbose;
} quantize_opts;

static int quantize_positional(quantize_opts *o, const char *arg)
{
    if (!o->in)
        o->in = arg;
    else if (!o->out)
        o->out = arg;
    else if (!o->type_name)
        o->type_name = arg;
    else
        return cli_fail("quantize: unexpected argument '%s' (see mica quantize --help)", arg);
    return 0;
}

static int quantize_parse(int argc, char **argv, quantize_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        if (cli_is(&a, NULL, "--keep-f16")) {
            if (!(o->keep = cli_value(&a))) return 1;
        } else if (cli_is(&a, NULL, "--budget-mb")) {
            if (!cli_float(&a, 1e-6, 1e9, &o->budget_mb)) return 1;
        } else if (cli_is(&a, NULL, "--calib")) {
            if (!(o->calib = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-c", "--ctx")) {
            if (!cli_int(&a, 4, 1L << 20, &o->n_ctx)) return 1;
        } else if (cli_is(&a, "-t", "--threads")) {
            if (!cli_int(&a, 1, 1024, &o->n_threads)) return 1;
        } else if (cli_is(&a, "-v", "--verbose")) {
            o->verbose = true;
        } else if (argv[a.i][0] == '-' && argv[a.i][1]) {
            return cli_unknown(&a);
        } else if (quantize_positional(o, argv[a.i])) {
            return 1;
        }
    }
    if (!o->type_name) return cli_fail("quantize: IN.gguf OUT.gguf TYPE are required");
    if (o->budget_mb > 0 && !o->calib)
        return cli_fail("quantize: --budget-mb needs a calibration text (--calib FILE)");
    if (o->calib && o->budget_mb <= 0)
        return cli_fail("quantize: --calib is used only with --budget-mb");
    return 0;
}

static void shape_str(const quant_tensor *t, char *buf, size_t cap)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < t->n_dims && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static void print_table(const quant_plan *p, bool measured)
{
    if (measured)
        printf("sensitivity: mean KL divergence over %lld calibration tokens when only that "
               "tensor is quantized (base perplexity %.4f)\n",
               (long long)p->calib_tokens, p->base_ppl);
    printf("%-36s %-16s %-5s %-5s %10s %12s  %s\n", "tensor", "shape", "from", "to", "bytes",
           measured ? "KL" : "", "why");
    for (size_t i = 0; i < p->n; i++) {
        const quant_tensor *t = &p->t[i];
        char shape[64], kl[32] = "";
        shape_str(t, shape, sizeof shape);
        if (measured && t->kl >= 0) snprintf(kl, sizeof kl, "%.6f", t->kl);
        printf("%-36s %-16s %-5s ", t->name, shape, gguf_ttype_name(t->src_type));
        printf("%-5s %10llu %12s  %s\n", gguf_ttype_name(t->type), (unsigned long long)t->bytes, kl,
               quant_why_str(t->why));
    }
}

/* One stderr line per tensor that could not take its type, as llama-quantize warns. */
static void print_fallbacks(const quant_plan *p, const char *in)
{
    for (size_t i = 0; i < p->n; i++) {
        const quant_tensor *t = &p->t[i];
        if (t->why != QUANT_WHY_FALLBACK) continue;
        uint32_t bs = 1;
        gguf_ttype_layout(t->wanted, &bs, NULL);
        fprintf(stderr,
                "mica: %s: tensor '%s': rows of %lld are not a multiple of %s's block of %u; "
                "falling back to %s\n",
                in, t->name, (long long)t->ne[0], gguf_ttype_name(t->wanted), bs,
                gguf_ttype_name(t->type));
    }
}

/* "35 Q8_0, 10 F32, 3 F16": how many tensors of each type were written. */
static void type_counts(const quant_plan *p, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (uint32_t type = 0; type < GGUF_T_COUNT; type++) {
        size_t n = 0;
        for (size_t i = 0; i < p->n; i++) n += p->t[i].type == type;
        if (n && o < cap)
            o += (size_t)snprintf(buf + o, cap - o, "%s%zu %s", o ? ", " : "", n,
                                  gguf_ttype_name(type));
    }
}

static int quantize_run(const quantize_opts *o, uint32_t type, char *calib, size_t calib_len)
{
    cli_progress prog;
    cli_progress_init(&prog);
    quant_params qp = {
        .type = type,
        .keep_f16 = o->keep,
        .budget = (uint64_t)(o->budget_mb * 1048576.0),
        .calib = calib,
        .calib_len = calib_len,
        .calib_name = o->calib,
        .calib_ctx = (int32_t)o->n_ctx,
        .n_threads = (int)o->n_threads,
        .progress = cli_progress_update,
        .progress_ctx = &prog,
    };
    quant_plan plan;
    mica_err err;
    const double t0 = core_now();
    mica_status st = quant_model_file(o->in, o->out, &qp, &plan, &err);
    cli_progress_clear(&prog);
    if (st) return cli_fail_err(&err);
    if (o->verbose || qp.budget) print_table(&plan, qp.budget != 0);
    print_fallbacks(&plan, o->in);
    char counts[256];
    type_counts(&plan, counts, sizeof counts);
    fprintf(stderr,
            "mica: wrote %s: %s, %zu tensors (%s), tensor data %.3f MiB -> %.3f MiB (%.3fx) "
            "in %.2f s\n",
            o->out, gguf_ttype_name(type), plan.n, counts, (double)plan.src_bytes / 1048576.0,
            (double)plan.dst_bytes / 1048576.0,
            plan.src_bytes ? (double)plan.dst_bytes / (double)plan.src_bytes : 0.0,
            core_now() - t0);
    quant_plan_free(&plan);
    return 0;
}

int cmd_quantize(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        char names[256];
        quant_type_names(names, sizeof names);
        printf(quantize_help, names);
        return 0;
    }
    quantize_opts o = {0};
    if (quantize_parse(argc, argv, &o)) return 1;
    uint32_t type;
    mica_err err;
    if (quant_type_from_name(o.type_name, &type, &err)) return cli_fail("quantize: %s", err.msg);
    if (o.budget_mb > 0 && quant_type_is_float(type))
        return cli_fail("quantize: --budget-mb: %s is not a quantized type, nothing to keep in F16",
                        gguf_ttype_name(type));
    char *calib = NULL;
    size_t calib_len = 0;
    if (o.calib && core_read_file(o.calib, QUANTIZE_MAX_CALIB, &calib, &calib_len, &err))
        return cli_fail_err(&err);
    int rc = quantize_run(&o, type, calib, calib_len);
    free(calib);
    return rc;
}
