/*
 * test_store.c - the request log (src/store) on real SQLite files under the test tmp dir:
 * directory and file modes, schema version and migrations, refusal of foreign and newer
 * files; insert, walk, count, export (JSON lines read back with Jansson) and purge; rows
 * without content; the retention sweep and purges scrubbing the bytes of deleted rows from
 * both the database file and the WAL (raw byte scans, with positive controls); the sweeper
 * thread; redaction (positive and negative examples, linear time); retention and time
 * parsing; crash safety (a child killed with SIGKILL mid-burst loses no reported row); and
 * inserts from 4 threads at once.
 */
#define _GNU_SOURCE
#include "test_util.h"

#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------ */

/* A fresh directory path (not created) unique to this process and name. */
static void tmp_dir(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/store_%d_%s", tu_tmpdir(), (int)getpid(), name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", buf);
    if (system(cmd) != 0) fail_msg("cannot clear %s", buf);
}

static void rm_dir(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fail_msg("cannot remove %s", dir);
}

static store *open_store(const char *dir, bool redact)
{
    store *s = NULL;
    mica_err err;
    store_opts o = {.create = true, .redact = redact};
    if (store_open(&s, dir, &o, &err)) fail_msg("store_open %s: %s", dir, err.msg);
    return s;
}

static void insert(store *s, const store_log_row *r)
{
    mica_err err;
    if (store_log_insert(s, r, &err)) fail_msg("insert %s: %s", r->id, err.msg);
}

static store_log_row make_row(const char *id, int64_t t, const char *key, const char *prompt,
                              const char *response)
{
    return (store_log_row){.id = id,
                           .created_at = t,
                           .key_id = key,
                           .tier = "standard",
                           .model = "stories",
                           .endpoint = "/v1/chat/completions",
                           .status = 200,
                           .prompt_tokens = 12,
                           .completion_tokens = 34,
                           .queue_ms = 1,
                           .ttft_ms = 20,
                           .total_ms = 300,
                           .prompt = prompt,
                           .response = response};
}

static int64_t count(store *s, const store_filter *f)
{
    int64_t n = -1;
    mica_err err;
    if (store_log_count(s, f, &n, &err)) fail_msg("count: %s", err.msg);
    return n;
}

/* Size of DIR/requests.db<suffix>, -1 when absent. */
static long file_size(const char *dir, const char *suffix)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s%s", dir, STORE_DB_NAME, suffix);
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

/* Whether marker occurs anywhere in the raw bytes of DIR/requests.db<suffix> (absent: no). */
static bool file_has(const char *dir, const char *suffix, const char *marker)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s%s", dir, STORE_DB_NAME, suffix);
    return tu_file_has(p, marker);
}

/* In the database file, its WAL or its shared-memory index. */
static bool files_have(const char *dir, const char *marker)
{
    return file_has(dir, "", marker) || file_has(dir, "-wal", marker) ||
           file_has(dir, "-shm", marker);
}

