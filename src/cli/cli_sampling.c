/*
 * cli_sampling.c - the sampling options that every generating command takes (mica run,
 * mica chat): --temp, --top-k, --top-p, --min-p, the penalties and --seed.
 */
#include "cli.h"

int cli_sampling_opt(cli_args *a, mica_sampler_params *sp, bool *handled)
{
    double d;
    long l;
    *handled = true;
    if (cli_is(a, NULL, "--temp")) {
        if (!cli_float(a, 0, 100, &d)) return 1;
        sp->temperature = (float)d;
    } else if (cli_is(a, NULL, "--top-k")) {
        if (!cli_int(a, 0, 1L << 30, &l)) return 1;
        sp->top_k = (int32_t)l;
    } else if (cli_is(a, NULL, "--top-p")) {
        if (!cli_float(a, 0, 1, &d)) return 1;
        sp->top_p = (float)d;
    } else if (cli_is(a, NULL, "--min-p")) {
        if (!cli_float(a, 0, 1, &d)) return 1;
        sp->min_p = (float)d;
    } else if (cli_is(a, NULL, "--repeat-penalty")) {
        if (!cli_float(a, 0.01, 100, &d)) return 1;
        sp->repeat_penalty = (float)d;
    } else if (cli_is(a, NULL, "--repeat-last-n")) {
        if (!cli_int(a, 0, 1L << 20, &l)) return 1;
        sp->penalty_last_n = (int32_t)l;
    } else if (cli_is(a, NULL, "--frequency-penalty")) {
        if (!cli_float(a, -100, 100, &d)) return 1;
        sp->frequency_penalty = (float)d;
    } else if (cli_is(a, NULL, "--presence-penalty")) {
        if (!cli_float(a, -100, 100, &d)) return 1;
        sp->presence_penalty = (float)d;
    } else if (cli_is(a, "-s", "--seed")) {
        if (!cli_u64(a, &sp->seed)) return 1;
    } else {
        *handled = false;
    }
    return 0;
}
