/*
 * test_privacy.c - the gateway's request log, checked on the bytes that reach the disk and
 * the terminal: a unique marker sent with "disable_logs": true, with X-Disable-Logs: 1, with a
 * key made with --no-content-logs, or to a server started with --no-content-logs appears
 * neither in requests.db, nor in its WAL, nor in what `mica serve` prints, while its metadata
 * row is written; without any of them the marker is stored. Rows older than the retention
 * leave both files after a sweep; retentions over 72 h are refused unless allowed; after
 * `kill -9` during a burst the database is intact and holds a row for every answered request.
 * API keys appear neither in the log nor in the output.
 */
#define _GNU_SOURCE
#include "http_client.h"
#include "serve_child.h"

#include "server/srv.h"
#include "store/store.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MODEL_PATH(buf) TU_SHARED_PATH(buf, "testdata/stories260K/models/stories260K.F32.gguf")

static void fresh_dir(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/privacy_%d_%s", tu_tmpdir(), (int)getpid(), name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    assert_int_equal(system(cmd), 0);
}

/* Whether the marker is in the database or its WAL. */
static bool db_has(const char *dir, const char *marker)
{
    char db[600], wal[620];
    snprintf(db, sizeof db, "%s/" STORE_DB_NAME, dir);
    snprintf(wal, sizeof wal, "%s-wal", db);
    return tu_file_has(db, marker) || tu_file_has(wal, marker);
}

/* A chat request whose prompt carries the marker; returns the response id (static buffer). */
static const char *chat(uint16_t port, const char *key, const char *header, const char *marker,
                        bool body_flag, bool stream)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell about "
             "%s\"}],\"max_tokens\":4,\"temperature\":0%s%s}",
             marker, body_flag ? ",\"disable_logs\":true" : "", stream ? ",\"stream\":true" : "");
    reply r = http_perform(&(http_req){
        .port = port, .path = "/v1/chat/completions", .body = body, .key = key, .header = header});
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    static char id[64];
    const char *p = strstr(r.body, "\"id\":\"");
    assert_non_null(p);
    snprintf(id, sizeof id, "%.*s", (int)strcspn(p + 6, "\""), p + 6);
    reply_free(&r);
    return id;
}

static void add_key(const char *dir, bool no_content, char *secret)
{
    char path[600];
    snprintf(path, sizeof path, "%s/keys.json", dir);
    srv_keyring ring;
    mica_err err;
    if (srv_keys_load(&ring, path, &err) ||
        srv_keys_add(&ring, &(srv_key){.tier = "standard", .no_content_logs = no_content}, secret,
                     80, &err) ||
        srv_keys_save(&ring, path, &err))
        fail_msg("%s", err.msg);
    srv_keys_free(&ring);
}

/* The stored row of a request: whether it exists and whether it holds content. */
typedef struct row_seen {
    bool found, has_prompt, has_response;
    char prompt[512];
} row_seen;

static mica_status on_row(void *ctx, const store_log_row *row, mica_err *err)
{
    (void)err;
    row_seen *r = ctx;
    r->found = true;
    r->has_prompt = row->prompt != NULL;
    r->has_response = row->response != NULL;
    snprintf(r->prompt, sizeof r->prompt, "%s", row->prompt ? row->prompt : "");
    return MICA_OK;
}

static row_seen stored_row(store *db, const char *id)
{
    row_seen r = {0};
    mica_err err;
    if (store_log_each(db, &(store_filter){.id = id}, on_row, &r, &err)) fail_msg("%s", err.msg);
    return r;
}

/* A `mica serve` child on stories260K with its data (keys, log) and output in a fresh
 * directory: child_prepare makes the directory, child_start runs the server (with one
 * extra flag, or NULL) and waits for its port. */
typedef struct child {
    char model[1024], dir[512], log[600];
    pid_t pid;
    uint16_t port;
} child;

static void child_prepare(child *c, const char *name)
{
    MODEL_PATH(c->model);
    fresh_dir(c->dir, sizeof c->dir, name);
    snprintf(c->log, sizeof c->log, "%s/serve.log", c->dir);
}

static void child_start(child *c, const char *extra)
{
    char mspec[1100];
    snprintf(mspec, sizeof mspec, "stories=%s", c->model);
    const char *args[] = {"-m", mspec, "--port", "0", "--data-dir", c->dir, "-t", "1", extra, NULL};
    c->pid = spawn_serve(args, c->log);
    c->port = wait_port(c->log, c->pid);
    assert_true(c->port > 0);
}

