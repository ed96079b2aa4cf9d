/*
 * http.c - the gateway's HTTP side on libmicrohttpd (epoll thread, suspend/resume): reads
 * request bodies up to the cap (413 beyond), routes to the endpoints, answers errors in
 * OpenAI's shape, loads the models and runs the ping ticker; srv_start / srv_stop.
 * Generation itself is job.c; request parsing openai.c; metrics metrics.c.
 */
#include "srv_int.h"

#include <gnutls/crypto.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* HTTP threads: embeddings are computed on the thread that received them, so one request
 * must not stall every other connection. */
#define SRV_HTTP_THREADS 4

/* What MHD keeps for one request between calls of the access handler. */
typedef struct srv_conn {
    core_buf body;
    bool too_large;
    srv_job *job;
} srv_conn;

/* ---- responses ------------------------------------------------------------------------- */

enum MHD_Result srv_send_text(srv *s, struct MHD_Connection *conn, int status,
                              const char *content_type, const char *text, size_t len,
                              int retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", content_type);
    if (status == 429 || status == 503) {
        char secs[16];
        snprintf(secs, sizeof secs, "%d", retry_after > 0 ? retry_after : 1);
        MHD_add_response_header(r, "Retry-After", secs);
    }
    const enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    srv_metrics_response(&s->metrics, status);
    return ret;
}

static enum MHD_Result send_json_retry(srv *s, struct MHD_Connection *conn, int status,
                                       json_t *body, int retry_after)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) return MHD_NO;
    const enum MHD_Result ret =
        srv_send_text(s, conn, status, "application/json", text, strlen(text), retry_after);
    free(text);
    return ret;
}

enum MHD_Result srv_send_json(srv *s, struct MHD_Connection *conn, int status, json_t *body)
{
    return send_json_retry(s, conn, status, body, 0);
}

enum MHD_Result srv_send_error(srv *s, struct MHD_Connection *conn, const srv_error *e)
{
    json_t *err = json_pack("{s:s,s:s,s:o,s:o}", "message", e->message, "type", e->type, "param",
                            e->param[0] ? json_string(e->param) : json_null(), "code",
                            e->code ? json_string(e->code) : json_null());
    return send_json_retry(s, conn, e->status, json_pack("{s:o}", "error", err), e->retry_after);
}

static enum MHD_Result send_fail(srv *s, struct MHD_Connection *conn, int status,
                                 const char *message)
{
    srv_error e;
    srv_fail(&e, status, NULL, "%s", message);
    if (status == 404) e.code = "not_found";
    return srv_send_error(s, conn, &e);
}

/* ---- endpoints ------------------------------------------------------------------------- */

