/*
 * cmd_logs.c - `mica logs list|show|export|purge`: the operator's view of the gateway's
 * request log (DATA_DIR/requests.db, src/store): list requests, show one with its prompt and
 * response, export JSON lines, and purge by key or age (a deletion request) so the bytes leave
 * the database files. Opens the log; never creates it. Built only with the gateway.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

static const char logs_help[] =
    "usage: mica logs list [--key-id ID] [--before TIME] [--json]\n"
    "       mica logs show REQUEST_ID [--json]\n"
    "       mica logs export [--key-id ID] [--before TIME]\n"
    "       mica logs purge (--key-id ID | --before TIME | --all)\n"
    "options for all: [--data-dir DIR] (default ./mica-data)\n"
    "\n"
    "The gateway's request log, DIR/" STORE_DB_NAME ". --key-id keeps one API key's requests,\n"
    "--before those created before TIME (unix seconds or ISO-8601: 2026-11-28 or\n"
    "2026-11-28T12:00:00Z). list prints one line per request, oldest first, without prompts\n"
    "(--json: JSON lines); show prints one request with its prompt and response; export writes\n"
    "JSON lines with prompts and responses to stdout; purge deletes the matching requests and\n"
    "checkpoints the database so their bytes are gone from its files, and prints how many it\n"
    "removed (a deletion request: mica logs purge --key-id key_0123456789ab).\n";

typedef struct logs_opts {
    const char *data_dir, *action, *id, *before_arg;
    store_filter filter;
    bool json, all;
} logs_opts;

static int logs_parse(int argc, char **argv, logs_opts *o)
{
    cli_args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; a.i++) {
        const char *v;
        if (cli_is(&a, NULL, "--data-dir")) {
            if (!(v = cli_value(&a))) return 1;
            o->data_dir = v;
        } else if (cli_is(&a, NULL, "--key-id")) {
            if (!(v = cli_value(&a))) return 1;
            o->filter.key_id = v;
        } else if (cli_is(&a, NULL, "--before")) {
            if (!(v = cli_value(&a))) return 1;
            mica_err err;
            if (store_parse_time(v, &o->filter.before_ms, &err))
                return cli_fail("logs: --before: %s", err.msg);
            o->filter.has_before = true;
        } else if (cli_is(&a, NULL, "--json")) {
            o->json = true;
        } else if (cli_is(&a, NULL, "--all")) {
            o->all = true;
        } else if (argv[a.i][0] == '-') {
            return cli_unknown(&a);
        } else if (!o->action) {
            o->action = argv[a.i];
        } else if (!o->id && !strcmp(o->action, "show")) {
            o->id = argv[a.i];
        } else {
            return cli_fail("logs: unexpected argument '%s'", argv[a.i]);
        }
    }
    if (!o->action) return cli_fail("logs: say list, show, export or purge (see mica logs --help)");
    return 0;
}

/* Writes s with control characters (other than newlines and tabs in content) as '?', so a
 * stored prompt cannot send escape sequences to the operator's terminal. */
static void put_clean(const char *s, bool content)
{
    if (!s) s = "";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool ok = c >= 0x20 ? c != 0x7f : content && (c == '\n' || c == '\t');
        putchar(ok ? c : '?');
    }
}

static mica_status print_json(const store_log_row *r, bool with_content, mica_err *err)
{
    core_buf b;
    core_buf_init(&b, SIZE_MAX / 2);
    mica_status st = store_log_row_json(r, with_content, &b, err);
    if (!st) printf("%s\n", b.data);
    core_buf_free(&b);
    return st;
}

static mica_status list_row(void *ctx, const store_log_row *r, mica_err *err)
{
    if (*(const bool *)ctx) return print_json(r, false, err);
    char when[40];
    store_format_time(r->created_at, when, sizeof when);
    printf("%-24s ", when);
    put_clean(r->id, false);
    putchar(' ');
    put_clean(r->key_id ? r->key_id : "-", false);
    putchar(' ');
    put_clean(r->tier, false);
    putchar(' ');
    put_clean(r->model, false);
    printf(" %d %lld %lld %lld %s\n", r->status, (long long)r->prompt_tokens,
           (long long)r->completion_tokens, (long long)r->total_ms, r->no_content ? "no" : "yes");
    return MICA_OK;
}