static void stop_child(pid_t pid)
{
    kill(pid, SIGTERM);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- disable_logs in its four forms ---------------------------------------------------- */

static void test_disable_logs_forms(void **state)
{
    (void)state;
    child c;
    child_prepare(&c, "forms");
    const char *dir = c.dir, *log = c.log;
    char key[80], quiet_key[80];
    add_key(dir, false, key);
    add_key(dir, true, quiet_key);
    child_start(&c, NULL);
    const pid_t pid = c.pid;
    const uint16_t port = c.port;

    char m_body[32], m_stream[32], m_header[32], m_key[32], m_plain[32], m_plain_stream[32];
    snprintf(m_body, sizeof m_body, "QZXbody%d", (int)getpid());
    snprintf(m_stream, sizeof m_stream, "QZXstream%d", (int)getpid());
    snprintf(m_header, sizeof m_header, "QZXheader%d", (int)getpid());
    snprintf(m_key, sizeof m_key, "QZXkey%d", (int)getpid());
    snprintf(m_plain, sizeof m_plain, "QZXplain%d", (int)getpid());
    snprintf(m_plain_stream, sizeof m_plain_stream, "QZXplainstream%d", (int)getpid());
    char ids[6][64];
    strcpy(ids[0], chat(port, key, NULL, m_body, true, false));
    strcpy(ids[1], chat(port, key, NULL, m_stream, true, true));
    strcpy(ids[2], chat(port, key, "X-Disable-Logs: 1", m_header, false, false));
    strcpy(ids[3], chat(port, quiet_key, NULL, m_key, false, true));
    strcpy(ids[4], chat(port, key, NULL, m_plain, false, false));
    strcpy(ids[5], chat(port, key, NULL, m_plain_stream, false, true));

    /* While the server runs: the WAL holds the recent rows. */
    const char *hidden[] = {m_body, m_stream, m_header, m_key};
    for (int i = 0; i < 4; i++)
        if (db_has(dir, hidden[i])) fail_msg("marker %s reached the request log", hidden[i]);
    assert_true(db_has(dir, m_plain));
    assert_true(db_has(dir, m_plain_stream));
    /* Keys are stored nowhere but as hashes: not in the log, not in the output. */
    assert_false(db_has(dir, key + 3) || db_has(dir, quiet_key + 3));
    stop_child(pid);
    assert_false(tu_file_has(log, key + 3) || tu_file_has(log, quiet_key + 3));
    for (int i = 0; i < 4; i++) {
        assert_false(db_has(dir, hidden[i]));
        if (tu_file_has(log, hidden[i]))
            fail_msg("marker %s reached the server's output", hidden[i]);
    }

    /* Every request has its metadata row; content only where logging was allowed. */
    store *db;
    mica_err err;
    if (store_open(&db, dir, &(store_opts){0}, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < 6; i++) {
        const row_seen r = stored_row(db, ids[i]);
        assert_true(r.found);
        assert_int_equal(r.has_prompt, i >= 4);
        assert_int_equal(r.has_response, i >= 4);
    }
    assert_non_null(strstr(stored_row(db, ids[4]).prompt, m_plain));
    store_close(db);
}

static void test_server_wide_no_content(void **state)
{
    (void)state;
    child c;
    child_prepare(&c, "serverwide");
    child_start(&c, "--no-content-logs");
    const char *dir = c.dir, *log = c.log;
    const pid_t pid = c.pid;
    const uint16_t port = c.port;
    char marker[32], id[64];
    snprintf(marker, sizeof marker, "QZXwide%d", (int)getpid());
    strcpy(id, chat(port, NULL, NULL, marker, false, false));
    assert_false(db_has(dir, marker));
    stop_child(pid);
    assert_false(db_has(dir, marker));
    assert_false(tu_file_has(log, marker));
    store *db;
    mica_err err;
    if (store_open(&db, dir, &(store_opts){0}, &err)) fail_msg("%s", err.msg);
    const row_seen r = stored_row(db, id);
    assert_true(r.found);
    assert_false(r.has_prompt || r.has_response);
    store_close(db);
}

/* ---- retention ------------------------------------------------------------------------- */

static void test_retention_sweeps_rows_and_bytes(void **state)
{
    (void)state;
    char model[1024], dir[512];
    MODEL_PATH(model);
    fresh_dir(dir, sizeof dir, "retention");
    srv_config c;
    http_test_config(&c, model, dir);
    c.log_retention_ms = 1500;
    srv *s;
    mica_err err;
    if (srv_start(&s, &c, &err)) fail_msg("%s", err.msg);
    char marker[32];
    snprintf(marker, sizeof marker, "QZXold%d", (int)getpid());
    chat(srv_port(s), NULL, NULL, marker, false, false);
    assert_true(db_has(dir, marker));
    /* The sweeper runs every retention / 4: the row expires after 1.5 s and then goes. */
    bool gone = false;
    for (int i = 0; i < 200 && !gone; i++) {
        usleep(50000);
        gone = !db_has(dir, marker);
    }
    srv_stop(s);
    assert_true(gone);
    store *db;
    if (store_open(&db, dir, &(store_opts){0}, &err)) fail_msg("%s", err.msg);
    int64_t n = -1;
    if (store_log_count(db, &(store_filter){0}, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(n, 0);
    store_close(db);
}

static void test_retention_limit(void **state)
{
    (void)state;
    srv_config c;
    srv_config_defaults(&c);
    assert_int_equal(c.log_retention_ms, 72LL * 3600 * 1000);
    mica_err err;
    if (srv_config_add_model(&c, "m=/nonexistent.gguf", &err)) fail_msg("%s", err.msg);
    assert_int_equal(srv_config_check(&c, &err), MICA_OK);
    c.log_retention_ms = 73LL * 3600 * 1000;
    assert_int_equal(srv_config_check(&c, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "--allow-long-retention"));
    c.allow_long_retention = true;
    assert_int_equal(srv_config_check(&c, &err), MICA_OK);

    /* The same through the CLI: refused before anything is loaded, named in the message. */
    char dir[512], log[600];
    fresh_dir(dir, sizeof dir, "limit");
    snprintf(log, sizeof log, "%s/serve.log", dir);
    const char *args[] = {"-m", "m=/nonexistent.gguf", "--log-retention", "100h", NULL};
    const pid_t pid = spawn_serve(args, log);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    char *out = tu_read_file(log, NULL);
    assert_non_null(strstr(out, "72 h"));
    free(out);
}

/* ---- kill -9 during a burst ------------------------------------------------------------ */

#define BURST_CLIENTS 3
#define BURST_MAX_IDS 512

typedef struct burst {
    uint16_t port;
    atomic_bool stop;
    pthread_mutex_t mu;
    char ids[BURST_MAX_IDS][64]; /* requests that got their whole answer */
    int n_ids;
} burst;

static void *burst_client(void *arg)
{
    burst *b = arg;
    const char *body = "{\"model\":\"stories\",\"prompt\":\"Once upon a time\",\"max_tokens\":3}";
    while (!atomic_load(&b->stop)) {
        reply r =
            http_perform(&(http_req){.port = b->port, .path = "/v1/completions", .body = body});
        const char *p = r.rc == CURLE_OK && r.status == 200 ? strstr(r.body, "\"id\":\"") : NULL;
        pthread_mutex_lock(&b->mu);
        if (p && b->n_ids < BURST_MAX_IDS)
            snprintf(b->ids[b->n_ids++], 64, "%.*s", (int)strcspn(p + 6, "\""), p + 6);
        pthread_mutex_unlock(&b->mu);
        if (r.rc != CURLE_OK) atomic_store(&b->stop, true); /* the server is gone */
        reply_free(&r);
    }
    return NULL;
}

static void test_kill9_keeps_answered_rows(void **state)
{
    (void)state;
    child c;
    child_prepare(&c, "kill9");
    child_start(&c, NULL);
    const char *dir = c.dir;
    const pid_t pid = c.pid;
    static burst b;
    memset(&b, 0, sizeof b);
    b.port = c.port;
    pthread_mutex_init(&b.mu, NULL);
    pthread_t th[BURST_CLIENTS];
    for (int i = 0; i < BURST_CLIENTS; i++) pthread_create(&th[i], NULL, burst_client, &b);
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&b.mu);
        const int n = b.n_ids;
        pthread_mutex_unlock(&b.mu);
        if (n >= 30) break;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    atomic_store(&b.stop, true);
    for (int i = 0; i < BURST_CLIENTS; i++) pthread_join(th[i], NULL);
    assert_true(b.n_ids >= 30);

    store *db;
    mica_err err;
    if (store_open(&db, dir, &(store_opts){0}, &err)) fail_msg("%s", err.msg);
    if (store_integrity_check(db, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < b.n_ids; i++)
        if (!stored_row(db, b.ids[i]).found) fail_msg("answered request %s has no row", b.ids[i]);
    store_close(db);
    pthread_mutex_destroy(&b.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disable_logs_forms),
        cmocka_unit_test(test_server_wide_no_content),
        cmocka_unit_test(test_retention_sweeps_rows_and_bytes),
        cmocka_unit_test(test_retention_limit),
        cmocka_unit_test(test_kill9_keeps_answered_rows),
    };
    return cmocka_run_group_tests(tests, http_tests_setup, NULL);
}
