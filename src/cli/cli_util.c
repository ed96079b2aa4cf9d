/*
 * cli_util.c - error printing and option value parsing shared by the subcommands.
 */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mica: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_err(const mica_err *err)
{
    return cli_fail("%s", err->msg);
}

bool cli_is(const cli_args *a, const char *short_name, const char *long_name)
{
    const char *s = a->argv[a->i];
    return (short_name && !strcmp(s, short_name)) || (long_name && !strcmp(s, long_name));
}

const char *cli_value(cli_args *a)
{
    if (a->i + 1 >= a->argc) {
        cli_fail("%s %s: missing value", a->argv[0], a->argv[a->i]);
        return NULL;
    }
    return a->argv[++a->i];
}

bool cli_int(cli_args *a, long lo, long hi, long *out)
{
    const char *opt = a->argv[a->i], *v = cli_value(a);
    if (!v) return false;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        cli_fail("%s %s: '%s' is not an integer in [%ld, %ld]", a->argv[0], opt, v, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

bool cli_float(cli_args *a, double lo, double hi, double *out)
{
    const char *opt = a->argv[a->i], *v = cli_value(a);
    if (!v) return false;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        cli_fail("%s %s: '%s' is not a number in [%g, %g]", a->argv[0], opt, v, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

bool cli_u64(cli_args *a, uint64_t *out)
{
    const char *opt = a->argv[a->i], *v = cli_value(a);
    if (!v) return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-') {
        cli_fail("%s %s: '%s' is not a non-negative integer", a->argv[0], opt, v);
        return false;
    }
    *out = x;
    return true;
}

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
    return false;
}

int cli_unknown(const cli_args *a)
{
    return cli_fail("%s: unknown option '%s' (see mica %s --help)", a->argv[0], a->argv[a->i],
                    a->argv[0]);
}
