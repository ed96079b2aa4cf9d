/*
 * cmd_finetune.c - `mica finetune`: LoRA fine-tuning of a model on JSON-lines records with
 * src/train (the base frozen, the loss on the answer's tokens only) through the loop shared
 * with `mica train` (cli_train.c), the adapter written in llama.cpp's GGUF LoRA format.
 * Does not own: the training passes (train/), the adapter format (model/lora_write.c).
 */
#include "cli.h"
#include "cli_train.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char finetune_help[] =
    "usage: mica finetune -m BASE.gguf --train FILE.jsonl -o ADAPTER.gguf [options]\n"
    "\n"
    "Trains a LoRA adapter on records {\"prompt\": ..., \"completion\": ...} or\n"
    "{\"messages\": [...]} (the last message is the assistant's answer), one JSON object a\n"
    "line. Prompts are rendered as `mica eval` and the gateway render them (the model's chat\n"
    "format when it has a template, else raw); the loss covers the answer's tokens (and the\n"
    "end of the turn) only. The base stays frozen (quantized bases are dequantized to F32\n"
    "for training). The adapter is llama.cpp's GGUF LoRA format: `mica run --lora\n"
    "ADAPTER.gguf` applies it.\n"
    "\n"
    "  -m, --model FILE      the base model (llama or qwen2, dense or MoE)\n"
    "      --train FILE      training records (JSON lines)\n"
    "      --val FILE        validation records: their loss is printed after each epoch\n"
    "  -o, --output FILE     where to write the adapter\n"
    "      --lora-r N        rank (default 16)\n"
    "      --lora-alpha A    scale alpha / r (default 32)\n"
    "      --lora-dropout P  dropout on the adapters' input (default 0.1)\n"
    "      --target LIST     adapted weights: q,k,v,o,gate,up,down,output; query_key_value =\n"
    "                        q,k,v (default q,k,v,o; on MoE models gate,up,down adapt every\n"
    "                        expert; output lets the adapter write tokens the base never\n"
    "                        wrote)\n"
    "      --format F        chat or raw (default: chat when the model has a chat template\n"
    "                        or the records have messages)\n"
    "      --ctx N           longest record in tokens; longer ones are skipped (default "
    "512)\n" CT_HELP "\n"
    "Defaults: --epochs 3, --lr 2e-4, --batch 8, --weight-decay 0.\n";

typedef struct ft_opts {
    const char *model, *train, *val, *out, *targets, *format;
    long rank, ctx;
    double alpha, dropout;
    ct_opts loop;
} ft_opts;

static int ft_parse(int argc, char **argv, ft_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        const char **str = cli_is(&a, "-m", "--model")    ? &o->model
                           : cli_is(&a, NULL, "--train")  ? &o->train
                           : cli_is(&a, NULL, "--val")    ? &o->val
                           : cli_is(&a, "-o", "--output") ? &o->out
                           : cli_is(&a, NULL, "--target") ? &o->targets
                           : cli_is(&a, NULL, "--format") ? &o->format
                                                          : NULL;
        bool ok = true, handled;
        if (str)
            ok = (*str = cli_value(&a)) != NULL;
        else if (cli_is(&a, NULL, "--lora-r"))
            ok = cli_int(&a, 1, 4096, &o->rank);
        else if (cli_is(&a, NULL, "--lora-alpha"))
            ok = cli_float(&a, 0.0, 1e6, &o->alpha);
        else if (cli_is(&a, NULL, "--lora-dropout"))
            ok = cli_float(&a, 0.0, 0.99, &o->dropout);
        else if (cli_is(&a, NULL, "--ctx"))
            ok = cli_int(&a, 2, 1 << 20, &o->ctx);
        else if (ct_opt(&a, &o->loop, &handled))
            return 1;
        else if (!handled)
            return cli_unknown(&a);
        if (!ok) return 1;
    }
    if (!o->model) return cli_fail("finetune: -m BASE.gguf is required");
    if (!o->train) return cli_fail("finetune: --train FILE.jsonl is required");
    if (!o->out) return cli_fail("finetune: -o ADAPTER.gguf is required");
    if (o->format && strcmp(o->format, "chat") && strcmp(o->format, "raw"))
        return cli_fail("finetune: --format: expected chat or raw, not '%s'", o->format);
    return 0;
}

static int ft_adapt(const ft_opts *o, const model *m, train_model **tm)
{
    mica_err err;
    if (train_model_from_model(tm, m, &err)) return cli_fail_err(&err);
    const train_lora_cfg lc = {o->targets, (int32_t)o->rank, (float)o->alpha, (float)o->dropout,
                               o->loop.seed};
    if (train_lora_add(*tm, &lc, &err)) return cli_fail("%s: %s", o->model, err.msg);
    return 0;
}

int cmd_finetune(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(finetune_help, stdout);
        return 0;
    }
    ft_opts o = {.targets = "q,k,v,o",
                 .rank = 16,
                 .ctx = 512,
                 .alpha = 32.0,
                 .dropout = 0.1,
                 .loop = {.epochs = 3,
                          .batch = 8,
                          .threads = core_n_cpus(),
                          .warmup = -1,
                          .save_every = 100,
                          .lr = 2e-4,
                          .seed = 1}};
    if (ft_parse(argc, argv, &o)) return 1;
    mica_err err;
    model *m = NULL;
    tmpl_chat *fmt = NULL;
    train_model *tm = NULL;
    ct_set train = {0}, val = {0};
    int rc = 1;
    if (model_load(&m, o.model, &err)) {
        cli_fail_err(&err);
        goto done;
    }
    if (ct_chat_format(m->vocab, m->gguf, &fmt)) goto done;
    const ct_text text = {"finetune", m->vocab, fmt, o.format,
                          (int32_t)(o.ctx < m->hp.n_ctx_train ? o.ctx : m->hp.n_ctx_train)};
    if (ct_load(&text, o.train, &train) || (o.val && ct_load(&text, o.val, &val))) goto done;
    fprintf(stderr,
            "finetune: %d training records (%lld answer tokens, %s format), %d validation "
            "records\n",
            train.n, (long long)train.n_target_tokens, train.chat ? "chat" : "raw", val.n);
    if (ft_adapt(&o, m, &tm)) goto done;
    rc = ct_run(&o.loop, "finetune", o.out, tm, &train, o.val ? &val : NULL);
    if (rc) goto done;
    if (train_lora_write(tm, o.out, (float)o.alpha, &err)) {
        rc = cli_fail_err(&err);
        goto done;
    }
    fprintf(stderr, "finetune: wrote %s\n", o.out);
done:
    train_model_free(tm);
    ct_set_free(&train);
    ct_set_free(&val);
    tmpl_chat_free(fmt);
    model_free(m);
    return rc;
}
