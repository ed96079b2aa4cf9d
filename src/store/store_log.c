/*
 * store_log.c - the rows of the request log: insert (with content dropped or redacted as
 * asked), walks and counts over a filter, and purges in batches followed by a TRUNCATE
 * checkpoint (the retention sweep is a purge by age). The connection and schema come from
 * store_db.c. Called through store.h by the gateway, the sweeper and `mica logs`.
 */
#define _POSIX_C_SOURCE 200809L
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#define PURGE_BATCH 1000 /* rows per DELETE: inserts from other threads wait at most this long */

/* Binds text that stays valid until the statement is reset (clear_bindings follows). */
static int bind_text(sqlite3_stmt *st, int i, const char *s, bool null_ok)
{
    if (!s)
        return null_ok ? sqlite3_bind_null(st, i) : sqlite3_bind_text(st, i, "", 0, SQLITE_STATIC);
    return sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* Redacts text into buf (its worst case is about twice the input); *out points at the result. */
static mica_status redact_into(const store *s, const char *text, core_buf *buf, const char **out,
                               mica_err *err)
{
    if (!text) return MICA_OK;
    size_t n = strlen(text);
    core_buf_init(buf, 2 * n + 64);
    if (store_redact(text, n, buf) || !core_buf_append(buf, "", 0))
        return core_fail(err, MICA_ENOMEM, "%s: insert: out of memory while redacting", s->path);
    *out = buf->data;
    return MICA_OK;
}

static mica_status insert_locked(store *s, const store_log_row *r, const char *prompt,
                                 const char *response, mica_err *err)
{
    sqlite3_stmt *st = s->insert;
    int b = SQLITE_OK;
    b |= bind_text(st, 1, r->id, false);
    b |= sqlite3_bind_int64(st, 2, r->created_at);
    b |= bind_text(st, 3, r->key_id, true);
    b |= bind_text(st, 4, r->tier, false);
    b |= bind_text(st, 5, r->model, false);
    b |= bind_text(st, 6, r->endpoint, false);
    b |= sqlite3_bind_int(st, 7, r->status);
    b |= sqlite3_bind_int64(st, 8, r->prompt_tokens);
    b |= sqlite3_bind_int64(st, 9, r->completion_tokens);
    b |= sqlite3_bind_int64(st, 10, r->queue_ms);
    b |= sqlite3_bind_int64(st, 11, r->ttft_ms);
    b |= sqlite3_bind_int64(st, 12, r->total_ms);
    b |= bind_text(st, 13, prompt, true);
    b |= bind_text(st, 14, response, true);
    mica_status rc = MICA_OK;
    int step = b == SQLITE_OK ? sqlite3_step(st) : SQLITE_ERROR;
    if (step == SQLITE_CONSTRAINT_UNIQUE || step == SQLITE_CONSTRAINT_PRIMARYKEY)
        rc = core_fail(err, MICA_EINVAL, "%s: insert: duplicate request id '%s'", s->path, r->id);
    else if (step != SQLITE_DONE)
        rc = store_fail_db(s, err, MICA_EIO, "insert");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st); /* forget the caller's pointers */
    return rc;
}

mica_status store_log_insert(store *s, const store_log_row *r, mica_err *err)
{
    if (!r->id || !r->id[0])
        return core_fail(err, MICA_EINVAL, "%s: insert: a row needs an id", s->path);
    const char *prompt = r->no_content ? NULL : r->prompt;
    const char *response = r->no_content ? NULL : r->response;
    core_buf rp, rr;
    core_buf_init(&rp, 0);
    core_buf_init(&rr, 0);
    mica_status st = MICA_OK;
    if (s->redact && ((st = redact_into(s, prompt, &rp, &prompt, err)) ||
                      (st = redact_into(s, response, &rr, &response, err))))
        goto done;
    pthread_mutex_lock(&s->mu);
    st = insert_locked(s, r, prompt, response, err);
    pthread_mutex_unlock(&s->mu);
done:
    core_buf_free(&rp);
    core_buf_free(&rr);
    return st;
}

/* " WHERE ..." for the filter with parameters ?1 (id), ?2 (key_id), ?3 (before). */
static void where_clause(const store_filter *f, char *buf, size_t cap)
{
    const char *parts[3];
    int n = 0;
    if (f->id) parts[n++] = "id = ?1";
    if (f->key_id) parts[n++] = "key_id = ?2";
    if (f->has_before) parts[n++] = "created_at < ?3";
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? " AND " : " WHERE ", parts[i]);
}