static enum MHD_Result get_models(srv *s, struct MHD_Connection *conn, const srv_key *key)
{
    json_t *data = json_array();
    for (int i = 0; i < s->n_models; i++)
        if (!key->id[0] || srv_key_allows_model(key, s->models[i].name))
            json_array_append_new(
                data, json_pack("{s:s,s:s,s:I,s:s}", "id", s->models[i].name, "object", "model",
                                "created", (json_int_t)s->models[i].created, "owned_by", "mica"));
    return srv_send_json(s, conn, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

static enum MHD_Result get_health(srv *s, struct MHD_Connection *conn)
{
    if (!atomic_load(&s->ready))
        return srv_send_json(s, conn, 503,
                             json_pack("{s:{s:s,s:s,s:i}}", "error", "message",
                                       "the models are loading", "type", "unavailable_error",
                                       "code", 503));
    return srv_send_json(s, conn, 200, json_pack("{s:s}", "status", "ok"));
}

static enum MHD_Result get_metrics(srv *s, struct MHD_Connection *conn)
{
    core_buf out;
    core_buf_init(&out, 64u << 20);
    srv_metrics_render(s, &out);
    const enum MHD_Result ret = srv_send_text(s, conn, 200, "text/plain; version=0.0.4",
                                              out.data ? out.data : "", out.len, 0);
    core_buf_free(&out);
    return ret;
}

static int tier_index(const srv *s, const char *name)
{
    for (int i = 0; i < s->cfg.n_tiers; i++)
        if (!strcmp(s->cfg.tiers[i].name, name)) return i;
    return -1;
}

/* The tier a request is entitled to: its key's; without keys the default, or X-Mica-Tier
 * from a trusted proxy. */
static bool request_tier(srv *s, struct MHD_Connection *conn, const srv_key *key, int *tier,
                         srv_error *e)
{
    *tier = tier_index(s, s->cfg.default_tier);
    if (key->id[0]) {
        const int t = tier_index(s, key->tier);
        if (t < 0)
            return srv_fail(e, 500, NULL, "key %s has tier '%s', which is not configured", key->id,
                            key->tier);
        *tier = t;
        return true;
    }
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Mica-Tier");
    if (!h || !s->cfg.trust_tier_header) return true;
    const int t = tier_index(s, h);
    if (t < 0) return srv_fail(e, 400, NULL, "X-Mica-Tier: unknown tier '%s'", h);
    *tier = t;
    return true;
}

/* A full tier queue answers 429 before the request costs anything. */
static bool tier_has_room(srv *s, const srv_gen *g, srv_error *e)
{
    eng_sched_stats st;
    eng_sched_stats_get(s->models[g->model].sched, &st);
    if (st.waiting[g->priority] < s->cfg.tiers[g->tier].max_waiting) return true;
    srv_fail(e, 429, NULL, "the %s queue is full (%d waiting); retry later",
             s->cfg.tiers[g->tier].name, st.waiting[g->priority]);
    e->type = "rate_limit_exceeded";
    return false;
}

static bool model_allowed(const srv *s, const srv_key *key, const srv_gen *g, srv_error *e)
{
    if (!key->id[0] || srv_key_allows_model(key, s->models[g->model].name)) return true;
    srv_fail(e, 403, "model", "The key %s may not use the model '%s'", key->id,
             s->models[g->model].name);
    e->type = "permission_error";
    e->code = "model_not_allowed";
    return false;
}

/* Whether the request's prompt and answer stay out of every log: server-wide, for its key, or
 * by the header X-Disable-Logs: 1 (the body's "disable_logs" is read by srv_parse_gen). */
static bool content_logs_disabled(const srv *s, struct MHD_Connection *conn, const srv_key *key)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Disable-Logs");
    const bool header = h && (!strcmp(h, "1") || !strcasecmp(h, "true") || !strcasecmp(h, "yes"));
    return s->cfg.no_content_logs || key->no_content_logs || header;
}

static enum MHD_Result post_generate(srv *s, struct MHD_Connection *conn, srv_conn *c,
                                     const srv_key *key, bool chat)
{
    if (c->job) /* resumed: the job has ended */
        return srv_job_respond(c->job, conn);
    srv_gen g = {0};
    srv_error e;
    g.no_content_logs = content_logs_disabled(s, conn, key);
    if (!request_tier(s, conn, key, &g.tier, &e) ||
        !srv_parse_gen(s, c->body.data ? c->body.data : "", c->body.len, chat, &g, &e))
        return srv_send_error(s, conn, &e);
    snprintf(g.key_id, sizeof g.key_id, "%s", key->id);
    if (!model_allowed(s, key, &g, &e) || !srv_auth_admit(&s->auth, key, &e) ||
        !tier_has_room(s, &g, &e)) {
        srv_gen_free(&g);
        return srv_send_error(s, conn, &e);
    }
    srv_auth_charge(&s->auth, g.key_id, g.n_prompt);
    const enum MHD_Result ret = srv_job_start(s, conn, &g, &c->job);
    srv_gen_free(&g); /* what the job did not take */
    return ret;
}

static enum MHD_Result route(srv *s, struct MHD_Connection *conn, srv_conn *c, const char *url,
                             const char *method)
{
    const bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health"))
        return get ? get_health(s, conn) : send_fail(s, conn, 405, "use GET");
    if (!atomic_load(&s->ready)) return send_fail(s, conn, 503, "the models are loading");
    if (!strcmp(url, "/metrics"))
        return get ? get_metrics(s, conn) : send_fail(s, conn, 405, "use GET");
    if (strncmp(url, "/v1/", 4)) return send_fail(s, conn, 404, "no such endpoint");
    srv_key key;
    srv_error e;
    if (!srv_auth_check(&s->auth, conn, &key, &e)) return srv_send_error(s, conn, &e);
    if (!strcmp(url, "/v1/models"))
        return get ? get_models(s, conn, &key) : send_fail(s, conn, 405, "use GET");
    if (!strcmp(url, "/v1/chat/completions"))
        return post ? post_generate(s, conn, c, &key, true) : send_fail(s, conn, 405, "use POST");
    if (!strcmp(url, "/v1/completions"))
        return post ? post_generate(s, conn, c, &key, false) : send_fail(s, conn, 405, "use POST");
    if (!strcmp(url, "/v1/embeddings"))
        return post ? srv_embeddings(s, conn, c->body.data ? c->body.data : "", c->body.len, &key)
                    : send_fail(s, conn, 405, "use POST");
    char msg[256];
    snprintf(msg, sizeof msg, "no endpoint %s %.128s", method, url);
    return send_fail(s, conn, 404, msg);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    srv *s = cls;
    srv_conn *c = *con_cls;
    if (!c) {
        c = core_calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        core_buf_init(&c->body, s->cfg.max_body);
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* Past the cap the rest is read and dropped, then answered with 413. */
        if (!c->too_large && !core_buf_append(&c->body, upload_data, *upload_data_size))
            c->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", s->cfg.max_body);
        return send_fail(s, conn, 413, msg);
    }
    return route(s, conn, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    srv_conn *c = *con_cls;
    if (!c) return;
    if (c->job) srv_job_detach(c->job);
    core_buf_free(&c->body);
    free(c);
    *con_cls = NULL;
}

/* ---- life cycle ------------------------------------------------------------------------ */

static void *ticker_main(void *arg)
{
    srv *s = arg;
    pthread_mutex_lock(&s->tick_mu);
    while (!s->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        const double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + s->cfg.ping_s;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&s->tick_cv, &s->tick_mu, &ts);
        if (s->quit) break;
        pthread_mutex_unlock(&s->tick_mu);
        srv_jobs_ping(s);
        pthread_mutex_lock(&s->tick_mu);
    }
    pthread_mutex_unlock(&s->tick_mu);
    return NULL;
}

/* The adapters the config names for model m. */
static mica_status load_loras(srv *s, srv_model *m, mica_err *err)
{
    for (int i = 0; i < s->cfg.n_loras; i++) {
        const srv_lora_cfg *l = &s->cfg.loras[i];
        if (strcmp(srv_lora_model(&s->cfg, l), m->name)) continue;
        if (m->n_loras == SRV_MAX_LORAS)
            return core_fail(err, MICA_EINVAL, "%s: at most %d LoRA adapters", m->name,
                             SRV_MAX_LORAS);
        mica_status st = mica_lora_load(&m->loras[m->n_loras], m->m, l->path, err);
        if (st) return st;
        snprintf(m->lora_names[m->n_loras++], sizeof m->lora_names[0], "%s", l->name);
    }
    return MICA_OK;
}

static mica_status load_models(srv *s, mica_err *err)
{
    for (int i = 0; i < s->cfg.n_models; i++) {
        srv_model *m = &s->models[i];
        snprintf(m->name, sizeof m->name, "%s", s->cfg.models[i].name);
        mica_status st = mica_model_load(&m->m, s->cfg.models[i].path, err);
        if (st) return st;
        s->n_models = i + 1;
        if ((st = load_loras(s, m, err))) return st;
        eng_sched_params p = eng_sched_default_params();
        p.n_slots = s->cfg.n_parallel;
        p.n_spare = s->cfg.n_spare;
        p.n_ctx = s->cfg.n_ctx;
        p.n_batch = s->cfg.n_batch;
        p.n_threads = s->cfg.n_threads;
        p.preempt = s->cfg.preempt;
        p.aging_per_s = s->cfg.aging_per_s;
        int most = 1;
        for (int t = 0; t < s->cfg.n_tiers; t++)
            most = s->cfg.tiers[t].max_waiting > most ? s->cfg.tiers[t].max_waiting : most;
        p.max_waiting = most;
        if ((st = eng_sched_new(&m->sched, m->m, &p, err))) return core_fail_prefix(err, m->name);
        if ((st = eng_sched_start(m->sched, err))) return st;
        if ((st = srv_embed_init(m, &s->cfg, err))) return core_fail_prefix(err, m->name);
        m->embed_ready = true;
        if ((st = srv_chat_init(m, err))) return core_fail_prefix(err, m->name);
        m->created = (int64_t)time(NULL);
    }
    return MICA_OK;
}

/* Off loopback the server needs API keys, and TLS unless --insecure-http. */
static mica_status check_exposure(srv *s, const struct sockaddr_in *addr, mica_err *err)
{
    const bool loopback = (ntohl(addr->sin_addr.s_addr) >> 24) == 127;
    if (loopback) return MICA_OK;
    if (!srv_auth_enabled(&s->auth))
        return core_fail(err, MICA_EINVAL,
                         "--host %s: without API keys the server listens on loopback only "
                         "(add one with `mica keys add`)",
                         s->cfg.host);
    if (!s->cfg.tls_cert[0] && !s->cfg.insecure_http)
        return core_fail(err, MICA_EINVAL,
                         "--host %s: plain HTTP off loopback would expose keys and content; "
                         "give --tls-cert and --tls-key (or --insecure-http)",
                         s->cfg.host);
    return MICA_OK;
}

static mica_status start_daemon(srv *s, const struct sockaddr_in *addr, mica_err *err)
{
    const srv_config *c = &s->cfg;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    char *cert = NULL, *key = NULL;
    mica_status st = MICA_OK;
    if (c->tls_cert[0]) {
        flags |= MHD_USE_TLS;
        if ((st = core_read_file(c->tls_cert, 1 << 20, &cert, NULL, err)) ||
            (st = core_read_file(c->tls_key, 1 << 20, &key, NULL, err)))
            goto done;
    }
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)SRV_HTTP_THREADS, cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, cert,
        MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
    if (!s->daemon)
        st = core_fail(err, MICA_EIO, "cannot listen on %s:%d%s: %s", c->host, c->port,
                       cert ? " with TLS (is the certificate/key pair valid PEM?)" : "",
                       strerror(errno));
done:
    free(cert);
    if (key) {
        memset(key, 0, strlen(key)); /* the private key does not linger in freed memory */
        free(key);
    }
    return st;
}

