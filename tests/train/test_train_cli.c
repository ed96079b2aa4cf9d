/*
 * test_train_cli.c - `mica train` and the loop it shares with `mica finetune`
 * (src/cli/cmd_train.c, cli_train.c), end to end through the binary:
 *  - a model trained from scratch on records, in the vocabulary's chat format, answers them
 *    under `mica eval` (inference reads back what training learnt, template included);
 *  - a run interrupted with SIGINT writes a checkpoint, exits 130, and `--resume` finishes
 *    with a model byte-identical to an uninterrupted run's;
 *  - `mica train --init` continues a model; `mica finetune` takes {"messages"} records;
 *  - LoRA learns a rule the base does not know: on stories260K, 500 "Number N is" -> odd/even
 *    examples raise held-out accuracy (200 new numbers) from the base's to at least 95 %
 *    (metric label, the first sentence: stories260K never saw its EOS token, whose output
 *    row an adapter of the layers cannot raise, so its answers run on after the period);
 *  - bad input: a missing vocabulary, an unknown --dims key, a malformed line (FILE:LINE).
 * Skips visibly without Jansson (no train/eval commands) or without ../shared (stories260K).
 */
#define _GNU_SOURCE /* wait4 in cli_run.h */
#include "cli/cli_run.h"

#include <stdlib.h>

#define TINY_DIMS "n_ctx=48,n_embd=32,n_layer=1,n_head=2,n_ff=64"

static void run_ok(const char *const *args)
{
    run_result r = run_mica(args);
    if (r.status != 0) fail_msg("mica %s: status %d: %s", args[0], r.status, r.err);
    run_free(&r);
}

/* The percentage `mica eval` prints for metric. */
static double eval_accuracy(const char *const *args, const char *metric)
{
    run_result r = run_mica(args);
    if (r.status != 0) fail_msg("eval: status %d: %s", r.status, r.err);
    const double pct = run_eval_percent(&r, metric);
    run_free(&r);
    return pct;
}

typedef struct files {
    char data[512], vocab[512], model[512], model2[512], ckpt[512], log[512];
} files;

/* Eight records of made-up facts, and a vocabulary trained on them. */
static void make_data(files *f)
{
    run_tmp_path(f->data, sizeof f->data, "tr", "data.jsonl");
    run_tmp_path(f->vocab, sizeof f->vocab, "tr", "vocab.gguf");
    run_tmp_path(f->model, sizeof f->model, "tr", "model.gguf");
    run_tmp_path(f->model2, sizeof f->model2, "tr", "model2.gguf");
    run_tmp_path(f->ckpt, sizeof f->ckpt, "tr", "run.ckpt");
    run_tmp_path(f->log, sizeof f->log, "tr", "run.log");
    static const char *const words[] = {"amber", "basil", "cedar", "dune",
                                        "ember", "fjord", "grove", "heath"};
    char buf[2048] = "";
    for (int i = 0; i < 8; i++) {
        char line[160];
        snprintf(line, sizeof line, "{\"prompt\": \"code %d\", \"completion\": \"%s %s\"}\n", i,
                 words[i], words[(i * 3 + 1) % 8]);
        strcat(buf, line);
    }
    run_write_text(f->data, buf);
    const char *args[] = {"tokenizer", "train", "--vocab", "300", "-o", f->vocab, f->data, NULL};
    run_ok(args);
}

static void cleanup(const files *f)
{
    unlink(f->data);
    unlink(f->vocab);
    unlink(f->model);
    unlink(f->model2);
    unlink(f->ckpt);
    unlink(f->log);
}

static void test_train_learns_records(void **state)
{
    (void)state;
    run_skip_without("train");
    files f;
    make_data(&f);
    const char *train[] = {"train",  "--dims",   TINY_DIMS, "--tokenizer", f.vocab,
                           "--data", f.data,     "--val",   f.data,        "-o",
                           f.model,  "--epochs", "120",     "--batch",     "8",
                           "--lr",   "1e-2",     "-t",      "2",           NULL};
    run_result r = run_mica(train);
    if (r.status != 0) fail_msg("status %d: %s", r.status, r.err);
    assert_non_null(strstr(r.err, "chat"));
    assert_non_null(strstr(r.err, "epoch 120/120"));
    run_free(&r);
    char ckpt[600];
    snprintf(ckpt, sizeof ckpt, "%s.ckpt", f.model);
    assert_false(tu_exists(ckpt)); /* the default checkpoint goes when the run completes */
    const char *eval[] = {"eval",  "-m", f.model, "--data", f.data, "--metric",
                          "exact", "-n", "8",     "-t",     "2",    NULL};
    assert_true(eval_accuracy(eval, "exact") == 100.0);
    cleanup(&f);
}

