/*
 * cli_progress.c - the one-line progress display of long commands (quantize, perplexity):
 * redrawn in place on stderr at most ten times a second, and only when stderr is a
 * terminal, so logs and tests see nothing of it. Called through the library's progress
 * callbacks (quant_progress_fn) by cmd_quantize.c and cmd_perplexity.c.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "core/core.h"

#include <stdio.h>
#include <unistd.h>

void cli_progress_init(cli_progress *p)
{
    p->tty = isatty(2) == 1;
    p->shown = false;
    p->last = 0;
}

void cli_progress_update(void *ctx, const char *what, const char *item, int64_t done, int64_t total)
{
    cli_progress *p = ctx;
    if (!p->tty) return;
    const double now = core_now();
    if (done < total && p->shown && now - p->last < 0.1) return;
    p->last = now;
    p->shown = true;
    const int pct = total > 0 ? (int)(100 * done / total) : 100;
    fprintf(stderr, "\r\033[K%s %3d%% [%lld/%lld]%s%.60s", what, pct, (long long)done,
            (long long)total, item ? " " : "", item ? item : "");
    fflush(stderr);
}

void cli_progress_clear(cli_progress *p)
{
    if (!p->tty || !p->shown) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->shown = false;
}
