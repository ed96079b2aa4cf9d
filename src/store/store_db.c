/*
 * store_db.c - opening and closing the request log: the data directory and file modes, the
 * connection's pragmas (WAL, secure_delete, busy timeout), the schema and its migrations,
 * integrity checks and WAL checkpoints. Rows are in store_log.c. Called through store.h by
 * the gateway and `mica logs`.
 */
#define _POSIX_C_SOURCE 200809L
#include "store_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS    5000
#define JOURNAL_SIZE_LIMIT (64LL << 20) /* a WAL reset by a checkpoint is cut back to this */

/* Each migration moves the schema from version - 1 to version; never edit a shipped one. */
static const struct {
    int version;
    const char *description;
    const char *sql;
} migrations[] = {
    {1, "request log",
     "CREATE TABLE request_log("
     " seq INTEGER PRIMARY KEY,"
     " id TEXT NOT NULL UNIQUE,"
     " created_at INTEGER NOT NULL," /* unix ms */
     " key_id TEXT,"
     " tier TEXT NOT NULL,"
     " model TEXT NOT NULL,"
     " endpoint TEXT NOT NULL,"
     " status INTEGER NOT NULL,"
     " prompt_tokens INTEGER NOT NULL,"
     " completion_tokens INTEGER NOT NULL,"
     " queue_ms INTEGER NOT NULL,"
     " ttft_ms INTEGER NOT NULL,"
     " total_ms INTEGER NOT NULL,"
     " prompt TEXT,"
     " response TEXT);"
     "CREATE INDEX request_log_created ON request_log(created_at);"
     "CREATE INDEX request_log_key ON request_log(key_id, created_at);"},
};

static_assert(sizeof migrations / sizeof migrations[0] == STORE_SCHEMA_VERSION,
              "one migration per schema version");

mica_status store_fail_db(const store *s, mica_err *err, mica_status status, const char *what)
{
    return core_fail(err, status, "%s: %s: %s", s->path, what,
                     s->db ? sqlite3_errmsg(s->db) : "no connection");
}

mica_status store_exec(store *s, const char *sql, const char *what, mica_err *err)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return store_fail_db(s, err, MICA_EIO, what);
    return MICA_OK;
}

/* mkdir -p with mode 0700 for the directories it creates. */
static mica_status make_dirs(const char *dir, mica_err *err)
{
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    if (!p) return core_fail(err, MICA_ENOMEM, "%s: out of memory", dir);
    memcpy(p, dir, n + 1);
    mica_status st = MICA_OK;
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            st = core_fail(err, MICA_EIO, "%s: %s", p, strerror(errno));
            break;
        }
        p[i] = c;
    }
    free(p);
    return st;
}

/* Creates the database file with mode 0600 before SQLite does (SQLite would use 0644, and the
 * -wal and -shm files inherit the database's mode), and narrows wider modes of existing files:
 * prompts are private. */
static mica_status prepare_file(const char *path, bool create, mica_err *err)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
    if (fd < 0) {
        if (errno == ENOENT)
            return core_fail(err, MICA_EIO, "%s: no request log here (mica serve creates it)",
                             path);
        return core_fail(err, MICA_EIO, "%s: %s", path, strerror(errno));
    }
    close(fd);
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        if (stat(p, &st) == 0 && (st.st_mode & 077) && chmod(p, 0600) != 0)
            return core_fail(err, MICA_EIO, "%s: cannot narrow mode to 0600: %s", p,
                             strerror(errno));
    }
    return MICA_OK;
}