/* Starts mica in the background with stderr into log. */
static pid_t spawn_mica(const char *const *args, const char *log)
{
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        const char *argv[32] = {run_bin()};
        for (int i = 0; args[i] && i < 30; i++) argv[i + 1] = args[i];
        execv(run_bin(), (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void test_resume_equals_uninterrupted(void **state)
{
    (void)state;
    run_skip_without("train");
    files f;
    make_data(&f);
#define RUN_ARGS(out)                                                                              \
    "train", "--dims", TINY_DIMS, "--tokenizer", f.vocab, "--data", f.data, "-o", (out),           \
        "--epochs", "400", "--batch", "4", "--lr", "3e-3", "-t", "2", "--checkpoint", f.ckpt,      \
        "--save-every", "5"
    const char *whole[] = {RUN_ARGS(f.model), NULL};
    run_ok(whole);
    unlink(f.ckpt);
    const char *first[] = {RUN_ARGS(f.model2), NULL};
    const pid_t pid = spawn_mica(first, f.log);
    for (int i = 0; i < 20000 && !tu_exists(f.ckpt); i++) usleep(1000);
    kill(pid, SIGINT);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 130);
    assert_true(tu_file_has(f.log, "continue with --resume"));
    assert_false(tu_exists(f.model2));
    const char *rest[] = {RUN_ARGS(f.model2), "--resume", f.ckpt, NULL};
    run_result r = run_mica(rest);
    if (r.status != 0) fail_msg("resume: status %d: %s", r.status, r.err);
    assert_non_null(strstr(r.err, "resuming at step"));
    run_free(&r);
    size_t n1, n2;
    char *a = tu_read_file(f.model, &n1), *b = tu_read_file(f.model2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1);
    free(a);
    free(b);
    cleanup(&f);
#undef RUN_ARGS
}

static void test_finetune_messages(void **state)
{
    (void)state;
    run_skip_without("train");
    files f;
    make_data(&f);
    const char *train[] = {"train", "--dims", TINY_DIMS,  "--tokenizer", f.vocab, "--data", f.data,
                           "-o",    f.model,  "--epochs", "2",           "-t",    "2",      NULL};
    run_ok(train);
    const char *more[] = {"train", "--init", f.model, "--data", f.data,
                          "-o",    f.model2, "-t",    "2",      NULL};
    run_result r = run_mica(more);
    if (r.status != 0) fail_msg("--init: status %d: %s", r.status, r.err);
    assert_non_null(strstr(r.err, "train: wrote"));
    run_free(&r);
    unlink(f.model2);
    run_write_text(f.data, "{\"messages\": [{\"role\": \"user\", \"content\": \"code 1\"}, "
                           "{\"role\": \"assistant\", \"content\": \"basil\"}]}\n"
                           "{\"messages\": [{\"role\": \"user\", \"content\": \"code 2\"}]}\n");
    const char *ft[] = {"finetune", "-m",       f.model, "--train", f.data, "-o",
                        f.model2,   "--lora-r", "4",     "-t",      "2",    NULL};
    r = run_mica(ft);
    assert_int_equal(r.status, 1); /* the second record has no answer */
    char want[700];
    snprintf(want, sizeof want, "%s:2: the last message must be the assistant's answer", f.data);
    if (!strstr(r.err, want)) fail_msg("stderr: %s", r.err);
    run_free(&r);
    run_write_text(f.data, "{\"messages\": [{\"role\": \"user\", \"content\": \"code 1\"}, "
                           "{\"role\": \"assistant\", \"content\": \"basil\"}]}\n");
    r = run_mica(ft);
    if (r.status != 0) fail_msg("status %d: %s", r.status, r.err);
    assert_non_null(strstr(r.err, "chat format"));
    assert_true(tu_exists(f.model2));
    run_free(&r);
    cleanup(&f);
}

/* n -> "Number n is" / " odd." or " even.", n drawn from seed, avoiding `avoid` (or none). */
static void write_parity(const char *path, int n, unsigned seed, const char *avoid_path)
{
    bool used[10000] = {false};
    if (avoid_path) {
        FILE *a = fopen(avoid_path, "r");
        int v;
        while (a && fscanf(a, "{\"prompt\": \"Number %d is\"%*[^\n]\n", &v) == 1) used[v] = true;
        if (a) fclose(a);
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    srand(seed);
    for (int i = 0; i < n;) {
        const int v = rand() % 10000;
        if (used[v]) continue;
        used[v] = true;
        fprintf(f, "{\"prompt\": \"Number %d is\", \"completion\": \" %s.\"}\n", v,
                v % 2 ? "odd" : "even");
        i++;
    }
    fclose(f);
}

static void test_lora_learns_parity(void **state)
{
    (void)state;
    run_skip_without("train");
    char base[512], train[512], held[512], adapter[512];
    TU_SHARED_PATH(base, "testdata/stories260K/models/stories260K.F32.gguf");
    run_tmp_path(train, sizeof train, "tr", "parity_train.jsonl");
    run_tmp_path(held, sizeof held, "tr", "parity_held.jsonl");
    run_tmp_path(adapter, sizeof adapter, "tr", "parity.gguf");
    write_parity(train, 500, 1, NULL);
    write_parity(held, 200, 2, train);
    const char *eval_base[] = {"eval",  "-m", base, "--data", held, "--metric",
                               "label", "-n", "6",  "-t",     "2",  NULL};
    const double before = eval_accuracy(eval_base, "label");
    const char *ft[] = {"finetune",
                        "-m",
                        base,
                        "--train",
                        train,
                        "-o",
                        adapter,
                        "--epochs",
                        "3",
                        "--lr",
                        "2e-3",
                        "--target",
                        "q,k,v,o,gate,up,down",
                        "-t",
                        "2",
                        NULL};
    run_ok(ft);
    const char *eval_lora[] = {"eval",     "-m",    base, "--lora", adapter, "--data", held,
                               "--metric", "label", "-n", "6",      "-t",    "2",      NULL};
    const double after = eval_accuracy(eval_lora, "label");
    printf("parity on 200 held-out numbers: base %.1f %%, with the adapter %.1f %%\n", before,
           after);
    assert_true(after >= 95.0);
    assert_true(after > before);
    unlink(train);
    unlink(held);
    unlink(adapter);
}

static void test_train_bad_input(void **state)
{
    (void)state;
    run_skip_without("train");
    files f;
    make_data(&f);
    const char *no_vocab[] = {"train", "--dims", TINY_DIMS, "--data", f.data, "-o", f.model, NULL};
    run_expect_error(run_mica(no_vocab), "train: ", "--tokenizer VOCAB.gguf is required");
    const char *bad_dims[] = {
        "train", "--dims", "n_embd=32,width=3", "--tokenizer", f.vocab, "--data", f.data, "-o",
        f.model, NULL};
    run_expect_error(run_mica(bad_dims), "train: --dims: ", "'width=3' is not KEY=N");
    const char *init_dims[] = {"train",  "--init", f.vocab, "--dims", TINY_DIMS,
                               "--data", f.data,   "-o",    f.model,  NULL};
    run_expect_error(run_mica(init_dims), "train: --init ", "no --arch, --dims or --tokenizer");
    run_write_text(f.data, "{\"prompt\": \"a\", \"completion\": \"b\"}\n{oops\n");
    char want[700];
    snprintf(want, sizeof want, "%s:2: ", f.data);
    const char *bad_line[] = {"train",  "--dims", TINY_DIMS, "--tokenizer", f.vocab,
                              "--data", f.data,   "-o",      f.model,       NULL};
    run_expect_error(run_mica(bad_line), want, "");
    assert_false(tu_exists(f.model));
    cleanup(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_learns_records),
        cmocka_unit_test(test_resume_equals_uninterrupted),
        cmocka_unit_test(test_finetune_messages),
        cmocka_unit_test(test_lora_learns_parity),
        cmocka_unit_test(test_train_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
