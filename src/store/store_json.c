/*
 * store_json.c - request log rows as JSON (Jansson): one object per row for `mica logs list
 * --json`, `show --json` and `export` (JSON lines). Reads rows through store_log_each; writes
 * nothing to the database. Called by src/cli/cmd_logs.c and the tests.
 */
#define _POSIX_C_SOURCE 200809L
#include "store_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A JSON string for s (null for NULL); invalid UTF-8 becomes U+FFFD instead of failing. */
static json_t *jstr(const char *s)
{
    if (!s) return json_null();
    size_t n = strlen(s);
    json_t *j = json_stringn(s, n);
    if (j) return j;
    core_buf b;
    core_buf_init(&b, 3 * n + 16);
    if (core_buf_append_utf8(&b, s, n) && core_buf_append(&b, "", 0))
        j = json_stringn(b.data, b.len);
    core_buf_free(&b);
    return j;
}

static json_t *row_object(const store_log_row *r, bool with_content)
{
    char when[40];
    store_format_time(r->created_at, when, sizeof when);
    json_t *o = json_object();
    if (!o) return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "id", jstr(r->id));
    bad |= json_object_set_new(o, "created_at", json_string(when));
    bad |= json_object_set_new(o, "created_at_ms", json_integer(r->created_at));
    bad |= json_object_set_new(o, "key_id", jstr(r->key_id));
    bad |= json_object_set_new(o, "tier", jstr(r->tier));
    bad |= json_object_set_new(o, "model", jstr(r->model));
    bad |= json_object_set_new(o, "endpoint", jstr(r->endpoint));
    bad |= json_object_set_new(o, "status", json_integer(r->status));
    bad |= json_object_set_new(o, "prompt_tokens", json_integer(r->prompt_tokens));
    bad |= json_object_set_new(o, "completion_tokens", json_integer(r->completion_tokens));
    bad |= json_object_set_new(o, "queue_ms", json_integer(r->queue_ms));
    bad |= json_object_set_new(o, "ttft_ms", json_integer(r->ttft_ms));
    bad |= json_object_set_new(o, "total_ms", json_integer(r->total_ms));
    if (with_content) {
        bad |= json_object_set_new(o, "prompt", jstr(r->prompt));
        bad |= json_object_set_new(o, "response", jstr(r->response));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

mica_status store_log_row_json(const store_log_row *r, bool with_content, core_buf *out,
                               mica_err *err)
{
    json_t *o = row_object(r, with_content);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    bool ok = text && core_buf_append(out, text, strlen(text));
    free(text);
    if (!ok)
        return core_fail(err, MICA_ENOMEM, "request %s: out of memory writing JSON",
                         r->id ? r->id : "?");
    return MICA_OK;
}

typedef struct export_ctx {
    FILE *out;
    int64_t n;
} export_ctx;

static mica_status export_row(void *ctx, const store_log_row *r, mica_err *err)
{
    export_ctx *e = ctx;
    core_buf b;
    core_buf_init(&b, SIZE_MAX / 2);
    mica_status st = store_log_row_json(r, true, &b, err);
    if (!st && (fwrite(b.data, 1, b.len, e->out) != b.len || fputc('\n', e->out) == EOF))
        st = core_fail(err, MICA_EIO, "export: write error");
    core_buf_free(&b);
    if (!st) e->n++;
    return st;
}

mica_status store_log_export(store *s, const store_filter *f, FILE *out, int64_t *n, mica_err *err)
{
    export_ctx e = {out, 0};
    mica_status st = store_log_each(s, f, export_row, &e, err);
    if (!st && fflush(out) != 0) st = core_fail(err, MICA_EIO, "export: write error");
    if (n) *n = e.n;
    return st;
}
