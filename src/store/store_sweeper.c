/*
 * store_sweeper.c - the retention sweeper: one sweep when started, then a thread that sweeps
 * every interval (at most 10 minutes) until stopped, keeping counts and the last error for
 * the gateway's metrics and logs. The sweep itself (delete + TRUNCATE checkpoint) is
 * store_sweep in store_log.c. Started and stopped by the gateway; store_close stops it.
 */
#define _POSIX_C_SOURCE 200809L
#include "store_int.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static mica_status sweep_once(store *s, int64_t retention_ms, mica_err *err)
{
    int64_t n = 0;
    mica_status st = store_sweep(s, store_now_ms(), retention_ms, &n, err);
    pthread_mutex_lock(&s->sweep_mu);
    s->stats.sweeps++;
    s->stats.deleted += n;
    s->stats.last = st;
    snprintf(s->stats.last_msg, sizeof s->stats.last_msg, "%s", st ? err->msg : "");
    pthread_mutex_unlock(&s->sweep_mu);
    return st;
}

static struct timespec deadline_after(int64_t ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
    return t;
}

static void *sweeper_main(void *arg)
{
    store *s = arg;
    pthread_mutex_lock(&s->sweep_mu);
    while (!s->sweep_stop) {
        struct timespec dl = deadline_after(s->sweep_interval_ms);
        int r = 0;
        while (!s->sweep_stop && r != ETIMEDOUT)
            r = pthread_cond_timedwait(&s->sweep_cv, &s->sweep_mu, &dl);
        if (s->sweep_stop) break;
        int64_t retention = s->sweep_retention_ms;
        pthread_mutex_unlock(&s->sweep_mu);
        mica_err err;
        sweep_once(s, retention, &err); /* failures are kept in the stats; the next one retries */
        pthread_mutex_lock(&s->sweep_mu);
    }
    pthread_mutex_unlock(&s->sweep_mu);
    return NULL;
}

mica_status store_sweeper_start(store *s, int64_t retention_ms, int64_t interval_ms, mica_err *err)
{
    if (retention_ms <= 0 || interval_ms <= 0 || interval_ms > STORE_SWEEP_INTERVAL_MAX_MS)
        return core_fail(err, MICA_EINVAL,
                         "%s: sweeper: retention %lld ms and interval %lld ms must be positive, "
                         "the interval at most %lld ms",
                         s->path, (long long)retention_ms, (long long)interval_ms,
                         (long long)STORE_SWEEP_INTERVAL_MAX_MS);
    pthread_mutex_lock(&s->sweep_mu);
    bool running = s->sweep_running;
    pthread_mutex_unlock(&s->sweep_mu);
    if (running) return core_fail(err, MICA_EINVAL, "%s: sweeper already running", s->path);
    mica_status st = sweep_once(s, retention_ms, err);
    if (st) return st;
    pthread_mutex_lock(&s->sweep_mu);
    s->sweep_retention_ms = retention_ms;
    s->sweep_interval_ms = interval_ms;
    s->sweep_stop = false;
    int r = pthread_create(&s->sweep_thread, NULL, sweeper_main, s);
    s->sweep_running = r == 0;
    pthread_mutex_unlock(&s->sweep_mu);
    if (r != 0) return core_fail(err, MICA_EIO, "%s: sweeper thread: %s", s->path, strerror(r));
    return MICA_OK;
}

void store_sweeper_stop(store *s)
{
    pthread_mutex_lock(&s->sweep_mu);
    if (!s->sweep_running) {
        pthread_mutex_unlock(&s->sweep_mu);
        return;
    }
    s->sweep_stop = true;
    pthread_cond_broadcast(&s->sweep_cv);
    pthread_mutex_unlock(&s->sweep_mu);
    pthread_join(s->sweep_thread, NULL);
    pthread_mutex_lock(&s->sweep_mu);
    s->sweep_running = false;
    s->sweep_stop = false;
    pthread_mutex_unlock(&s->sweep_mu);
}

void store_sweeper_stats(store *s, store_sweep_stats *out)
{
    pthread_mutex_lock(&s->sweep_mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->sweep_mu);
}
