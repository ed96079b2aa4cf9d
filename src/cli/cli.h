/*
 * cli.h - what the subcommands share: the error line format (`mica: <what>: <problem>`),
 * option value parsing with messages that name the option, and the command table.
 */
#ifndef MICA_CLI_H
#define MICA_CLI_H

#include "core/core.h"
#include "mica.h"

#include <stdbool.h>
#include <stdint.h>

/* Prints "mica: <message>\n" to stderr and returns 1 (the exit code for errors). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "mica: <err->msg>" and returns 1. */
int cli_fail_err(const mica_err *err);

/* Option parsing over argv. cli_opt_value takes the value of option argv[*i] (advancing *i)
 * or reports "mica: OPT: missing value". */
typedef struct cli_args {
    int argc;
    char **argv;
    int i;
} cli_args;

bool cli_is(const cli_args *a, const char *short_name, const char *long_name);
const char *cli_value(cli_args *a); /* NULL after printing an error */
bool cli_int(cli_args *a, long lo, long hi, long *out);
bool cli_float(cli_args *a, double lo, double hi, double *out);
bool cli_u64(cli_args *a, uint64_t *out);
bool cli_wants_help(int argc, char **argv);
int cli_unknown(const cli_args *a); /* "mica: CMD: unknown option 'X' (see --help)" */

/* Sampling options (cli_sampling.c): *handled says whether a->argv[a->i] was one; returns 1
 * after printing an error for a bad value. CLI_SAMPLING_HELP documents them for --help. */
int cli_sampling_opt(cli_args *a, mica_sampler_params *sp, bool *handled);
#define CLI_SAMPLING_HELP                                                                          \
    "      --temp T            temperature; 0 = greedy (default 0.8)\n"                            \
    "      --top-k K           keep the K most likely tokens (default 40; 0 = off)\n"              \
    "      --top-p P           nucleus sampling threshold (default 0.95; 1 = off)\n"               \
    "      --min-p P           drop tokens below P x the top probability (default 0.05)\n"         \
    "      --repeat-penalty R  penalise recently seen tokens (default 1.0 = off)\n"                \
    "      --repeat-last-n N   how many recent tokens the penalties consider (default 64)\n"       \
    "      --frequency-penalty F, --presence-penalty P   (default 0)\n"                            \
    "  -s, --seed S            random seed (default 0); the same seed gives the same text\n"

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_lora(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_train(int argc, char **argv);

/* --lora FILE[:SCALE] (cmd_lora.c) for the commands that evaluate a model: cli_lora_opt
 * parses one (*handled as cli_sampling_opt), cli_lora_attach loads them for m and applies
 * them to every sequence of c, cli_loras_free frees them (before the model). The int
 * functions return 1 after printing an error. */
#define CLI_MAX_LORAS 8
typedef struct cli_loras {
    int n;
    char *path[CLI_MAX_LORAS];
    float scale[CLI_MAX_LORAS];
    mica_lora *lora[CLI_MAX_LORAS];
} cli_loras;

int cli_lora_opt(cli_args *a, cli_loras *l, bool *handled);
int cli_lora_load(cli_loras *l, mica_model *m); /* the adapters alone, for a scheduler's requests */
int cli_lora_attach(cli_loras *l, mica_model *m, mica_context *c);
void cli_loras_free(cli_loras *l);
#define CLI_LORA_HELP                                                                              \
    "      --lora FILE[:SCALE] apply a LoRA adapter (llama.cpp GGUF) at SCALE (default 1);\n"      \
    "                          repeatable\n"

/* What every generating command takes (cli_gen.c): -m, -c, -t, the sampling options, --lora,
 * --grammar / --json-schema. cli_gen_opt parses one (*handled as cli_sampling_opt);
 * cli_gen_check checks the whole; cli_gen_open loads the model, makes the context (-c, else
 * the model's training context, at most n_ctx_cap unless that is 0), attaches the adapters and
 * reads the grammar's GBNF into gbnf; cli_gen_grammar makes a fresh grammar from it (NULL when none
 * was asked); cli_gen_close frees what cli_gen_open made. The int functions return 1 after printing
 * an error. */
typedef struct cli_gen_opts {
    const char *model, *grammar_file, *schema_file;
    long n_ctx, n_threads;
    mica_sampler_params sp;
    cli_loras loras;
    core_buf gbnf;
} cli_gen_opts;

int cli_gen_opt(cli_args *a, cli_gen_opts *o, bool *handled);
int cli_gen_check(cli_gen_opts *o, const char *cmd);
int cli_gen_open(cli_gen_opts *o, int32_t n_ctx_cap, mica_model **m, mica_context **c);
int cli_gen_grammar_text(const cli_gen_opts *o, core_buf *out);
int cli_gen_grammar(const cli_gen_opts *o, mica_model *m, mica_grammar **out);
void cli_gen_close(cli_gen_opts *o, mica_model *m, mica_context *c);
#define CLI_GEN_HELP                                                                               \
    CLI_SAMPLING_HELP CLI_LORA_HELP                                                                \
        "      --grammar FILE      constrain the output to a GBNF grammar (llama.cpp's syntax)\n"  \
        "      --json-schema FILE  constrain the output to JSON valid under a JSON schema\n"

/* The embedded default model (cli_default.c): its path, or NULL when it cannot be found;
 * cli_need_default_model sets *model to it when *model is NULL (returns 1 after an error). */
#define CLI_DEFAULT_MODEL_NAME "mica-sensor-moe"
const char *cli_default_model(void);
int cli_need_default_model(const char *cmd, const char **model);

/* --dims KEY=N,... (cli_dims.c) into p, for `mica synth` and `mica train`; without a preset
 * (from_preset false) n_head_kv follows n_head unless given. Returns 1 after an error. */
struct model_synth_params;
int cli_dims(const char *cmd, const char *list, struct model_synth_params *p, bool from_preset);

/* A progress line on stderr, drawn only when stderr is a terminal (cli_progress.c);
 * cli_progress_update has the library's quant_progress_fn signature. */
typedef struct cli_progress {
    bool tty, shown;
    double last;
} cli_progress;

void cli_progress_init(cli_progress *p);
void cli_progress_update(void *ctx, const char *what, const char *item, int64_t done,
                         int64_t total);
void cli_progress_clear(cli_progress *p);

#endif