/* Opens DATA_DIR/requests.db and starts its sweeper, which deletes expired rows now and then
 * at least every 10 minutes (more often for short retentions, so none outlives it by much). */
static mica_status open_request_log(srv *s, mica_err *err)
{
    const srv_config *c = &s->cfg;
    mica_status st =
        store_open(&s->log, c->data_dir, &(store_opts){.create = true, .redact = c->redact}, err);
    if (st) return st;
    int64_t interval = c->log_retention_ms / 4;
    if (interval > STORE_SWEEP_INTERVAL_MAX_MS) interval = STORE_SWEEP_INTERVAL_MAX_MS;
    if (interval < 100) interval = 100;
    return store_sweeper_start(s->log, c->log_retention_ms, interval, err);
}

mica_status srv_start(srv **out, const srv_config *c, mica_err *err)
{
    *out = NULL;
    mica_status st = srv_config_check(c, err);
    if (st) return st;
    srv *s = core_calloc(1, sizeof *s);
    if (!s) return core_fail(err, MICA_ENOMEM, "out of memory");
    s->cfg = *c;
    srv_metrics_init(&s->metrics);
    pthread_mutex_init(&s->jobs_mu, NULL);
    pthread_mutex_init(&s->tick_mu, NULL);
    pthread_cond_init(&s->tick_cv, NULL);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)c->port);
    if (inet_pton(AF_INET, c->host, &addr.sin_addr) != 1) {
        st = core_fail(err, MICA_EINVAL, "--host %s: not an IPv4 address", c->host);
        goto fail;
    }
    if ((st = srv_auth_init(&s->auth, c, err))) goto fail;
    s->auth_ready = true;
    if ((st = check_exposure(s, &addr, err))) goto fail;
    if ((st = open_request_log(s, err))) goto fail;
    uint64_t first_id;
    if (gnutls_rnd(GNUTLS_RND_NONCE, &first_id, sizeof first_id)) {
        st = core_fail(err, MICA_EIO, "cannot get random bytes for response ids");
        goto fail;
    }
    atomic_store(&s->next_id, first_id);
    if ((st = start_daemon(s, &addr, err))) goto fail;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : (uint16_t)c->port;
    if ((st = load_models(s, err))) goto fail;
    if (pthread_create(&s->ticker, NULL, ticker_main, s)) {
        st = core_fail(err, MICA_ENOMEM, "cannot start the ping thread");
        goto fail;
    }
    s->ticker_started = true;
    atomic_store(&s->ready, true);
    *out = s;
    return MICA_OK;
