/*
 * store.h - the gateway's request log in SQLite (DATA_DIR/requests.db): one row per answered
 * request with its metadata and, unless the request or key disabled it, its prompt and
 * response. WAL journal, secure_delete (deleted rows are overwritten with zeros), a retention
 * sweeper that deletes expired rows and truncates the WAL so their bytes leave both files,
 * operator queries (list, show, export as JSON lines, purge), redaction of personal numbers
 * and addresses, and parsing of retention and time values.
 *
 * Called by the gateway (src/server: inserts from several HTTP threads, the sweeper) and by
 * `mica logs` (src/cli/cmd_logs.c). This module is the only code that writes SQL (DESIGN.md).
 * Every function is safe to call from several threads on one store (one connection behind a
 * mutex); a store must not be used across fork().
 */
#ifndef MICA_STORE_H
#define MICA_STORE_H

#include "core/core.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define STORE_DB_NAME "requests.db"
/* The longest retention without allow_long (the privacy issue's default and maximum). */
#define STORE_RETENTION_MAX_MS (72LL * 3600 * 1000)
/* The longest pause between two sweeps of the background sweeper. */
#define STORE_SWEEP_INTERVAL_MAX_MS (10LL * 60 * 1000)
/* The schema this code writes; an older database is migrated when opened. */
#define STORE_SCHEMA_VERSION 1

typedef struct store store;

typedef struct store_opts {
    bool create; /* create the directory (0700) and the database (0600) when absent */
    bool redact; /* store_log_insert masks prompts and responses with store_redact */
} store_opts;

/* Opens DIR/requests.db: WAL, synchronous=NORMAL (a committed row survives a crash of the
 * process, not necessarily of the machine), secure_delete=ON, temp_store=MEMORY, a 5 s busy
 * timeout, and the schema migrated to STORE_SCHEMA_VERSION. A database file readable by group
 * or others is narrowed to 0600. Errors name the database file. */
mica_status store_open(store **out, const char *dir, const store_opts *opts, mica_err *err);
/* Stops the sweeper (if running) and closes the database; NULL is ignored. */
void store_close(store *s);
/* "DIR/requests.db" (the path errors name). */
const char *store_path(const store *s);
/* The schema version recorded in the database. */
mica_status store_schema_version(store *s, int *version, mica_err *err);
/* PRAGMA integrity_check: MICA_OK when it says "ok", else MICA_EFORMAT with its first line. */
mica_status store_integrity_check(store *s, mica_err *err);
/* PRAGMA wal_checkpoint(TRUNCATE): copies the WAL into the database and empties it.
 * MICA_EBUSY when another connection's reader kept it from finishing. */
mica_status store_checkpoint(store *s, mica_err *err);

/* ---- rows ------------------------------------------------------------------------------- */

/* One request. Strings are NUL-terminated UTF-8; NULL key_id: no API key; NULL prompt or
 * response: not stored. Rows handed to a store_row_fn point into SQLite's memory and are valid
 * only during the call. */
typedef struct store_log_row {
    const char *id;     /* the response id ("chatcmpl-..."); unique, required */
    int64_t created_at; /* unix time in ms */
    const char *key_id; /* "key_..." (never the key itself) or NULL */
    const char *tier;   /* NULL stores "" (also model, endpoint) */
    const char *model;
    const char *endpoint; /* "/v1/chat/completions" */
    int status;           /* HTTP status */
    int64_t prompt_tokens, completion_tokens;
    int64_t queue_ms, ttft_ms, total_ms;
    const char *prompt;   /* NULL: not stored */
    const char *response; /* NULL: not stored */
    bool no_content;      /* insert: drop prompt and response whatever they hold */
} store_log_row;

/* Inserts one row in its own transaction; it is durable when this returns MICA_OK. With
 * no_content the prompt and response never reach SQLite; with store_opts.redact they are
 * masked first. MICA_EINVAL for a missing or duplicate id. */
mica_status store_log_insert(store *s, const store_log_row *row, mica_err *err);

/* Which rows a query or purge touches; a zeroed filter matches every row. */
typedef struct store_filter {
    const char *id;     /* only this request */
    const char *key_id; /* only this key's rows */
    bool has_before;
    int64_t before_ms; /* only rows created before this unix time in ms */
} store_filter;