/* Runs a pragma that answers one row and checks its first column against want. */
static mica_status pragma_expect(store *s, const char *sql, const char *want, mica_err *err)
{
    sqlite3_stmt *st = NULL;
    mica_status rc = MICA_OK;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return store_fail_db(s, err, MICA_EIO, sql);
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        rc = store_fail_db(s, err, r == SQLITE_NOTADB ? MICA_EFORMAT : MICA_EIO, sql);
    } else if (want) {
        const char *got = (const char *)sqlite3_column_text(st, 0);
        if (!got || strcmp(got, want))
            rc = core_fail(err, MICA_EUNSUPPORTED, "%s: %s answered '%s', not '%s'", s->path, sql,
                           got ? got : "(null)", want);
    }
    sqlite3_finalize(st);
    return rc;
}

static mica_status set_pragmas(store *s, mica_err *err)
{
    char limit[64];
    snprintf(limit, sizeof limit, "PRAGMA journal_size_limit=%lld", JOURNAL_SIZE_LIMIT);
    mica_status st;
    if ((st = pragma_expect(s, "PRAGMA secure_delete=ON", "1", err)) ||
        (st = pragma_expect(s, "PRAGMA journal_mode=WAL", "wal", err)) ||
        (st = pragma_expect(s, limit, NULL, err)) ||
        (st = store_exec(s, "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY", "pragmas", err)))
        return st;
    return MICA_OK;
}

/* The recorded version, 0 for a fresh database. */
static mica_status read_version(store *s, int *version, mica_err *err)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT version FROM schema_version WHERE id = 1";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return store_fail_db(s, err, MICA_EFORMAT, "reading the schema version");
    int r = sqlite3_step(st);
    *version = r == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (r != SQLITE_ROW && r != SQLITE_DONE)
        return store_fail_db(s, err, MICA_EIO, "reading the schema version");
    return MICA_OK;
}

static mica_status apply_migration(store *s, int i, mica_err *err)
{
    mica_status st = store_exec(s, migrations[i].sql, migrations[i].description, err);
    if (st) return st;
    sqlite3_stmt *ins = NULL;
    const char *sql = "INSERT INTO migrations(version, description, applied_at) VALUES(?, ?, ?);";
    if (sqlite3_prepare_v2(s->db, sql, -1, &ins, NULL) != SQLITE_OK)
        return store_fail_db(s, err, MICA_EIO, "recording a migration");
    sqlite3_bind_int(ins, 1, migrations[i].version);
    sqlite3_bind_text(ins, 2, migrations[i].description, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 3, store_now_ms());
    int r = sqlite3_step(ins);
    sqlite3_finalize(ins);
    if (r != SQLITE_DONE) return store_fail_db(s, err, MICA_EIO, "recording a migration");
    char upd[128];
    snprintf(upd, sizeof upd, "INSERT OR REPLACE INTO schema_version(id, version) VALUES(1, %d)",
             migrations[i].version);
    return store_exec(s, upd, "recording the schema version", err);
}

static mica_status migrate(store *s, mica_err *err)
{
    mica_status st = store_exec(s,
                                "BEGIN IMMEDIATE;"
                                "CREATE TABLE IF NOT EXISTS schema_version("
                                " id INTEGER PRIMARY KEY CHECK (id = 1),"
                                " version INTEGER NOT NULL);"
                                "CREATE TABLE IF NOT EXISTS migrations("
                                " version INTEGER PRIMARY KEY,"
                                " description TEXT NOT NULL,"
                                " applied_at INTEGER NOT NULL);",
                                "creating the schema tables", err);
    if (st) return st;
    int version;
    if ((st = read_version(s, &version, err))) goto fail;
    if (version > STORE_SCHEMA_VERSION) {
        st = core_fail(err, MICA_EUNSUPPORTED,
                       "%s: schema version %d is newer than this mica's (%d); upgrade mica",
                       s->path, version, STORE_SCHEMA_VERSION);
        goto fail;
    }
    for (int i = 0; i < STORE_SCHEMA_VERSION; i++)
        if (migrations[i].version > version && (st = apply_migration(s, i, err))) goto fail;
    return store_exec(s, "COMMIT", "committing the schema", err);
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

static mica_status prepare_insert(store *s, mica_err *err)
{
    const char *sql = "INSERT INTO request_log(id, created_at, key_id, tier, model, endpoint,"
                      " status, prompt_tokens, completion_tokens, queue_ms, ttft_ms, total_ms,"
                      " prompt, response) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->insert, NULL) !=
        SQLITE_OK)
        return store_fail_db(s, err, MICA_EIO, "preparing the insert");
    return MICA_OK;
}

