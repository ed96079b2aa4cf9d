/*
 * bandwidth.c - the machine's memory read bandwidth, STREAM-like (build/bandwidth; --help):
 * -t threads each sum their own contiguous part of one buffer much larger than the caches
 * (default 1 GiB), all starting together; the figure is bytes read / wall time of the
 * slowest thread, the median of -r passes after one untimed pass that faults the pages in.
 * It is the denominator of the decode "bandwidth bound" that bench_shapes reports (weights
 * are only read, so only reads are timed). The reader itself is bench_bw.h.
 *
 * Output: with --verbose one line per pass, then one summary line on stdout;
 * "bandwidth: what" on stderr and exit 1 on an error.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_bw.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define BW_MAX_REPS 1000

typedef struct bw_opts {
    int threads, reps;
    long mib;
    bool verbose;
} bw_opts;

static int bw_fail(const char *what, const char *arg)
{
    fprintf(stderr, "bandwidth: %s%s\n", arg, what);
    return 1;
}

static void bw_usage(void)
{
    puts("usage: bandwidth [-t THREADS] [-s MIB] [-r REPS] [--verbose]\n"
         "Memory read bandwidth: THREADS threads (default 2) sum their own part of a buffer\n"
         "of MIB MiB (default 1024), REPS times (default 11) after one warm-up pass; prints\n"
         "the median in GB/s (1e9 bytes per second).");
}

/* Returns 0 to run, 1 on a usage error (reported), 2 after --help. */
static int bw_parse(int argc, char **argv, bw_opts *o)
{
    *o = (bw_opts){.threads = 2, .reps = 11, .mib = 1024};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bw_usage();
            return 2;
        }
        if (!strcmp(a, "--verbose")) {
            o->verbose = true;
            continue;
        }
        if (i + 1 >= argc) return bw_fail(": unknown option or missing value (see --help)", a);
        const char *v = argv[++i];
        char *end;
        errno = 0;
        const long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < 1) return bw_fail(": expected a positive integer", v);
        if (!strcmp(a, "-t") && n <= BW_MAX_THREADS)
            o->threads = (int)n;
        else if (!strcmp(a, "-r") && n <= BW_MAX_REPS)
            o->reps = (int)n;
        else if (!strcmp(a, "-s") && n <= (1L << 20))
            o->mib = n;
        else
            return bw_fail(": unknown option or value out of range (see --help)", a);
    }
    return 0;
}

int main(int argc, char **argv)
{
    bw_opts o;
    const int rc = bw_parse(argc, argv, &o);
    if (rc) return rc == 2 ? 0 : 1;
    double pass[BW_MAX_REPS];
    bw_result r;
    if (!bw_measure(o.threads, (size_t)o.mib << 20, o.reps, pass, &r))
        return bw_fail("out of memory or cannot create the threads", "");
    if (o.verbose)
        for (int p = 0; p < o.reps; p++) printf("pass %3d: %8.2f GB/s\n", p + 1, pass[p]);
    printf("bandwidth: %.2f GB/s read, %d threads, %ld MiB buffer, %s loads, median of %d "
           "(min %.2f, max %.2f) [checksum %016llx]\n",
           r.median, o.threads, o.mib, r.wide_loads ? "32-byte" : "16-byte", o.reps, r.min, r.max,
           (unsigned long long)r.checksum);
    return 0;
}