/* Called once per row, oldest first; a non-zero status stops the walk and is returned. The
 * store's lock is held: the callback must not call the store. */
typedef mica_status (*store_row_fn)(void *ctx, const store_log_row *row, mica_err *err);

mica_status store_log_each(store *s, const store_filter *f, store_row_fn fn, void *ctx,
                           mica_err *err);
mica_status store_log_count(store *s, const store_filter *f, int64_t *n, mica_err *err);
/* Deletes the matching rows (in batches, so inserts from other threads are not held up for
 * long), then checkpoints with TRUNCATE so their bytes are gone from the database file and
 * the WAL. *deleted (may be NULL) receives the number of rows. */
mica_status store_log_purge(store *s, const store_filter *f, int64_t *deleted, mica_err *err);
/* Purge of every row created before now_ms - retention_ms. */
mica_status store_sweep(store *s, int64_t now_ms, int64_t retention_ms, int64_t *deleted,
                        mica_err *err);

/* ---- JSON (store_json.c) ---------------------------------------------------------------- */

/* Appends one JSON object (no newline): id, created_at (ISO-8601), created_at_ms, key_id,
 * tier, model, endpoint, status, the token counts and timings, and with with_content the
 * prompt and response (null when not stored). Invalid UTF-8 becomes U+FFFD. */
mica_status store_log_row_json(const store_log_row *row, bool with_content, core_buf *out,
                               mica_err *err);
/* Writes the matching rows to f as JSON lines with content; *n (may be NULL) gets the count. */
mica_status store_log_export(store *s, const store_filter *f, FILE *out, int64_t *n, mica_err *err);

/* ---- the background sweeper (store_sweeper.c) --------------------------------------------- */

/* Sweeps once now (its error is returned), then every interval_ms (at most
 * STORE_SWEEP_INTERVAL_MAX_MS) on a thread until store_sweeper_stop or store_close. */
mica_status store_sweeper_start(store *s, int64_t retention_ms, int64_t interval_ms, mica_err *err);
void store_sweeper_stop(store *s);

typedef struct store_sweep_stats {
    int64_t sweeps;                  /* finished sweeps, the first one included */
    int64_t deleted;                 /* rows deleted by them */
    mica_status last;                /* the last sweep's status */
    char last_msg[MICA_ERR_MSG_MAX]; /* and its message when it failed */
} store_sweep_stats;

void store_sweeper_stats(store *s, store_sweep_stats *out);

/* ---- redaction (store_redact.c) ----------------------------------------------------------- */

/* Appends in[0..n) to out with e-mail addresses replaced by "[email]", payment card numbers
 * (13-19 digits, spaces or dashes between groups, Luhn-valid) by "[card]", phone numbers
 * ("+" and 7-15 digits; or 9-15 digits in groups; or parentheses; or 555-1234) by "[phone]",
 * and ID-like numbers (123-45-6789, 8 or more digits in a row, 13 or more grouped digits that
 * are no card, words mixing letters with 5 or more digits such as X12345678) by "[id]".
 * Dates, times, versions, IP addresses, decimals and short numbers are kept.
 * MICA_ENOMEM when out's cap is reached. */
mica_status store_redact(const char *in, size_t n, core_buf *out);

/* ---- time (store_time.c) ----------------------------------------------------------------- */

/* "72h", "30m", "3d", "3600s" -> ms. Longer than STORE_RETENTION_MAX_MS is refused unless
 * allow_long; zero, negative, unit-less and overflowing values are refused. */
mica_status store_parse_retention(const char *s, bool allow_long, int64_t *ms, mica_err *err);
/* Unix seconds ("1795867200") or ISO-8601 in UTC or with an offset ("2026-11-28",
 * "2026-11-28T12:00:00Z", "2026-11-28T13:00:00.5+01:00") -> unix ms. */
mica_status store_parse_time(const char *s, int64_t *ms, mica_err *err);
/* ms -> "2026-11-28T12:00:00.000Z" (buf of at least 32 bytes). */
void store_format_time(int64_t ms, char *buf, size_t cap);
/* The wall clock as unix ms. */
int64_t store_now_ms(void);

#endif
