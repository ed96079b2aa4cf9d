/*
 * cmd_data.c - `mica data sensors`: writes the sensor-analysis dataset (src/data) as JSON lines,
 * deterministic for a seed, for training, fine-tuning and evaluating the default model.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "data/data.h"

#include <stdio.h>
#include <errno.h>
#include <string.h>

static const char data_help[] =
    "usage: mica data sensors --n N [--seed S] [--lang zh,en] [--task base|site-b] -o FILE.jsonl\n"
    "\n"
    "Writes N sensor-analysis examples as JSON lines {\"prompt\", \"completion\", \"label\",\n"
    "\"lang\", \"task\"}: prompts such as \"分析传感器数据:温度28.5℃, 湿度62%\" or \"Analyze\n"
    "sensor data: temperature 28.5°C, humidity 62%\" with 1-4 of temperature, humidity,\n"
    "pressure, vibration, voltage and CO2; answers give the status, the readings out of\n"
    "range and why, and an action, in the prompt's language. The thresholds and labels are\n"
    "in docs/sensors.md; site-b is another site with other thresholds and labels.\n"
    "\n"
    "  --n N            examples to write (1 .. 10000000)\n"
    "  --seed S         the dataset's seed (default 1); the same seed gives the same file\n"
    "  --lang L         zh, en or zh,en (default zh,en: each example in one of them)\n"
    "  --task T         base (default) or site-b\n"
    "  -o FILE          output (- for stdout); written to FILE.tmp and renamed when complete\n";

typedef struct data_opts {
    long n;
    const char *out;
    data_sensors_opts so;
} data_opts;

static int parse_lang(const char *v, data_sensors_opts *so)
{
    so->zh = so->en = false;
    char buf[32];
    if (strlen(v) >= sizeof buf) return cli_fail("data: --lang: expected zh, en or zh,en");
    strcpy(buf, v);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "zh"))
            so->zh = true;
        else if (!strcmp(t, "en"))
            so->en = true;
        else
            return cli_fail("data: --lang: unknown language '%s' (zh, en)", t);
    }
    return so->zh || so->en ? 0 : cli_fail("data: --lang: expected zh, en or zh,en");
}

static int data_parse(int argc, char **argv, data_opts *o)
{
    if (argc < 2 || strcmp(argv[1], "sensors"))
        return cli_fail("data: unknown dataset '%s' (mica data sensors ...; see --help)",
                        argc < 2 ? "" : argv[1]);
    cli_args a = {argc, argv, 1};
    for (a.i = 2; a.i < argc; a.i++) {
        const char *v;
        if (cli_is(&a, NULL, "--n")) {
            if (!cli_int(&a, 1, 10000000, &o->n)) return 1;
        } else if (cli_is(&a, NULL, "--seed")) {
            if (!cli_u64(&a, &o->so.seed)) return 1;
        } else if (cli_is(&a, NULL, "--lang")) {
            if (!(v = cli_value(&a)) || parse_lang(v, &o->so)) return 1;
        } else if (cli_is(&a, NULL, "--task")) {
            if (!(v = cli_value(&a))) return 1;
            if (!strcmp(v, "base"))
                o->so.task = DATA_TASK_BASE;
            else if (!strcmp(v, "site-b"))
                o->so.task = DATA_TASK_SITE_B;
            else
                return cli_fail("data: --task: unknown task '%s' (base, site-b)", v);
        } else if (cli_is(&a, "-o", "--output")) {
            if (!(o->out = cli_value(&a))) return 1;
        } else {
            return cli_unknown(&a);
        }
    }
    if (!o->n) return cli_fail("data: --n N is required");
    if (!o->out) return cli_fail("data: -o FILE is required");
    return 0;
}

/* Writes the records to f; counts[level] receives how many of each status. */
static mica_status write_records(const data_opts *o, FILE *f, long counts[3], mica_err *err)
{
    cli_progress prog;
    cli_progress_init(&prog);
    core_buf line;
    core_buf_init(&line, 1 << 16);
    mica_status st = MICA_OK;
    for (long i = 0; i < o->n && !st; i++) {
        data_record r;
        if ((st = data_sensors_record(&o->so, (uint64_t)i, &r, err))) break;
        line.len = 0;
        if ((st = data_record_jsonl(&r, &line)))
            core_fail(err, st, "out of memory");
        else if (fwrite(line.data, 1, line.len, f) != line.len)
            st = core_fail(err, MICA_EIO, "%s: write failed", o->out);
        counts[r.status]++;
        data_record_free(&r);
        if (i % 1000 == 0) cli_progress_update(&prog, "writing", o->out, i, o->n);
    }
    cli_progress_clear(&prog);
    core_buf_free(&line);
    return st;
}

int cmd_data(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(data_help, stdout);
        return 0;
    }
    data_opts o = {.so = {.seed = 1, .zh = true, .en = true}};
    if (data_parse(argc, argv, &o)) return 1;
    const bool to_stdout = !strcmp(o.out, "-");
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", o.out) >= (int)sizeof tmp)
        return cli_fail("data: %s: path too long", o.out);
    FILE *f = to_stdout ? stdout : fopen(tmp, "w");
    if (!f) return cli_fail("data: %s: cannot create: %s", tmp, strerror(errno));
    long counts[3] = {0};
    mica_err err;
    mica_status st = write_records(&o, f, counts, &err);
    if (!to_stdout) {
        if (fclose(f) && !st) st = core_fail(&err, MICA_EIO, "%s: write failed", o.out);
        if (!st && rename(tmp, o.out))
            st = core_fail(&err, MICA_EIO, "%s: cannot rename %s: %s", o.out, tmp, strerror(errno));
        if (st) remove(tmp);
    }
    if (st) return cli_fail_err(&err);
    fprintf(stderr, "mica: %ld examples (%s): %ld %s, %ld %s, %ld %s -> %s\n", o.n,
            o.so.task == DATA_TASK_BASE ? "base" : "site-b", counts[0],
            data_level_label(o.so.task, DATA_EN, DATA_NORMAL), counts[1],
            data_level_label(o.so.task, DATA_EN, DATA_WARNING), counts[2],
            data_level_label(o.so.task, DATA_EN, DATA_CRITICAL), o.out);
    return 0;
}
