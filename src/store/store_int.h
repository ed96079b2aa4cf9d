/*
 * store_int.h - what the store's files share: the store struct (one SQLite connection behind
 * a mutex, the cached insert statement, the sweeper thread's state) and SQLite error
 * helpers. Only the .c files of src/store include it.
 */
#ifndef MICA_STORE_INT_H
#define MICA_STORE_INT_H

#include "store.h"

#include <pthread.h>
#include <sqlite3.h>

struct store {
    sqlite3 *db;
    char *path; /* DIR/requests.db */
    bool redact;
    pthread_mutex_t mu; /* serialises every use of db and the statements */
    sqlite3_stmt *insert;

    /* The background sweeper (store_sweeper.c); guarded by sweep_mu. */
    pthread_mutex_t sweep_mu;
    pthread_cond_t sweep_cv;
    pthread_t sweep_thread;
    bool sweep_running, sweep_stop;
    int64_t sweep_retention_ms, sweep_interval_ms;
    store_sweep_stats stats;
};

/* Fills err with "PATH: what: SQLite's message" and returns status. */
mica_status store_fail_db(const store *s, mica_err *err, mica_status status, const char *what);
/* Runs SQL without results (one or more statements); errors name `what`. */
mica_status store_exec(store *s, const char *sql, const char *what, mica_err *err);

#endif