/* A prompt of n bytes made of filler with marker in the middle and at the end. */
static char *big_prompt(size_t n, const char *marker)
{
    char *p = malloc(n + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = (char)('a' + i % 26);
    size_t m = strlen(marker);
    memcpy(p + n / 2, marker, m);
    memcpy(p + n - m, marker, m);
    p[n] = '\0';
    return p;
}

/* ---- schema and files --------------------------------------------------------------------- */

static void test_open_creates_private_files_and_schema(void **state)
{
    char root[1024], dir[1100];
    tmp_dir(root, sizeof root, "open");
    snprintf(dir, sizeof dir, "%s/nested/data", root);
    store *s = open_store(dir, false);
    struct stat st;
    char db[1200];
    snprintf(db, sizeof db, "%s/%s", dir, STORE_DB_NAME);
    assert_string_equal(store_path(s), db);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(db, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    insert(s, &(store_log_row){.id = "r1", .created_at = 1});
    char wal[1300];
    snprintf(wal, sizeof wal, "%s-wal", db);
    assert_int_equal(stat(wal, &st), 0); /* WAL mode: the insert went to the WAL */
    assert_int_equal(st.st_mode & 0777, 0600);
    int v = 0;
    mica_err err;
    assert_int_equal(store_schema_version(s, &v, &err), MICA_OK);
    assert_int_equal(v, STORE_SCHEMA_VERSION);
    store_close(s);

    /* Reopening migrates nothing twice; the journal mode and tables are as promised. */
    s = open_store(dir, false);
    store_close(s);
    sqlite3 *raw;
    assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(
        sqlite3_prepare_v2(raw, "SELECT count(*), max(version) FROM migrations", -1, &q, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), STORE_SCHEMA_VERSION);
    assert_int_equal(sqlite3_column_int(q, 1), STORE_SCHEMA_VERSION);
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    /* A database from a newer mica is refused, not scribbled on. */
    assert_int_equal(sqlite3_exec(raw, "UPDATE schema_version SET version = 99", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(raw);
    store_opts o = {.create = true};
    assert_int_equal(store_open(&s, dir, &o, &err), MICA_EUNSUPPORTED);
    assert_null(s);
    assert_non_null(strstr(err.msg, db));
    assert_non_null(strstr(err.msg, "99"));
    rm_dir(root);
}

static void test_open_errors(void **state)
{
    char dir[1024], db[1200];
    tmp_dir(dir, sizeof dir, "errors");
    store *s = NULL;
    mica_err err;
    store_opts no_create = {0};
    /* Without create a missing log is an error naming the file. */
    assert_int_equal(store_open(&s, dir, &no_create, &err), MICA_EIO);
    snprintf(db, sizeof db, "%s/%s", dir, STORE_DB_NAME);
    assert_non_null(strstr(err.msg, db));
    assert_false(tu_exists(dir));
    /* A file that is not SQLite is refused with its name. */
    assert_int_equal(mkdir(dir, 0700), 0);
    FILE *f = fopen(db, "wb");
    assert_non_null(f);
    for (int i = 0; i < 4096; i++) fputc('x', f);
    fclose(f);
    assert_int_equal(chmod(db, 0644), 0);
    mica_status st = store_open(&s, dir, &no_create, &err);
    assert_int_not_equal(st, MICA_OK);
    assert_non_null(strstr(err.msg, db));
    assert_non_null(strstr(err.msg, "not a database"));
    /* ... and even so the file was narrowed to 0600 first. */
    struct stat sb;
    assert_int_equal(stat(db, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(store_open(&s, "", &no_create, &err), MICA_EINVAL);
    rm_dir(dir);
}

/* ---- rows ---------------------------------------------------------------------------------- */

typedef struct collected {
    int n;
    char ids[16][32];
    bool content[16];
} collected;

static mica_status collect(void *ctx, const store_log_row *r, mica_err *err)
{
    collected *c = ctx;
    if (c->n < 16) {
        snprintf(c->ids[c->n], sizeof c->ids[0], "%s", r->id);
        c->content[c->n] = r->prompt != NULL;
    }
    c->n++;
    return MICA_OK;
}

static mica_status stop_at_two(void *ctx, const store_log_row *r, mica_err *err)
{
    int *n = ctx;
    if (++*n == 2) return core_fail(err, MICA_EBUSY, "stop");
    return MICA_OK;
}

static void test_insert_and_query(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "rows");
    store *s = open_store(dir, false);
    /* Inserted out of time order: walks come back oldest first. */
    insert(s, &(store_log_row){.id = "c", .created_at = 3000, .key_id = "key_a", .prompt = "p3"});
    insert(s, &(store_log_row){.id = "a", .created_at = 1000, .key_id = "key_a", .prompt = "p1"});
    insert(s, &(store_log_row){.id = "b", .created_at = 2000, .key_id = "key_b"});
    insert(s, &(store_log_row){.id = "d", .created_at = 4000, .prompt = "p4"});
    collected c = {0};
    mica_err err;
    assert_int_equal(store_log_each(s, NULL, collect, &c, &err), MICA_OK);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.ids[0], "a");
    assert_string_equal(c.ids[1], "b");
    assert_string_equal(c.ids[2], "c");
    assert_string_equal(c.ids[3], "d");
    assert_true(c.content[0]);
    assert_false(c.content[1]);

    assert_int_equal(count(s, &(store_filter){.key_id = "key_a"}), 2);
    assert_int_equal(count(s, &(store_filter){.has_before = true, .before_ms = 3000}), 2);
    assert_int_equal(
        count(s, &(store_filter){.key_id = "key_a", .has_before = true, .before_ms = 3000}), 1);
    assert_int_equal(count(s, &(store_filter){.id = "d"}), 1);
    assert_int_equal(count(s, &(store_filter){.id = "nope"}), 0);
    assert_int_equal(count(s, &(store_filter){.has_before = true, .before_ms = 0}), 0);

    /* A duplicate or missing id is the caller's error; the store keeps working. */
    assert_int_equal(store_log_insert(s, &(store_log_row){.id = "a"}, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "duplicate"));
    assert_int_equal(store_log_insert(s, &(store_log_row){.id = NULL}, &err), MICA_EINVAL);
    assert_int_equal(store_log_insert(s, &(store_log_row){.id = ""}, &err), MICA_EINVAL);
    insert(s, &(store_log_row){.id = "e", .created_at = 5000});
    assert_int_equal(count(s, NULL), 5);

    /* A callback's status stops the walk and comes back. */
    int n = 0;
    assert_int_equal(store_log_each(s, NULL, stop_at_two, &n, &err), MICA_EBUSY);
    assert_int_equal(n, 2);
    assert_string_equal(err.msg, "stop");

    int64_t deleted = -1;
    assert_int_equal(store_log_purge(s, &(store_filter){.key_id = "key_a"}, &deleted, &err),
                     MICA_OK);
    assert_int_equal(deleted, 2);
    assert_int_equal(count(s, NULL), 3);
    assert_int_equal(
        store_log_purge(s, &(store_filter){.has_before = true, .before_ms = 4500}, &deleted, &err),
        MICA_OK);
    assert_int_equal(deleted, 2); /* b and d */
    assert_int_equal(store_log_purge(s, NULL, &deleted, &err), MICA_OK);
    assert_int_equal(deleted, 1);
    assert_int_equal(count(s, NULL), 0);
    assert_int_equal(store_integrity_check(s, &err), MICA_OK);
    store_close(s);
    rm_dir(dir);
}

static void test_export_json_lines(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "export");
    store *s = open_store(dir, false);
    store_log_row r = make_row("chatcmpl-1", 1795867200123LL, "key_0123456789ab",
                               "Hello \"world\"\n", "Hi \xe2\x9c\x93");
    insert(s, &r);
    store_log_row r2 = make_row("chatcmpl-2", 1795867201000LL, NULL, NULL, NULL);
    r2.status = 429;
    insert(s, &r2);
    store_log_row r3 = make_row("chatcmpl-3", 1795867202000LL, NULL, "bad \xff byte", "ok");
    insert(s, &r3);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    int64_t n = 0;
    mica_err err;
    assert_int_equal(store_log_export(s, NULL, f, &n, &err), MICA_OK);
    fclose(f);
    assert_int_equal(n, 3);
    char *save = NULL, *line = strtok_r(buf, "\n", &save);
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    if (!o) fail_msg("line 1 is not JSON (%s): %s", je.text, line);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "chatcmpl-1");
    assert_string_equal(json_string_value(json_object_get(o, "created_at")),
                        "2026-11-28T12:00:00.123Z");
    assert_int_equal(json_integer_value(json_object_get(o, "created_at_ms")), 1795867200123LL);
    assert_string_equal(json_string_value(json_object_get(o, "key_id")), "key_0123456789ab");
    assert_string_equal(json_string_value(json_object_get(o, "tier")), "standard");
    assert_string_equal(json_string_value(json_object_get(o, "model")), "stories");
    assert_string_equal(json_string_value(json_object_get(o, "endpoint")), "/v1/chat/completions");
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(o, "prompt_tokens")), 12);
    assert_int_equal(json_integer_value(json_object_get(o, "completion_tokens")), 34);
    assert_int_equal(json_integer_value(json_object_get(o, "queue_ms")), 1);
    assert_int_equal(json_integer_value(json_object_get(o, "ttft_ms")), 20);
    assert_int_equal(json_integer_value(json_object_get(o, "total_ms")), 300);
    assert_string_equal(json_string_value(json_object_get(o, "prompt")), "Hello \"world\"\n");
    assert_string_equal(json_string_value(json_object_get(o, "response")), "Hi \xe2\x9c\x93");
    json_decref(o);

    o = json_loads(strtok_r(NULL, "\n", &save), 0, &je);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(o, "key_id")));
    assert_true(json_is_null(json_object_get(o, "prompt")));
    assert_true(json_is_null(json_object_get(o, "response")));
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 429);
    json_decref(o);

    /* Invalid UTF-8 in stored text becomes U+FFFD instead of breaking the export. */
    o = json_loads(strtok_r(NULL, "\n", &save), 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "prompt")), "bad \xef\xbf\xbd byte");
    json_decref(o);
    assert_null(strtok_r(NULL, "\n", &save));
    free(buf);

    /* Without content the object has no prompt or response at all. */
    core_buf b;
    core_buf_init(&b, 1 << 20);
    assert_int_equal(store_log_row_json(&r, false, &b, &err), MICA_OK);
    assert_null(strstr(b.data, "prompt\""));
    assert_null(strstr(b.data, "Hello"));
    assert_non_null(strstr(b.data, "\"prompt_tokens\":12"));
    core_buf_free(&b);
    store_close(s);
    rm_dir(dir);
}

