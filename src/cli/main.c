/*
 * main.c - the `mica` command: dispatches to one subcommand per file in src/cli/.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

static const cli_command commands[] = {
    {"info", cmd_info, "print a GGUF file's metadata and tensor table"},
    {"tokenize", cmd_tokenize, "turn text into token ids"},
    {"run", cmd_run, "generate text from a prompt"},
    {"chat", cmd_chat, "talk with a model: its chat template, history, /reset"},
    {"data", cmd_data, "write a synthetic dataset (sensor analysis) as JSON lines"},
    {"tokenizer", cmd_tokenizer, "train a byte-level BPE vocabulary on text (tokenizer train)"},
    {"logits", cmd_logits, "write the logits of a token sequence to a file"},
    {"quantize", cmd_quantize, "quantize a model (llama-quantize's mix, F16 for chosen tensors)"},
    {"perplexity", cmd_perplexity, "perplexity of a text, and KL divergence from a base model"},
    {"lora", cmd_lora, "merge LoRA adapters into a model (llama.cpp's adapter GGUF)"},
    {"synth", cmd_synth, "write a random-weight model of a given architecture and shape"},
    {"bench", cmd_bench, "prompt and decode tokens per second, like llama-bench"},
#ifdef MICA_HAVE_SERVER
    {"serve", cmd_serve, "serve models over an OpenAI-compatible HTTP API"},
    {"keys", cmd_keys, "add, list or revoke the gateway's API keys"},
    {"logs", cmd_logs, "list, show, export or purge the gateway's request log"},
    {"template", cmd_template, "render a chat template over a conversation (JSON)"},
    {"eval", cmd_eval, "accuracy of a model on labelled examples (JSON lines)"},
    {"finetune", cmd_finetune, "train a LoRA adapter on prompt/completion records (JSON lines)"},
    {"train", cmd_train, "train a model from scratch (records or text, a trained vocabulary)"},
#endif
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mica <command> [options]   (mica <command> --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    return cli_fail("unknown command '%s' (see mica --help)", argv[1]);
}
