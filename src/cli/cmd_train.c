/*
 * cmd_train.c - `mica train`: a model trained from scratch on a vocabulary made by
 * `mica tokenizer train`: the shape from --arch/--dims (as `mica synth`), fresh weights
 * (train_model_init), the loop shared with `mica finetune` (cli_train.c), and an F32 GGUF
 * with the vocabulary's keys (chat template included) that `mica run` and `mica quantize`
 * take. Does not own: the training passes (train/), the vocabulary (tokenizer/).
 */
#include "cli.h"
#include "cli_train.h"
#include "model/model.h"
#include "model/model_synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char train_help[] =
    "usage: mica train [--arch ARCH] --dims LIST --tokenizer VOCAB.gguf --data FILE -o MODEL.gguf\n"
    "                  [options]\n"
    "\n"
    "Trains a model from random weights. Data: JSON lines of {\"prompt\", \"completion\"} or\n"
    "{\"messages\"} (learnt on the answers, prompts rendered in the vocabulary's chat format\n"
    "as `mica eval` and the gateway render them), or any other file as plain text (cut into\n"
    "windows of n_ctx tokens, every token learnt). The model is written in F32 with the\n"
    "vocabulary's keys; `mica quantize` makes it smaller.\n"
    "\n"
    "      --arch ARCH       llama (with n_expert: Mixtral-style MoE) or qwen2 (default llama)\n"
    "      --dims LIST       the shape as KEY=N pairs, as `mica synth`: n_ctx, n_embd,\n"
    "                        n_layer, n_head, n_head_kv, n_ff, n_expert, n_expert_used\n"
    "                        (n_vocab is the vocabulary's; n_ctx bounds the examples)\n"
    "      --tokenizer FILE  the vocabulary (`mica tokenizer train`)\n"
    "      --init MODEL      continue training MODEL (F32 or any type mica reads) instead of\n"
    "                        fresh weights: its shape and vocabulary, no --arch/--dims\n"
    "      --data FILE       training data\n"
    "      --val FILE        validation data: its loss is printed after each epoch\n"
    "  -o, --output FILE     where to write the model (FILE.tmp, renamed when complete)\n"
    "      --format F        chat or raw for records (default: chat when the vocabulary has\n"
    "                        a chat template or the records have messages)\n"
    "      --moe-aux C       weight of the experts' load-balancing loss (default 0.01)\n" CT_HELP
    "\n"
    "Defaults: --epochs 1, --lr 1e-3, --batch 16, --weight-decay 0.1.\n";

typedef struct train_opts {
    const char *arch, *dims, *vocab, *init, *data, *val, *out, *format;
    double moe_aux;
    ct_opts loop;
} train_opts;

static int train_parse(int argc, char **argv, train_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        const char **str = cli_is(&a, NULL, "--arch")        ? &o->arch
                           : cli_is(&a, NULL, "--dims")      ? &o->dims
                           : cli_is(&a, NULL, "--tokenizer") ? &o->vocab
                           : cli_is(&a, NULL, "--init")      ? &o->init
                           : cli_is(&a, NULL, "--data")      ? &o->data
                           : cli_is(&a, NULL, "--val")       ? &o->val
                           : cli_is(&a, "-o", "--output")    ? &o->out
                           : cli_is(&a, NULL, "--format")    ? &o->format
                                                             : NULL;
        bool ok = true, handled;
        if (str)
            ok = (*str = cli_value(&a)) != NULL;
        else if (cli_is(&a, NULL, "--moe-aux"))
            ok = cli_float(&a, 0.0, 100.0, &o->moe_aux);
        else if (ct_opt(&a, &o->loop, &handled))
            return 1;
        else if (!handled)
            return cli_unknown(&a);
        if (!ok) return 1;
    }
    if (o->init && (o->dims || o->arch || o->vocab))
        return cli_fail("train: --init takes the shape and vocabulary from the model: no --arch, "
                        "--dims or --tokenizer");
    if (!o->init && !o->dims)
        return cli_fail("train: --dims is required (e.g. n_embd=128,n_layer=4,n_head=4)");
    if (!o->init && !o->vocab)
        return cli_fail("train: --tokenizer VOCAB.gguf is required (make one with `mica "
                        "tokenizer train`)");
    if (!o->data) return cli_fail("train: --data FILE is required");
    if (!o->out) return cli_fail("train: -o MODEL.gguf is required");
    if (o->format && strcmp(o->format, "chat") && strcmp(o->format, "raw"))
        return cli_fail("train: --format: expected chat or raw, not '%s'", o->format);
    return 0;
}