/* ---- privacy: content-free rows, sweeps and purges leave no bytes behind -------------------- */

static void test_no_content_rows_leave_no_trace(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "nocontent");
    store *s = open_store(dir, false);
    const char *hidden = "MARKER-disable-logs-7f3a9c";
    const char *kept = "MARKER-stored-content-5e21b0";
    store_log_row r = make_row("req-hidden", store_now_ms(), "key_x", hidden, hidden);
    r.no_content = true; /* disable_logs: the gateway hands the content, the store drops it */
    insert(s, &r);
    insert(s, &(store_log_row){.id = "req-kept", .created_at = store_now_ms(), .prompt = kept});
    store_filter f = {.id = "req-hidden"};
    collected c = {0};
    mica_err err;
    assert_int_equal(store_log_each(s, &f, collect, &c, &err), MICA_OK);
    assert_int_equal(c.n, 1);
    assert_false(c.content[0]);
    /* Positive control: stored content is visible to the scan while the WAL holds it. */
    assert_true(files_have(dir, kept));
    assert_false(files_have(dir, hidden));
    assert_int_equal(store_checkpoint(s, &err), MICA_OK);
    assert_true(file_has(dir, "", kept));
    assert_false(files_have(dir, hidden));
    store_close(s);
    assert_true(file_has(dir, "", kept));
    assert_false(files_have(dir, hidden));
    rm_dir(dir);
}

