/*
 * cmd_synth.c - `mica synth`: writes a random-weight model of a chosen architecture and
 * shape (a preset of llamacpp-bench.md or --dims) through model_synth_write (src/model),
 * with llama-quantize's type mix for block types unless --pure. Progress on stderr when it
 * is a terminal; a one-line summary (parameters, bytes, types) on stderr at the end, read
 * back from the file written; nothing on stdout except with --dry-run.
 */
#include "cli.h"
#include "engine/speed.h"
#include "model/model_synth.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char synth_help[] =
    "usage: mica synth [--arch ARCH] (--preset NAME | --dims LIST) --type TYPE [options] -o FILE\n"
    "\n"
    "Writes a model with random weights (for benchmarks and tests: the weights mean nothing,\n"
    "the shapes are real). The vocabulary is 3 special tokens, the 256 byte tokens and filler\n"
    "pieces (SentencePiece-style), so every text tokenizes. FILE is written as FILE.tmp and\n"
    "renamed when complete.\n"
    "\n"
    "      --arch ARCH     llama (untied output, rope base 1e4, eps 1e-5; with n_expert: a\n"
    "                      Mixtral-style MoE) or qwen2 (q/k/v biases, tied output, rope base\n"
    "                      1e6, eps 1e-6); default: the preset's, else llama\n"
    "      --preset NAME   %s: the shapes of llama.cpp's speed baseline\n"
    "                      (big-qwen2-0.5b-shape, big-llama-moe-8x in llamacpp-bench.md)\n"
    "      --dims LIST     the shape as KEY=N pairs, e.g.\n"
    "                      n_embd=64,n_layer=2,n_head=4,n_head_kv=2,n_ff=128,n_vocab=512\n"
    "                      [,n_expert=4,n_expert_used=2]; keys: n_vocab (>= 259), n_ctx,\n"
    "                      n_embd, n_layer, n_head, n_head_kv, n_ff (per expert with\n"
    "                      experts), n_expert, n_expert_used. Keys not given keep the preset's\n"
    "                      values, else n_vocab=320,n_ctx=256,n_embd=64,n_layer=2,n_head=4,\n"
    "                      n_head_kv=n_head,n_ff=128, no experts\n"
    "      --type TYPE     %s; block types follow llama-quantize's\n"
    "                      mix from an F16 file (as `mica quantize`), e.g. a tied or output\n"
    "                      matrix at least Q6_K/Q8_0, 8 experts: attn_k/attn_v Q8_0\n"
    "      --pure          every matrix in TYPE instead (norms, biases, router stay F32)\n"
    "  -s, --seed S        random seed (default 1); the same seed gives the same bytes\n"
    "  -o, --output FILE   where to write the model\n"
    "  -t, --threads N     threads of the quantization (default: all CPUs)\n"
    "      --dry-run       print the shape and parameter count; write nothing\n";

typedef struct synth_opts {
    const char *arch, *preset, *dims, *type_name, *out;
    uint64_t seed;
    long n_threads;
    bool pure, dry_run, seed_set;
} synth_opts;

static int synth_parse(int argc, char **argv, synth_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        const char **str = cli_is(&a, NULL, "--arch")     ? &o->arch
                           : cli_is(&a, NULL, "--preset") ? &o->preset
                           : cli_is(&a, NULL, "--dims")   ? &o->dims
                           : cli_is(&a, NULL, "--type")   ? &o->type_name
                           : cli_is(&a, "-o", "--output") ? &o->out
                                                          : NULL;
        if (str) {
            if (!(*str = cli_value(&a))) return 1;
        } else if (cli_is(&a, "-s", "--seed")) {
            if (!cli_u64(&a, &o->seed)) return 1;
            o->seed_set = true;
        } else if (cli_is(&a, "-t", "--threads")) {
            if (!cli_int(&a, 1, 1024, &o->n_threads)) return 1;
        } else if (cli_is(&a, NULL, "--pure")) {
            o->pure = true;
        } else if (cli_is(&a, NULL, "--dry-run")) {
            o->dry_run = true;
        } else {
            return cli_unknown(&a);
        }
    }
    if (!o->preset && !o->dims) return cli_fail("synth: --preset or --dims is required");
    if (!o->type_name) return cli_fail("synth: --type is required");
    if (!o->out && !o->dry_run) return cli_fail("synth: -o FILE is required");
    return 0;
}