static int bind_filter(sqlite3_stmt *st, const store_filter *f)
{
    int b = SQLITE_OK;
    if (f->id) b |= sqlite3_bind_text(st, 1, f->id, -1, SQLITE_STATIC);
    if (f->key_id) b |= sqlite3_bind_text(st, 2, f->key_id, -1, SQLITE_STATIC);
    if (f->has_before) b |= sqlite3_bind_int64(st, 3, f->before_ms);
    return b;
}

/* Prepares head + the filter's WHERE + tail with the filter bound. */
static mica_status prepare_filtered(store *s, const char *head, const store_filter *f,
                                    const char *tail, sqlite3_stmt **out, mica_err *err)
{
    static const store_filter none = {0};
    if (!f) f = &none;
    char where[128], sql[1024];
    where_clause(f, where, sizeof where);
    snprintf(sql, sizeof sql, "%s%s%s", head, where, tail);
    if (sqlite3_prepare_v2(s->db, sql, -1, out, NULL) != SQLITE_OK)
        return store_fail_db(s, err, MICA_EIO, "query");
    if (bind_filter(*out, f) != SQLITE_OK) {
        sqlite3_finalize(*out);
        *out = NULL;
        return store_fail_db(s, err, MICA_EIO, "query");
    }
    return MICA_OK;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static void read_row(sqlite3_stmt *st, store_log_row *r)
{
    *r = (store_log_row){
        .id = col_text(st, 0),
        .created_at = sqlite3_column_int64(st, 1),
        .key_id = col_text(st, 2),
        .tier = col_text(st, 3),
        .model = col_text(st, 4),
        .endpoint = col_text(st, 5),
        .status = sqlite3_column_int(st, 6),
        .prompt_tokens = sqlite3_column_int64(st, 7),
        .completion_tokens = sqlite3_column_int64(st, 8),
        .queue_ms = sqlite3_column_int64(st, 9),
        .ttft_ms = sqlite3_column_int64(st, 10),
        .total_ms = sqlite3_column_int64(st, 11),
        .prompt = col_text(st, 12),
        .response = col_text(st, 13),
    };
    r->no_content = !r->prompt && !r->response;
}

mica_status store_log_each(store *s, const store_filter *f, store_row_fn fn, void *ctx,
                           mica_err *err)
{
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&s->mu);
    mica_status rc = prepare_filtered(
        s,
        "SELECT id, created_at, key_id, tier, model, endpoint, status, prompt_tokens,"
        " completion_tokens, queue_ms, ttft_ms, total_ms, prompt, response FROM request_log",
        f, " ORDER BY created_at, seq", &st, err);
    int r = SQLITE_DONE;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        store_log_row row;
        read_row(st, &row);
        rc = fn(ctx, &row, err);
    }
    if (!rc && r != SQLITE_DONE) rc = store_fail_db(s, err, MICA_EIO, "reading rows");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

mica_status store_log_count(store *s, const store_filter *f, int64_t *n, mica_err *err)
{
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&s->mu);
    mica_status rc = prepare_filtered(s, "SELECT count(*) FROM request_log", f, "", &st, err);
    if (!rc) {
        if (sqlite3_step(st) == SQLITE_ROW)
            *n = sqlite3_column_int64(st, 0);
        else
            rc = store_fail_db(s, err, MICA_EIO, "counting rows");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* One DELETE of at most PURGE_BATCH matching rows; *n receives how many went. */
static mica_status purge_batch(store *s, const store_filter *f, int64_t *n, mica_err *err)
{
    char tail[128];
    snprintf(tail, sizeof tail, " LIMIT %d)", PURGE_BATCH);
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&s->mu);
    mica_status rc = prepare_filtered(
        s, "DELETE FROM request_log WHERE seq IN (SELECT seq FROM request_log", f, tail, &st, err);
    if (!rc) {
        if (sqlite3_step(st) == SQLITE_DONE)
            *n = sqlite3_changes64(s->db);
        else
            rc = store_fail_db(s, err, MICA_EIO, "deleting rows");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

mica_status store_log_purge(store *s, const store_filter *f, int64_t *deleted, mica_err *err)
{
    int64_t total = 0, n;
    mica_status rc;
    do {
        n = 0;
        if ((rc = purge_batch(s, f, &n, err))) break;
        total += n;
    } while (n == PURGE_BATCH);
    if (deleted) *deleted = total;
    if (rc) return rc;
    return store_checkpoint(s, err);
}

mica_status store_sweep(store *s, int64_t now_ms, int64_t retention_ms, int64_t *deleted,
                        mica_err *err)
{
    if (retention_ms <= 0)
        return core_fail(err, MICA_EINVAL, "%s: sweep: retention must be positive", s->path);
    store_filter f = {.has_before = true, .before_ms = now_ms - retention_ms};
    return store_log_purge(s, &f, deleted, err);
}