static void test_sweep_scrubs_db_and_wal(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "sweep");
    store *s = open_store(dir, false);
    const char *old_m = "MARKER-expired-row-41c8d2", *new_m = "MARKER-fresh-row-93ab07";
    const char *old_wal_m = "MARKER-expired-wal-only-1d6e";
    int64_t now = store_now_ms(), hour = 3600 * 1000;
    char *big = big_prompt(20000, old_m); /* overflow pages */
    char id[32];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "old-%d", i);
        insert(s, &(store_log_row){.id = id,
                                   .created_at = now - 80 * hour - i,
                                   .key_id = "key_old",
                                   .prompt = i % 2 ? big : old_m,
                                   .response = old_m});
    }
    mica_err err;
    /* Checkpointed into the main file: secure_delete must scrub it there. */
    assert_int_equal(store_checkpoint(s, &err), MICA_OK);
    assert_int_equal(file_size(dir, "-wal"), 0);
    assert_true(file_has(dir, "", old_m));
    /* And one expired row that lives only in the WAL when the sweep comes. */
    insert(s, &(store_log_row){.id = "old-wal",
                               .created_at = now - 73 * hour,
                               .prompt = old_wal_m,
                               .response = old_wal_m});
    assert_true(file_has(dir, "-wal", old_wal_m));
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "new-%d", i);
        insert(s, &(store_log_row){.id = id, .created_at = now - i * hour, .prompt = new_m});
    }
    int64_t deleted = -1;
    assert_int_equal(store_sweep(s, now, STORE_RETENTION_MAX_MS, &deleted, &err), MICA_OK);
    assert_int_equal(deleted, 21);
    assert_int_equal(count(s, NULL), 5);
    assert_int_equal(file_size(dir, "-wal"), 0); /* TRUNCATE emptied the WAL */
    assert_false(files_have(dir, old_m));
    assert_false(files_have(dir, old_wal_m));
    assert_false(files_have(dir, "key_old"));
    assert_true(file_has(dir, "", new_m)); /* the scan still sees what was kept */
    /* A second sweep finds nothing more; an invalid retention is refused. */
    assert_int_equal(store_sweep(s, now, STORE_RETENTION_MAX_MS, &deleted, &err), MICA_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(store_sweep(s, now, 0, &deleted, &err), MICA_EINVAL);
    assert_int_equal(store_integrity_check(s, &err), MICA_OK);
    store_close(s);
    assert_false(files_have(dir, old_m));
    assert_true(file_has(dir, "", new_m));
    free(big);
    rm_dir(dir);
}