/* ---- running ---------------------------------------------------------------------------- */

static int synth_params(const synth_opts *o, model_synth_params *p)
{
    mica_err err;
    *p = model_synth_default_params();
    if (o->arch && model_synth_arch_from_name(p, o->arch, &err))
        return cli_fail("synth: --arch: %s", err.msg);
    if (o->preset) {
        const model_synth_arch asked = p->arch;
        if (model_synth_preset(p, o->preset, &err)) return cli_fail("synth: --preset: %s", err.msg);
        if (o->arch && p->arch != asked)
            return cli_fail("synth: --preset %s is a %s model, not %s", o->preset,
                            model_synth_arch_name(p->arch), o->arch);
    }
    if (o->dims && cli_dims("synth", o->dims, p, o->preset != NULL)) return 1;
    if (quant_type_from_name(o->type_name, &p->type, &err))
        return cli_fail("synth: --type: %s", err.msg);
    p->llama_mix = !o->pure;
    p->n_threads = (int)o->n_threads;
    if (o->seed_set) p->seed = o->seed;
    if (model_synth_check(p, &err)) return cli_fail("synth: %s", err.msg);
    return 0;
}

static void synth_progress(void *ctx, int64_t done, int64_t total)
{
    cli_progress_update(ctx, "synth", NULL, done, total);
}

/* "169 Q8_0, 121 F32" */
static void synth_type_counts(const speed_model_info *info, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (uint32_t t = 0; t < GGUF_T_COUNT && o < cap; t++)
        if (info->n_of_type[t])
            o += (size_t)snprintf(buf + o, cap - o, "%s%d %s", o ? ", " : "", info->n_of_type[t],
                                  gguf_ttype_name(t));
}

static void synth_print_shape(const model_synth_params *p)
{
    int64_t total, active;
    model_synth_count(p, &total, &active);
    printf("%s n_vocab=%d n_ctx=%d n_embd=%d n_layer=%d n_head=%d n_head_kv=%d n_ff=%d "
           "n_expert=%d n_expert_used=%d tied=%d qkv_bias=%d rope_base=%g norm_eps=%g\n"
           "params %lld (%.2f M), active per token %lld (%.2f M)\n",
           model_synth_arch_name(p->arch), p->n_vocab, p->n_ctx, p->n_embd, p->n_layer, p->n_head,
           p->n_head_kv, p->n_ff, p->n_expert, p->n_expert_used, p->tied, p->qkv_bias,
           (double)p->rope_base, (double)p->norm_eps, (long long)total, total / 1e6,
           (long long)active, active / 1e6);
}

static int synth_write(const synth_opts *o, model_synth_params *p)
{
    cli_progress prog;
    cli_progress_init(&prog);
    p->progress = synth_progress;
    p->progress_ctx = &prog;
    mica_err err;
    const double t0 = core_now();
    mica_status st = model_synth_write(o->out, p, &err);
    cli_progress_clear(&prog);
    if (st) return cli_fail_err(&err);
    speed_model_info info;
    if (speed_model_info_read(o->out, &info, &err)) return cli_fail_err(&err);
    char counts[256];
    synth_type_counts(&info, counts, sizeof counts);
    fprintf(stderr,
            "mica: wrote %s: %s%s%s, %s (%s%s), %lld params (%.2f M), %llu bytes of tensors "
            "(%.2f MiB) in %.1f s\n",
            o->out, info.arch, o->preset ? " " : "", o->preset ? o->preset : "",
            gguf_ttype_name(info.type), counts,
            p->llama_mix && !quant_type_is_float(p->type) ? "; llama-quantize's mix" : "",
            (long long)info.n_params, info.n_params / 1e6, (unsigned long long)info.size_bytes,
            info.size_bytes / 1048576.0, core_now() - t0);
    return 0;
}

int cmd_synth(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        char presets[128], types[256];
        model_synth_preset_names(presets, sizeof presets);
        quant_type_names(types, sizeof types);
        printf(synth_help, presets, types);
        return 0;
    }
    synth_opts o = {0};
    if (synth_parse(argc, argv, &o)) return 1;
    model_synth_params p;
    if (synth_params(&o, &p)) return 1;
    if (o.dry_run) {
        synth_print_shape(&p);
        return 0;
    }
    return synth_write(&o, &p);
}
