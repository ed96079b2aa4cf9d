/*
 * auth.c - who may call the gateway: with keys configured every /v1 request needs
 * `Authorization: Bearer <key>` (401 when missing, wrong or revoked; the keys file is re-read
 * when it changes, so `mica keys revoke` takes effect at once), a key may be limited to some
 * models (403) and to requests and tokens per minute (token buckets; 429 with Retry-After).
 * Called by http.c (requests) and job.c (tokens used).
 */
#include "srv_int.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

mica_status srv_auth_init(srv_auth *a, const srv_config *c, mica_err *err)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    srv_config_keys_path(c, a->path, sizeof a->path);
    return srv_keys_load(&a->ring, a->path, err);
}

void srv_auth_free(srv_auth *a)
{
    srv_keys_free(&a->ring);
    free(a->buckets);
    pthread_mutex_destroy(&a->mu);
}

bool srv_auth_enabled(srv_auth *a)
{
    pthread_mutex_lock(&a->mu);
    const bool on = a->ring.n > 0;
    pthread_mutex_unlock(&a->mu);
    return on;
}

/* Re-reads the keys file when its modification time changed. Called with a->mu held. */
static void reload_if_changed(srv_auth *a)
{
    struct stat st;
    const int64_t mtime =
        stat(a->path, &st) ? -1 : (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (mtime == a->ring.mtime_ns || mtime < 0) return;
    srv_keyring fresh;
    mica_err err;
    if (srv_keys_load(&fresh, a->path, &err)) return; /* a half-written file: keep the old */
    srv_keys_free(&a->ring);
    a->ring = fresh;
}

static srv_bucket *bucket_of(srv_auth *a, const char *id)
{
    for (int i = 0; i < a->n_buckets; i++)
        if (!strcmp(a->buckets[i].id, id)) return &a->buckets[i];
    srv_bucket *grown = realloc(a->buckets, (size_t)(a->n_buckets + 1) * sizeof *grown);
    if (!grown) return NULL;
    a->buckets = grown;
    srv_bucket *b = &a->buckets[a->n_buckets++];
    memset(b, 0, sizeof *b);
    snprintf(b->id, sizeof b->id, "%s", id);
    b->fresh = true;
    return b;
}

/* Refills a bucket of `per_minute` capacity for the time passed since the last refill. */
static void refill(double *level, double per_minute, double dt)
{
    *level += per_minute / 60.0 * dt;
    if (*level > per_minute) *level = per_minute;
}

static bool unauthorized(srv_error *e, const char *why)
{
    srv_fail(e, 401, NULL, "%s", why);
    e->code = "invalid_api_key";
    return false;
}

bool srv_auth_check(srv_auth *a, struct MHD_Connection *conn, srv_key *key, srv_error *e)
{
    pthread_mutex_lock(&a->mu);
    reload_if_changed(a);
    if (a->ring.n == 0) {
        pthread_mutex_unlock(&a->mu);
        memset(key, 0, sizeof *key);
        return true; /* no keys: loopback only, anyone there may call */
    }
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    int idx = -1;
    if (h && !strncmp(h, "Bearer ", 7)) idx = srv_keys_find(&a->ring, h + 7, strlen(h + 7));
    if (idx >= 0) *key = a->ring.keys[idx];
    pthread_mutex_unlock(&a->mu);
    if (!h) return unauthorized(e, "You didn't provide an API key (Authorization: Bearer KEY)");
    if (idx < 0) return unauthorized(e, "Incorrect API key provided");
    if (key->revoked) return unauthorized(e, "This API key has been revoked");
    return true;
}

bool srv_auth_admit(srv_auth *a, const srv_key *key, srv_error *e)
{
    if (!key->id[0] || (!key->rpm && !key->tpm)) return true;
    pthread_mutex_lock(&a->mu);
    srv_bucket *b = bucket_of(a, key->id);
    if (!b) {
        pthread_mutex_unlock(&a->mu);
        return srv_fail(e, 500, NULL, "out of memory");
    }
    const double now = core_now();
    if (b->fresh) {
        b->requests = key->rpm;
        b->tokens = key->tpm;
        b->fresh = false;
    } else {
        refill(&b->requests, key->rpm, now - b->last);
        refill(&b->tokens, key->tpm, now - b->last);
    }
    b->last = now;
    double wait = 0;
    const char *what = NULL;
    if (key->rpm && b->requests < 1) {
        wait = (1 - b->requests) * 60.0 / key->rpm;
        what = "requests";
    } else if (key->tpm && b->tokens <= 0) {
        wait = (1 - b->tokens) * 60.0 / key->tpm;
        what = "tokens";
    } else if (key->rpm) {
        b->requests -= 1;
    }
    pthread_mutex_unlock(&a->mu);
    if (!what) return true;
    srv_fail(e, 429, NULL, "Rate limit reached for %s per minute on key %s; retry in %.0f s", what,
             key->id, ceil(wait));
    e->type = "rate_limit_exceeded";
    e->code = "rate_limit_exceeded";
    e->retry_after = (int)ceil(wait) > 0 ? (int)ceil(wait) : 1;
    return false;
}

void srv_auth_charge(srv_auth *a, const char *key_id, int64_t tokens)
{
    if (!key_id[0] || tokens <= 0) return;
    pthread_mutex_lock(&a->mu);
    srv_bucket *b = bucket_of(a, key_id);
    if (b) b->tokens -= (double)tokens; /* may go below 0: the next request waits */
    pthread_mutex_unlock(&a->mu);
}