static void test_purge_by_key_scrubs_bytes(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "purge");
    store *s = open_store(dir, false);
    const char *gone = "MARKER-deletion-request-c0ffee", *stay = "MARKER-other-key-beef42";
    char id[32];
    /* More rows than one purge batch, half of them for the key being deleted. */
    for (int i = 0; i < 2400; i++) {
        snprintf(id, sizeof id, "r-%d", i);
        bool mine = i % 2 == 0;
        insert(s, &(store_log_row){.id = id,
                                   .created_at = 1000 + i,
                                   .key_id = mine ? "key_gone" : "key_stay",
                                   .prompt = mine ? gone : stay});
    }
    assert_true(files_have(dir, gone));
    int64_t deleted = 0;
    mica_err err;
    assert_int_equal(store_log_purge(s, &(store_filter){.key_id = "key_gone"}, &deleted, &err),
                     MICA_OK);
    assert_int_equal(deleted, 1200);
    assert_int_equal(count(s, &(store_filter){.key_id = "key_gone"}), 0);
    assert_int_equal(count(s, &(store_filter){.key_id = "key_stay"}), 1200);
    assert_false(files_have(dir, gone));
    assert_false(files_have(dir, "key_gone"));
    assert_true(files_have(dir, stay));
    store_close(s);
    rm_dir(dir);
}

static void test_sweeper_thread(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "sweeper");
    store *s = open_store(dir, false);
    mica_err err;
    int64_t hour = 3600 * 1000;
    insert(s, &(store_log_row){.id = "before-start", .created_at = store_now_ms() - 2 * hour});
    assert_int_equal(store_sweeper_start(s, hour, STORE_SWEEP_INTERVAL_MAX_MS + 1, &err),
                     MICA_EINVAL);
    assert_int_equal(store_sweeper_start(s, 0, 1000, &err), MICA_EINVAL);
    /* The first sweep runs at once. */
    assert_int_equal(store_sweeper_start(s, hour, 20, &err), MICA_OK);
    assert_int_equal(count(s, NULL), 0);
    assert_int_equal(store_sweeper_start(s, hour, 20, &err), MICA_EINVAL); /* already running */
    /* Later rows expire on the thread's schedule. */
    insert(s, &(store_log_row){.id = "expired", .created_at = store_now_ms() - 2 * hour});
    insert(s, &(store_log_row){.id = "fresh", .created_at = store_now_ms()});
    store_sweep_stats st = {0};
    /* The stats are updated after a sweep's checkpoint: wait for them, not for the rows. */
    for (int i = 0; i < 500 && st.deleted < 2; i++) {
        nanosleep(&(struct timespec){0, 10000000}, NULL);
        store_sweeper_stats(s, &st);
    }
    assert_int_equal(count(s, NULL), 1);
    assert_int_equal(count(s, &(store_filter){.id = "fresh"}), 1);
    assert_true(st.sweeps >= 2);
    assert_int_equal(st.deleted, 2);
    assert_int_equal(st.last, MICA_OK);
    store_sweeper_stop(s);
    store_sweeper_stats(s, &st);
    int64_t sweeps = st.sweeps;
    nanosleep(&(struct timespec){0, 100000000}, NULL);
    store_sweeper_stats(s, &st);
    assert_int_equal(st.sweeps, sweeps); /* stopped means stopped */
    /* It can start again; store_close stops it. */
    assert_int_equal(store_sweeper_start(s, hour, 20, &err), MICA_OK);
    store_close(s);
    rm_dir(dir);
}

/* ---- redaction ------------------------------------------------------------------------------ */

static char *redact(const char *in)
{
    core_buf b;
    core_buf_init(&b, 1 << 24);
    assert_int_equal(store_redact(in, strlen(in), &b), MICA_OK);
    return b.data;
}

static void expect_redact(const char *in, const char *want)
{
    char *got = redact(in);
    if (strcmp(got, want)) fail_msg("redact '%s': got '%s', want '%s'", in, got, want);
    free(got);
}

