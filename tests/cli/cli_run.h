/*
 * cli_run.h - runs build/mica in a child process for the CLI tests: argv, captured stdout
 * and stderr, exit status, peak RSS, and optionally a cap on the size of files the child may
 * write (a full disk). Header-only, shared by tests/cli/test_*.c.
 */
#ifndef MICA_TESTS_CLI_RUN_H
#define MICA_TESTS_CLI_RUN_H

#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct run_result {
    int status;
    char *out, *err;
    size_t out_len;
    long maxrss_kb;
} run_result;

static inline const char *run_bin(void)
{
    const char *b = getenv("MICA_BIN");
    if (!b) fail_msg("MICA_BIN is not set (run through ctest)");
    return b;
}

/* A path in the test tmp dir unique to this process: DIR/<prefix>_<pid>_<name>. */
static inline void run_tmp_path(char *buf, size_t cap, const char *prefix, const char *name)
{
    snprintf(buf, cap, "%s/%s_%d_%s", tu_tmpdir(), prefix, (int)getpid(), name);
}

/* Runs build/mica with args (NULL-terminated, without argv[0]) and standard input from the
 * file `input` (NULL: /dev/null); fsize_limit > 0 caps the size of files the child may write
 * (writes fail with EFBIG; SIGXFSZ is ignored so the process sees the error instead of
 * dying). */
static inline run_result run_mica_io(const char *const *args, const char *input, long fsize_limit)
{
    char out_path[512], err_path[512];
    run_tmp_path(out_path, sizeof out_path, "run", "stdout");
    run_tmp_path(err_path, sizeof err_path, "run", "stderr");
    const char *argv[64] = {run_bin()};
    int n = 1;
    while (args[n - 1] && n < 63) argv[n] = args[n - 1], n++;
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fi = open(input ? input : "/dev/null", O_RDONLY);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        if (fsize_limit > 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    run_result r = {0};
    struct rusage ru;
    int st;
    assert_int_equal(wait4(pid, &st, 0, &ru), pid);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.maxrss_kb = ru.ru_maxrss;
    r.out = tu_read_file(out_path, &r.out_len);
    r.err = tu_read_file(err_path, NULL);
    unlink(out_path);
    unlink(err_path);
    return r;
}

static inline run_result run_mica_limited(const char *const *args, long fsize_limit)
{
    return run_mica_io(args, NULL, fsize_limit);
}

static inline run_result run_mica(const char *const *args)
{
    return run_mica_io(args, NULL, 0);
}

static inline void run_free(run_result *r)
{
    free(r->out);
    free(r->err);
}

/* The percentage `mica eval` printed on stdout for metric ("label     98.50 %"). */
static inline double run_eval_percent(const run_result *r, const char *metric)
{
    const char *line = strstr(r->out, metric);
    if (!line) fail_msg("eval printed no '%s' line: %s", metric, r->out);
    return strtod(line + strlen(metric), NULL);
}

/* Writes text to path (test inputs). */
static inline void run_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Skips the test visibly when `mica CMD --help` fails: the binary was built without CMD
 * (the commands that need Jansson). */
static inline void run_skip_without(const char *cmd)
{
    const char *args[] = {cmd, "--help", NULL};
    run_result r = run_mica(args);
    const int status = r.status;
    run_free(&r);
    if (status != 0) {
        printf("SKIP: mica was built without `%s` (no Jansson)\n", cmd);
        skip();
    }
}

/* The shape of a CLI error: exit 1, exactly one line "mica: <prefix>...<needle>..." on
 * stderr, nothing on stdout. Frees r. */
static inline void run_expect_error(run_result r, const char *prefix, const char *needle)
{
    char want[4096];
    snprintf(want, sizeof want, "mica: %s", prefix);
    if (r.status != 1 || strncmp(r.err, want, strlen(want)) || !strstr(r.err, needle) ||
        strchr(r.err, '\n') != r.err + strlen(r.err) - 1 || r.out_len != 0)
        fail_msg("expected exit 1 and one line '%s...%s...', got exit %d, stderr '%s', %zu bytes "
                 "of stdout",
                 want, needle, r.status, r.err, r.out_len);
    run_free(&r);
}

#endif