fail:
    srv_stop(s);
    return st;
}

uint16_t srv_port(const srv *s)
{
    return s->port;
}

void srv_stop(srv *s)
{
    if (!s) return;
    atomic_store(&s->ready, false);
    if (s->ticker_started) {
        pthread_mutex_lock(&s->tick_mu);
        s->quit = true;
        pthread_cond_signal(&s->tick_cv);
        pthread_mutex_unlock(&s->tick_mu);
        pthread_join(s->ticker, NULL);
    }
    /* Every request ends (its connection is woken with the end) before MHD stops: MHD must
     * not be stopped with suspended connections. */
    srv_jobs_cancel_all(s);
    for (int i = 0; i < s->n_models; i++) {
        eng_sched_free(s->models[i].sched);
        s->models[i].sched = NULL;
    }
    if (s->daemon) MHD_stop_daemon(s->daemon);
    store_close(s->log);
    for (int i = 0; i < s->n_models; i++) {
        if (s->models[i].embed_ready) srv_embed_free(&s->models[i]);
        srv_chat_free(&s->models[i]);
        for (int k = 0; k < s->models[i].n_loras; k++) mica_lora_free(s->models[i].loras[k]);
        mica_model_free(s->models[i].m);
    }
    pthread_cond_destroy(&s->tick_cv);
    pthread_mutex_destroy(&s->tick_mu);
    pthread_mutex_destroy(&s->jobs_mu);
    srv_metrics_free(&s->metrics);
    if (s->auth_ready) srv_auth_free(&s->auth);
    free(s);
}