static void test_redact_masks_personal_data(void **state)
{
    static const char *const cases[][2] = {
        {"mail john.doe@example.com now", "mail [email] now"},
        {"<a.b+tag@sub.example.co.uk>.", "<[email]>."},
        {"john_doe@x.io", "[email]"},
        {"write to a@b.cd or call 555-123-4567", "write to [email] or call [phone]"},
        {"card 4111 1111 1111 1111 exp", "card [card] exp"},
        {"4111-1111-1111-1111", "[card]"},
        {"4111111111111111", "[card]"},
        {"amex 3782 822463 10005.", "amex [card]."},
        {"mc 5555555555554444, ok", "mc [card], ok"},
        {"call +1 (555) 123-4567 today", "call [phone] today"},
        {"+44 20 7946 0958", "[phone]"},
        {"+49 (0) 30 1234567", "[phone]"},
        {"(555) 123-4567", "[phone]"},
        {"555-123-4567", "[phone]"},
        {"555.123.4567", "[phone]"},
        {"030 1234567", "[phone]"},
        {"06 12 34 56 78", "[phone]"},
        {"ring 555-1234", "ring [phone]"},
        {"ssn 123-45-6789", "ssn [id]"},
        {"passport X12345678", "passport [id]"},
        {"NI AB123456C.", "NI [id]."},
        {"id 123456789", "id [id]"},
        {"bad luhn 4111 1111 1111 1112", "bad luhn [id]"},
        {"IBAN DE89 3704 0044 0532 0130 00", "IBAN DE89 [id]"},
        {"Grüße john@example.de, 東京", "Grüße [email], 東京"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_redact(cases[i][0], cases[i][1]);
}

static void test_redact_keeps_ordinary_text(void **state)
{
    static const char *const keep[] = {
        "Version 1.2.3 released 2026-11-28 at 12:30 UTC",
        "meeting on 2026-11-28 10:00, room 42",
        "price $1,299.99 for 42 apples",
        "server at 192.168.1.10 port 8080",
        "pi is 3.14159265358979",
        "the year 2026 and 1000000 people, 28.11.2026, 11/28/2026",
        "user@localhost and a@b and @handle and a@b.c1",
        "gpt4o sha256 mp3 H200 x86_64 covid19 Q4_0",
        "2025 1000",
        "call me maybe, ok? 1+1=2",
        "Grüße aus 東京 1234",
        "",
    };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) expect_redact(keep[i], keep[i]);
}

static void test_redact_is_linear_and_capped(void **state)
{
    /* Shapes that would make a naive matcher rescan: long dotted, dashed and @-chains. */
    const char *units[] = {"1-", "a.", "a@", "12 ", "1."};
    size_t n = 256 * 1024;
    char *in = malloc(n + 1);
    assert_non_null(in);
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t k = strlen(units[u]);
        for (size_t i = 0; i < n; i++) in[i] = units[u][i % k];
        in[n] = '\0';
        double t0 = core_now();
        core_buf b;
        core_buf_init(&b, 4 * n);
        assert_int_equal(store_redact(in, n, &b), MICA_OK);
        double dt = core_now() - t0;
        if (dt > 2.0) fail_msg("redacting 256 KiB of '%s...' took %.2f s", units[u], dt);
        core_buf_free(&b);
    }
    free(in);
    core_buf b;
    core_buf_init(&b, 8);
    const char *text = "this text is longer than eight bytes";
    assert_int_equal(store_redact(text, strlen(text), &b), MICA_ENOMEM);
    core_buf_free(&b);
}

static void test_redacting_store(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "redact");
    store *s = open_store(dir, true);
    insert(s, &(store_log_row){.id = "r",
                               .created_at = 1,
                               .prompt = "I am jane.roe@example.org, card 4242 4242 4242 4242",
                               .response = "Noted, jane.roe@example.org"});
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    mica_err err;
    assert_int_equal(store_log_export(s, NULL, f, NULL, &err), MICA_OK);
    fclose(f);
    assert_non_null(strstr(buf, "\"prompt\":\"I am [email], card [card]\""));
    assert_non_null(strstr(buf, "\"response\":\"Noted, [email]\""));
    free(buf);
    assert_false(files_have(dir, "jane.roe"));
    assert_false(files_have(dir, "4242 4242"));
    store_close(s);
    rm_dir(dir);
}

/* ---- retention and time values ------------------------------------------------------------ */

static void test_parse_retention(void **state)
{
    int64_t ms = 0;
    mica_err err;
    assert_int_equal(store_parse_retention("72h", false, &ms, &err), MICA_OK);
    assert_int_equal(ms, STORE_RETENTION_MAX_MS);
    assert_int_equal(store_parse_retention("30m", false, &ms, &err), MICA_OK);
    assert_int_equal(ms, 30 * 60 * 1000);
    assert_int_equal(store_parse_retention("3d", false, &ms, &err), MICA_OK);
    assert_int_equal(ms, 3 * 86400 * 1000LL);
    assert_int_equal(store_parse_retention("3600s", false, &ms, &err), MICA_OK);
    assert_int_equal(ms, 3600 * 1000);
    /* Longer than 72 h only when allowed. */
    assert_int_equal(store_parse_retention("73h", false, &ms, &err), MICA_ERANGE);
    assert_non_null(strstr(err.msg, "--allow-long-retention"));
    assert_int_equal(store_parse_retention("4d", false, &ms, &err), MICA_ERANGE);
    assert_int_equal(store_parse_retention("4d", true, &ms, &err), MICA_OK);
    assert_int_equal(ms, 4 * 86400 * 1000LL);
    static const char *const bad[] = {"0h",   "h",    "72", "72x",  "-1h",
                                      "72hh", "7 2h", "",   "1.5h", "999999999999999999d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ms = 12345;
        if (store_parse_retention(bad[i], true, &ms, &err) == MICA_OK)
            fail_msg("retention '%s' was accepted as %lld ms", bad[i], (long long)ms);
        assert_int_equal(ms, 12345);
        assert_non_null(strstr(err.msg, bad[i]));
    }
}

