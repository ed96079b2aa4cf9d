/*
 * cmd_perplexity.c - `mica perplexity -m MODEL -f TEXT [--kl-base BASE]`: loads the model
 * (and the base), reads the text and calls quant_eval_text (src/quant), then prints the
 * perplexity and, with a base, the KL divergence of the model's next-token distributions
 * from the base's on stdout, and a one-line summary on stderr.
 */
#include "cli.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>

static const char perplexity_help[] =
    "usage: mica perplexity -m MODEL -f TEXT [--kl-base BASE.gguf] [options]\n"
    "\n"
    "Perplexity of MODEL over TEXT as llama-perplexity computes it: the text is cut into\n"
    "chunks of N tokens, each evaluated from an empty cache with BOS first, and the second\n"
    "half of each chunk is scored. With --kl-base, also the KL divergence KL(base || model)\n"
    "of the next-token distributions on the scored tokens (in nats), its maximum, and how\n"
    "often both models rank the same token first: what quantizing BASE into MODEL costs.\n"
    "\n"
    "  -m, --model FILE      GGUF model\n"
    "  -f, --file FILE       the text\n"
    "      --kl-base FILE    base model (same vocabulary), e.g. the F32 file MODEL came from\n"
    "  -c, --ctx N           tokens per chunk (default: min(512, the model's context, the\n"
    "                        text))\n"
    "      --chunks N        score at most N chunks (default: all)\n"
    "  -t, --threads N       threads (default: all CPUs)\n";

#define PERPLEXITY_MAX_TEXT (256u << 20)

typedef struct perplexity_opts {
    const char *model, *text, *base;
    long n_ctx, chunks, n_threads;
} perplexity_opts;

static int perplexity_parse(int argc, char **argv, perplexity_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        if (cli_is(&a, "-m", "--model")) {
            if (!(o->model = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-f", "--file")) {
            if (!(o->text = cli_value(&a))) return 1;
        } else if (cli_is(&a, NULL, "--kl-base")) {
            if (!(o->base = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-c", "--ctx")) {
            if (!cli_int(&a, 4, 1L << 20, &o->n_ctx)) return 1;
        } else if (cli_is(&a, NULL, "--chunks")) {
            if (!cli_int(&a, 1, 1L << 30, &o->chunks)) return 1;
        } else if (cli_is(&a, "-t", "--threads")) {
            if (!cli_int(&a, 1, 1024, &o->n_threads)) return 1;
        } else {
            return cli_unknown(&a);
        }
    }
    if (!o->model || !o->text) return cli_fail("perplexity: -m MODEL and -f TEXT are required");
    return 0;
}

static void print_result(const quant_eval_result *r)
{
    printf("perplexity: %.6f +/- %.6f\n", r->ppl, r->ppl_se);
    if (!r->has_base) return;
    printf("base perplexity: %.6f +/- %.6f\n", r->base_ppl, r->base_ppl_se);
    printf("kl-divergence: mean %.6f +/- %.6f, max %.6f\n", r->kl_mean, r->kl_se, r->kl_max);
    printf("top-1 agreement: %.2f%%\n", 100.0 * r->top1_agree);
}

int cmd_perplexity(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(perplexity_help, stdout);
        return 0;
    }
    perplexity_opts o = {0};
    if (perplexity_parse(argc, argv, &o)) return 1;
    mica_err err;
    mica_model *m = NULL, *base = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = 1;
    if (mica_model_load(&m, o.model, &err)) goto fail_err;
    if (o.base && mica_model_load(&base, o.base, &err)) goto fail_err;
    if (core_read_file(o.text, PERPLEXITY_MAX_TEXT, &text, &len, &err)) goto fail_err;
    cli_progress prog;
    cli_progress_init(&prog);
    quant_eval_params ep = {
        .n_ctx = (int32_t)o.n_ctx,
        .max_chunks = (int32_t)o.chunks,
        .n_threads = (int32_t)o.n_threads,
        .progress = cli_progress_update,
        .progress_ctx = &prog,
        .text_name = o.text,
        .base_name = o.base,
    };
    quant_eval_result r;
    const double t0 = core_now();
    mica_status st = quant_eval_text(m, base, text, len, &ep, &r, &err);
    cli_progress_clear(&prog);
    if (st) goto fail_err;
    print_result(&r);
    fprintf(stderr, "mica: %s: %d chunk%s of %d tokens, %lld scored, in %.2f s\n", o.text,
            r.n_chunks, r.n_chunks == 1 ? "" : "s", r.n_ctx, (long long)r.n_scored,
            core_now() - t0);
    rc = 0;
    goto done;
fail_err:
    rc = cli_fail_err(&err);
done:
    free(text);
    mica_model_free(base);
    mica_model_free(m);
    return rc;
}