static mica_status open_db(store *s, bool create, mica_err *err)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW;
    if (create) flags |= SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(s->path, &s->db, flags, NULL) != SQLITE_OK)
        return store_fail_db(s, err, MICA_EIO, "opening");
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    mica_status st;
    if ((st = set_pragmas(s, err)) || (st = migrate(s, err)) || (st = prepare_insert(s, err)))
        return st;
    return MICA_OK;
}

mica_status store_open(store **out, const char *dir, const store_opts *opts, mica_err *err)
{
    static const store_opts defaults = {0};
    if (!opts) opts = &defaults;
    *out = NULL;
    if (!dir || !dir[0]) return core_fail(err, MICA_EINVAL, "store: empty data directory");
    store *s = core_calloc(1, sizeof *s);
    size_t n = strlen(dir) + sizeof STORE_DB_NAME + 1;
    if (!s || !(s->path = malloc(n))) {
        free(s);
        return core_fail(err, MICA_ENOMEM, "%s: out of memory", dir);
    }
    snprintf(s->path, n, "%s/%s", dir, STORE_DB_NAME);
    s->redact = opts->redact;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->sweep_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->sweep_cv, &ca);
    pthread_condattr_destroy(&ca);
    mica_status st;
    if ((opts->create && (st = make_dirs(dir, err))) ||
        (st = prepare_file(s->path, opts->create, err)) || (st = open_db(s, opts->create, err))) {
        store_close(s);
        return st;
    }
    *out = s;
    return MICA_OK;
}

void store_close(store *s)
{
    if (!s) return;
    store_sweeper_stop(s);
    sqlite3_finalize(s->insert);
    sqlite3_close(s->db); /* the last connection checkpoints and removes the WAL */
    pthread_cond_destroy(&s->sweep_cv);
    pthread_mutex_destroy(&s->sweep_mu);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

const char *store_path(const store *s)
{
    return s->path;
}

mica_status store_schema_version(store *s, int *version, mica_err *err)
{
    pthread_mutex_lock(&s->mu);
    mica_status st = read_version(s, version, err);
    pthread_mutex_unlock(&s->mu);
    return st;
}

mica_status store_integrity_check(store *s, mica_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    mica_status rc = MICA_OK;
    if (sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK) {
        rc = store_fail_db(s, err, MICA_EIO, "integrity check");
        goto done;
    }
    int r = sqlite3_step(st);
    const char *msg = r == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (r != SQLITE_ROW)
        rc = store_fail_db(s, err, MICA_EFORMAT, "integrity check");
    else if (!msg || strcmp(msg, "ok"))
        rc = core_fail(err, MICA_EFORMAT, "%s: integrity check: %s", s->path, msg ? msg : "(null)");
done:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static mica_status checkpoint_locked(store *s, mica_err *err)
{
    int n_log = 0, n_done = 0;
    int r = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &n_log, &n_done);
    if (r == SQLITE_BUSY || (r == SQLITE_OK && n_log != n_done))
        return core_fail(err, MICA_EBUSY,
                         "%s: checkpoint: another connection is reading; deleted rows may stay "
                         "in the WAL until the next sweep",
                         s->path);
    if (r != SQLITE_OK) return store_fail_db(s, err, MICA_EIO, "checkpoint");
    return MICA_OK;
}

mica_status store_checkpoint(store *s, mica_err *err)
{
    pthread_mutex_lock(&s->mu);
    mica_status st = checkpoint_locked(s, err);
    pthread_mutex_unlock(&s->mu);
    return st;
}