static void test_parse_and_format_time(void **state)
{
    static const struct {
        const char *in;
        int64_t ms;
    } good[] = {
        {"0", 0},
        {"1795867200", 1795867200000LL},
        {"2026-11-28T12:00:00Z", 1795867200000LL},
        {"2026-11-28T13:00:00+01:00", 1795867200000LL},
        {"2026-11-28T07:30:00-0430", 1795867200000LL},
        {"2026-11-28 12:00Z", 1795867200000LL},
        {"2026-11-28T12:00:00.25Z", 1795867200250LL},
        {"2026-11-28", 1795824000000LL},
        {"2024-02-29", 1709164800000LL},
        {"2000-01-01T00:00:00Z", 946684800000LL},
    };
    mica_err err;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t ms = -1;
        if (store_parse_time(good[i].in, &ms, &err) != MICA_OK)
            fail_msg("time '%s' refused: %s", good[i].in, err.msg);
        if (ms != good[i].ms)
            fail_msg("time '%s': got %lld want %lld", good[i].in, (long long)ms,
                     (long long)good[i].ms);
    }
    static const char *const bad[] = {"2026",
                                      "2026-02-29",
                                      "2026-13-01",
                                      "2026-11-31",
                                      "2026-11-28T12:00:00",
                                      "2026-11-28T24:00:00Z",
                                      "2026-11-28T12:60Z",
                                      "2026-11-28T12:00:00+25:00",
                                      "2026-11-28Z",
                                      "yesterday",
                                      "-5",
                                      "99999999999999999",
                                      ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 7;
        if (store_parse_time(bad[i], &ms, &err) == MICA_OK)
            fail_msg("time '%s' accepted as %lld", bad[i], (long long)ms);
        assert_int_equal(ms, 7);
    }
    char buf[40];
    store_format_time(1795867200123LL, buf, sizeof buf);
    assert_string_equal(buf, "2026-11-28T12:00:00.123Z");
    store_format_time(-1, buf, sizeof buf);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    int64_t now = store_now_ms();
    assert_true(now > 1767225600000LL); /* after 2026-01-01 */
}

/* ---- crash safety ------------------------------------------------------------------------- */

#define CRASH_ID_LEN 24

/* The child: inserts rows as fast as it can and reports each id after its commit. */
static void crash_child(const char *dir, int round, int fd)
{
    store *s = NULL;
    mica_err err;
    store_opts o = {.create = true};
    if (store_open(&s, dir, &o, &err)) _exit(2);
    char prompt[3000];
    memset(prompt, 'p', sizeof prompt - 1);
    prompt[sizeof prompt - 1] = '\0';
    for (int i = 0;; i++) {
        char id[CRASH_ID_LEN] = {0};
        snprintf(id, sizeof id, "crash-%d-%06d", round, i);
        store_log_row r = make_row(id, store_now_ms(), "key_crash", prompt, prompt);
        if (store_log_insert(s, &r, &err)) _exit(3);
        if (write(fd, id, sizeof id) != (ssize_t)sizeof id) _exit(4);
    }
}

