/*
 * cli_train.h - what `mica train` and `mica finetune` share (cli_train.c): training data
 * tokenized into examples (JSON-lines records, or plain text cut into windows), the options
 * of the training loop, and the loop itself with its progress line, validation loss,
 * checkpoints, --resume and a clean stop on Ctrl-C. Needs Jansson and src/template.
 */
#ifndef MICA_CLI_TRAIN_H
#define MICA_CLI_TRAIN_H

#include "cli.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"
#include "train/train.h"

/* How records become tokens. */
typedef struct ct_text {
    const char *cmd; /* "train" or "finetune", for messages */
    const tok_vocab *vocab;
    const tmpl_chat *fmt; /* the model's chat format */
    const char *format;   /* "chat", "raw", or NULL: chat when fmt is the model's own
                             template or the records have messages (as `mica eval`) */
    int32_t max_tok;      /* longer records are skipped; text windows have this length */
} ct_text;

/* The chat format of a vocabulary file or model f (its tokenizer.chat_template, else a
 * built-in format; BOS/EOS texts from v). Returns 1 after printing an error. */
int ct_chat_format(const tok_vocab *v, const gguf_file *f, tmpl_chat **out);

/* One tokenized example: ids[0..n), the first n_prompt of them not learnt. */
typedef struct ct_example {
    int32_t *ids;
    int32_t n, n_prompt;
} ct_example;

typedef struct ct_set {
    ct_example *ex;
    int32_t n, cap;
    int32_t n_skipped, n_tok_max;
    int64_t n_target_tokens;
    bool chat; /* the records were rendered in the chat format */
} ct_set;

/* path ending in .jsonl: one record a line ({"prompt", "completion"} or {"messages"}; errors
 * name path:line); any other file: its text with BOS, cut into windows of max_tok tokens
 * that are learnt whole. Returns 1 after printing an error. */
int ct_load(const ct_text *t, const char *path, ct_set *s);
void ct_set_free(ct_set *s);

typedef struct ct_opts {
    long epochs, batch, threads, warmup, save_every;
    double lr, weight_decay;
    uint64_t seed;
    const char *checkpoint; /* NULL: OUTPUT.ckpt, removed when the run completes */
    const char *resume;
} ct_opts;

/* Parses one of the loop's options (*handled as cli_sampling_opt); returns 1 after an error. */
int ct_opt(cli_args *a, ct_opts *o, bool *handled);
#define CT_HELP                                                                                    \
    "      --epochs N        passes over the training data\n"                                      \
    "      --lr LR           peak learning rate (warmup, then cosine decay to 0)\n"                \
    "      --warmup N        steps of linear warmup (default: 5% of the steps)\n"                  \
    "      --weight-decay W  AdamW's decoupled weight decay on matrices\n"                         \
    "      --batch N         examples per step\n"                                                  \
    "      --save-every N    write a checkpoint every N steps (default 100) and at the end\n"      \
    "                        of each epoch\n"                                                      \
    "      --checkpoint FILE where checkpoints go (default: OUTPUT.ckpt, removed when the\n"       \
    "                        run completes)\n"                                                     \
    "      --resume FILE     continue an interrupted run from its checkpoint (same data and\n"     \
    "                        options: the result equals an uninterrupted run's)\n"                 \
    "  -s, --seed S          shuffling, initialisation and dropout (default 1)\n"                  \
    "  -t, --threads N       threads (default: all CPUs)\n"                                        \
    "\n"                                                                                           \
    "Ctrl-C stops after the current step and writes a checkpoint to resume from.\n"

/* Trains tm on train (validation loss on val, which may be NULL, after each epoch), then
 * returns 0; 1 after printing an error; 130 when interrupted (a checkpoint was written).
 * output names the default checkpoint. */
int ct_run(const ct_opts *o, const char *cmd, const char *output, train_model *tm,
           const ct_set *train, const ct_set *val);

#endif