static mica_status show_row(void *ctx, const store_log_row *r, mica_err *err)
{
    *(bool *)ctx = true;
    char when[40];
    store_format_time(r->created_at, when, sizeof when);
    const char *labels[] = {"id", "created_at", "key_id", "tier", "model", "endpoint"};
    const char *values[] = {r->id,   when,     r->key_id ? r->key_id : "-",
                            r->tier, r->model, r->endpoint};
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        printf("%-18s ", labels[i]);
        put_clean(values[i], false);
        putchar('\n');
    }
    printf("%-18s %d\n%-18s %lld\n%-18s %lld\n", "status", r->status, "prompt_tokens",
           (long long)r->prompt_tokens, "completion_tokens", (long long)r->completion_tokens);
    printf("%-18s %lld\n%-18s %lld\n%-18s %lld\n", "queue_ms", (long long)r->queue_ms, "ttft_ms",
           (long long)r->ttft_ms, "total_ms", (long long)r->total_ms);
    const char *texts[] = {r->prompt, r->response}, *names[] = {"prompt", "response"};
    for (int i = 0; i < 2; i++) {
        printf("--- %s%s\n", names[i], texts[i] ? "" : " (not stored)");
        if (texts[i]) {
            put_clean(texts[i], true);
            putchar('\n');
        }
    }
    return MICA_OK;
}

static mica_status show_json_row(void *ctx, const store_log_row *r, mica_err *err)
{
    *(bool *)ctx = true;
    return print_json(r, true, err);
}

static int logs_show(store *s, const logs_opts *o)
{
    if (!o->id) return cli_fail("logs: show needs a request id (see mica logs list)");
    store_filter f = {.id = o->id};
    bool found = false;
    mica_err err;
    if (store_log_each(s, &f, o->json ? show_json_row : show_row, &found, &err))
        return cli_fail_err(&err);
    if (!found) return cli_fail("%s: no request '%s'", store_path(s), o->id);
    return 0;
}

static int logs_purge(store *s, const logs_opts *o)
{
    if (!o->all && !o->filter.key_id && !o->filter.has_before)
        return cli_fail("logs: purge needs --key-id, --before or --all");
    int64_t n = 0;
    mica_err err;
    mica_status st = store_log_purge(s, &o->filter, &n, &err);
    printf("purged %lld row%s\n", (long long)n, n == 1 ? "" : "s");
    fflush(stdout);
    return st ? cli_fail_err(&err) : 0;
}

static int logs_run(store *s, const logs_opts *o)
{
    mica_err err;
    if (!strcmp(o->action, "list")) {
        if (!o->json)
            printf("%-24s %s\n", "created_at",
                   "id key_id tier model status prompt_tokens completion_tokens total_ms "
                   "content");
        bool json = o->json;
        if (store_log_each(s, &o->filter, list_row, &json, &err)) return cli_fail_err(&err);
        return 0;
    }
    if (!strcmp(o->action, "show")) return logs_show(s, o);
    if (!strcmp(o->action, "export"))
        return store_log_export(s, &o->filter, stdout, NULL, &err) ? cli_fail_err(&err) : 0;
    if (!strcmp(o->action, "purge")) return logs_purge(s, o);
    return 0;
}

int cmd_logs(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(logs_help, stdout);
        return 0;
    }
    logs_opts o = {.data_dir = "mica-data"};
    if (logs_parse(argc, argv, &o)) return 1;
    static const char *const actions[] = {"list", "show", "export", "purge"};
    bool known = false;
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        known |= !strcmp(o.action, actions[i]);
    if (!known)
        return cli_fail("logs: unknown action '%s' (list, show, export or purge)", o.action);
    store *s;
    mica_err err;
    store_opts so = {.create = false};
    if (store_open(&s, o.data_dir, &so, &err)) return cli_fail_err(&err);
    int rc = logs_run(s, &o);
    store_close(s);
    return rc;
}