/* The shape: --arch's defaults, --dims, the vocabulary's size. */
static int train_shape_of(const train_opts *o, int32_t n_vocab, train_shape *s)
{
    mica_err err;
    model_synth_params p = model_synth_default_params();
    p.type = GGUF_T_F32;
    if (o->arch && model_synth_arch_from_name(&p, o->arch, &err))
        return cli_fail("train: --arch: %s", err.msg);
    if (cli_dims("train", o->dims, &p, false)) return 1;
    p.n_vocab = n_vocab;
    if (model_synth_check(&p, &err)) return cli_fail("train: %s", err.msg);
    *s = (train_shape){model_synth_arch_name(p.arch),
                       p.n_vocab,
                       p.n_ctx,
                       p.n_embd,
                       p.n_layer,
                       p.n_head,
                       p.n_head_kv,
                       p.n_ff,
                       p.n_expert,
                       p.n_expert_used,
                       p.tied,
                       p.qkv_bias,
                       p.rope_base,
                       p.norm_eps};
    return 0;
}

static void train_print_shape(const train_model *tm)
{
    int64_t n = 0;
    for (int i = 0; i < tm->n_tensors; i++) n += tm->tensors[i]->n;
    const model_hparams *hp = &tm->hp;
    fprintf(stderr, "train: %s, %d layers, n_embd %d, %d heads (%d kv), n_ff %d", tm->arch->name,
            hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv,
            hp->n_expert ? hp->n_ff_exp : hp->n_ff);
    if (hp->n_expert) fprintf(stderr, ", %d experts (top %d)", hp->n_expert, hp->n_expert_used);
    fprintf(stderr, ", vocabulary %d: %.2fM parameters\n", hp->n_vocab, (double)n / 1e6);
}

/* The model to train: fresh weights of the shape, or init's (then n_ctx is its own). */
static int train_model_of(const train_opts *o, const model *init, int32_t n_vocab, train_model **tm,
                          int32_t *n_ctx)
{
    mica_err err;
    if (init) {
        *n_ctx = init->hp.n_ctx_train;
        return train_model_from_model(tm, init, &err) ? cli_fail_err(&err) : 0;
    }
    train_shape shape;
    if (train_shape_of(o, n_vocab, &shape)) return 1;
    *n_ctx = shape.n_ctx;
    return train_model_init(tm, &shape, o->loop.seed, &err) ? cli_fail_err(&err) : 0;
}

/* vf and v: the vocabulary file, or init's file and vocabulary. */
static int train_with(const train_opts *o, gguf_file *vf, tok_vocab *v, const model *init)
{
    tmpl_chat *fmt = NULL;
    train_model *tm = NULL;
    ct_set data = {0}, val = {0};
    int32_t n_ctx = 0;
    mica_err err;
    int rc = ct_chat_format(v, vf, &fmt);
    if (!rc) rc = train_model_of(o, init, tok_n_vocab(v), &tm, &n_ctx);
    const ct_text text = {"train", v, fmt, o->format, n_ctx};
    if (!rc) rc = ct_load(&text, o->data, &data) || (o->val && ct_load(&text, o->val, &val));
    if (!rc) {
        tm->moe_aux_coef = (float)o->moe_aux;
        train_print_shape(tm);
        fprintf(stderr, "train: %d examples (%lld learnt tokens, %s), %d validation examples\n",
                data.n, (long long)data.n_target_tokens, data.chat ? "chat" : "raw", val.n);
        rc = ct_run(&o->loop, "train", o->out, tm, &data, o->val ? &val : NULL);
    }
    if (!rc && train_model_write(tm, o->out, vf, &err)) rc = cli_fail_err(&err);
    if (!rc) fprintf(stderr, "train: wrote %s\n", o->out);
    train_model_free(tm);
    ct_set_free(&data);
    ct_set_free(&val);
    tmpl_chat_free(fmt);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(train_help, stdout);
        return 0;
    }
    train_opts o = {.moe_aux = 0.01,
                    .loop = {.epochs = 1,
                             .batch = 16,
                             .threads = core_n_cpus(),
                             .warmup = -1,
                             .save_every = 100,
                             .lr = 1e-3,
                             .weight_decay = 0.1,
                             .seed = 1}};
    if (train_parse(argc, argv, &o)) return 1;
    mica_err err;
    if (o.init) {
        model *m = NULL;
        if (model_load(&m, o.init, &err)) return cli_fail_err(&err);
        const int rc = train_with(&o, m->gguf, m->vocab, m);
        model_free(m);
        return rc;
    }
    gguf_file *vf = NULL;
    tok_vocab *v = NULL;
    if (gguf_open(&vf, o.vocab, &err) || tok_load(&v, vf, &err)) {
        gguf_close(vf);
        return cli_fail_err(&err);
    }
    const int rc = train_with(&o, vf, v, NULL);
    tok_free(v);
    gguf_close(vf);
    return rc;
}