static void test_crash_safety_sigkill(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "crash");
    char(*ids)[CRASH_ID_LEN] = malloc(200000 * sizeof *ids);
    assert_non_null(ids);
    int n_ids = 0;
    for (int round = 0; round < 3; round++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            crash_child(dir, round, p[1]);
        }
        close(p[1]);
        int got = 0;
        bool killed = false;
        char rec[CRASH_ID_LEN];
        for (;;) {
            ssize_t k = read(p[0], rec, sizeof rec);
            if (k == 0) break;
            if (k < 0 && errno == EINTR) continue;
            assert_int_equal(k, sizeof rec); /* records are written atomically (< PIPE_BUF) */
            if (n_ids < 200000) memcpy(ids[n_ids++], rec, sizeof rec);
            /* Kill in the middle of the burst, while it is still writing. */
            if (++got == 150 + 100 * round && !killed) {
                assert_int_equal(kill(pid, SIGKILL), 0);
                killed = true;
            }
        }
        close(p[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
            fail_msg("round %d: the child ended with status %d before the kill", round,
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1);

        store *s = open_store(dir, false);
        mica_err err;
        if (store_integrity_check(s, &err)) fail_msg("round %d: %s", round, err.msg);
        for (int i = 0; i < n_ids; i++)
            if (count(s, &(store_filter){.id = ids[i]}) != 1)
                fail_msg("round %d: request %s got its commit before the kill but has no row",
                         round, ids[i]);
        /* At most one row was committed but not yet reported when the kill came. */
        int64_t rows = count(s, NULL);
        if (rows < n_ids || rows > n_ids + round + 1)
            fail_msg("round %d: %lld rows for %d reported ids", round, (long long)rows, n_ids);
        store_close(s);
    }
    free(ids);
    rm_dir(dir);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define N_THREADS  4
#define PER_THREAD 250

typedef struct writer {
    store *s;
    int t;
    mica_status st;
    char msg[MICA_ERR_MSG_MAX];
} writer;

/* Inserts PER_THREAD fresh rows and, every tenth, one long expired row for the sweeper. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    for (int i = 0; i < PER_THREAD && !w->st; i++) {
        char id[32], prompt[64];
        snprintf(id, sizeof id, "t%d-%d", w->t, i);
        snprintf(prompt, sizeof prompt, "prompt of thread %d number %d", w->t, i);
        store_log_row r =
            make_row(id, store_now_ms(), w->t % 2 ? "key_odd" : "key_even", prompt, id);
        mica_err err;
        if ((w->st = store_log_insert(w->s, &r, &err))) break;
        if (i % 10 == 0) {
            snprintf(id, sizeof id, "t%d-old-%d", w->t, i);
            r = make_row(id, 1, "key_old", prompt, id);
            w->st = store_log_insert(w->s, &r, &err);
        }
        if (w->st) snprintf(w->msg, sizeof w->msg, "%s", err.msg);
    }
    return NULL;
}

static void test_concurrent_inserts(void **state)
{
    char dir[1024];
    tmp_dir(dir, sizeof dir, "threads");
    store *s = open_store(dir, false);
    mica_err err;
    /* The sweeper deletes expired rows every 5 ms while four threads insert. */
    assert_int_equal(store_sweeper_start(s, STORE_RETENTION_MAX_MS, 5, &err), MICA_OK);
    writer w[N_THREADS];
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        w[t] = (writer){.s = s, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
    }
    store_filter fresh = {.key_id = "key_odd"};
    int64_t last = 0;
    for (int i = 0; i < 50; i++) {
        int64_t n = count(s, &fresh); /* a reader interleaves with the writers */
        assert_true(n >= last);
        last = n;
    }
    for (int t = 0; t < N_THREADS; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        if (w[t].st) fail_msg("thread %d: %s", t, w[t].msg);
    }
    store_sweeper_stop(s);
    store_sweep_stats st;
    store_sweeper_stats(s, &st);
    assert_int_equal(st.last, MICA_OK);
    int64_t deleted = 0;
    assert_int_equal(store_sweep(s, store_now_ms(), STORE_RETENTION_MAX_MS, &deleted, &err),
                     MICA_OK);
    assert_int_equal(st.deleted + deleted, N_THREADS * PER_THREAD / 10);
    assert_int_equal(count(s, NULL), N_THREADS * PER_THREAD);
    assert_int_equal(count(s, &fresh), N_THREADS * PER_THREAD / 2);
    for (int t = 0; t < N_THREADS; t++) {
        char id[32];
        snprintf(id, sizeof id, "t%d-%d", t, PER_THREAD - 1);
        assert_int_equal(count(s, &(store_filter){.id = id}), 1);
    }
    assert_int_equal(store_integrity_check(s, &err), MICA_OK);
    store_close(s);
    rm_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_creates_private_files_and_schema),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_insert_and_query),
        cmocka_unit_test(test_export_json_lines),
        cmocka_unit_test(test_no_content_rows_leave_no_trace),
        cmocka_unit_test(test_sweep_scrubs_db_and_wal),
        cmocka_unit_test(test_purge_by_key_scrubs_bytes),
        cmocka_unit_test(test_sweeper_thread),
        cmocka_unit_test(test_redact_masks_personal_data),
        cmocka_unit_test(test_redact_keeps_ordinary_text),
        cmocka_unit_test(test_redact_is_linear_and_capped),
        cmocka_unit_test(test_redacting_store),
        cmocka_unit_test(test_parse_retention),
        cmocka_unit_test(test_parse_and_format_time),
        cmocka_unit_test(test_crash_safety_sigkill),
        cmocka_unit_test(test_concurrent_inserts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
