/*
 * serve_child.h - `mica serve` as a child process for the gateway tests that look at what the
 * process prints or at what survives its death: spawn it with its stdout and stderr going to
 * a log file, and read the port it announces there. Header-only, shared by tests/server.
 */
#ifndef MICA_TESTS_SERVE_CHILD_H
#define MICA_TESTS_SERVE_CHILD_H

#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Starts `$MICA_BIN serve ARGS...` (args NULL-terminated) with stdout and stderr in log. */
static inline pid_t spawn_serve(const char *const *args, const char *log)
{
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        if (!f || !freopen(log, "a", stdout)) _exit(127);
        const char *argv[32] = {getenv("MICA_BIN"), "serve"};
        int n = 2;
        while (args[n - 2] && n < 31) argv[n] = args[n - 2], n++;
        argv[n] = NULL;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits for "on http(s)://127.0.0.1:PORT" in the log; 0 when the process died. */
static inline uint16_t wait_port(const char *log, pid_t pid)
{
    for (int i = 0; i < 600; i++) {
        char *text = access(log, R_OK) ? NULL : tu_read_file(log, NULL);
        const char *p = text ? strstr(text, "://127.0.0.1:") : NULL;
        const unsigned port = p ? (unsigned)atoi(p + 13) : 0;
        free(text);
        if (port) return (uint16_t)port;
        if (waitpid(pid, NULL, WNOHANG) == pid) return 0;
        usleep(20000);
    }
    return 0;
}

#endif
