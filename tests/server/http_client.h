/*
 * http_client.h - the libcurl side of the gateway tests: a request (scheme, port, path, JSON
 * body, API key, tier header, CA file) and its reply (status, body, Retry-After, curl's
 * result). Header-only, shared by tests/server/test_*.c.
 */
#ifndef MICA_TESTS_HTTP_CLIENT_H
#define MICA_TESTS_HTTP_CLIENT_H

#include "test_util.h"

#include "server/srv.h"

#include <curl/curl.h>
#include <signal.h>
#include <strings.h>

typedef struct reply {
    long status;
    char *body; /* NUL-terminated; free with reply_free */
    size_t len;
    char retry_after[16];
    CURLcode rc;
} reply;

typedef struct http_req {
    const char *scheme; /* NULL: http */
    uint16_t port;
    const char *path;
    const char *body;   /* NULL: GET */
    size_t body_len;    /* 0: strlen(body) */
    const char *key;    /* Authorization: Bearer */
    const char *tier;   /* X-Mica-Tier */
    const char *header; /* one more "Name: value" header line */
    const char *ca;     /* CA file for https */
} http_req;

static inline size_t reply_on_body(char *p, size_t size, size_t n, void *ud)
{
    reply *r = ud;
    char *b = realloc(r->body, r->len + size * n + 1);
    if (!b) return 0;
    memcpy(b + r->len, p, size * n);
    r->len += size * n;
    b[r->len] = '\0';
    r->body = b;
    return size * n;
}

static inline size_t reply_on_header(char *p, size_t size, size_t n, void *ud)
{
    reply *r = ud;
    if (!strncasecmp(p, "Retry-After:", 12)) sscanf(p + 12, " %15s", r->retry_after);
    return size * n;
}

/* A configured easy handle writing into *r; *headers must be freed with curl_slist_free_all. */
static inline CURL *http_easy(const http_req *q, reply *r, struct curl_slist **headers)
{
    char url[256], h[256];
    snprintf(url, sizeof url, "%s://127.0.0.1:%u%s", q->scheme ? q->scheme : "http",
             (unsigned)q->port, q->path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, reply_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, reply_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    *headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (q->key) {
        snprintf(h, sizeof h, "Authorization: Bearer %s", q->key);
        *headers = curl_slist_append(*headers, h);
    }
    if (q->tier) {
        snprintf(h, sizeof h, "X-Mica-Tier: %s", q->tier);
        *headers = curl_slist_append(*headers, h);
    }
    if (q->header) *headers = curl_slist_append(*headers, q->header);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *headers);
    if (q->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE,
                         (long)(q->body_len ? q->body_len : strlen(q->body)));
    }
    if (q->ca) curl_easy_setopt(c, CURLOPT_CAINFO, q->ca);
    return c;
}

/* Performs the request; the reply's rc says whether HTTP happened at all. */
static inline reply http_perform(const http_req *q)
{
    reply r = {0};
    struct curl_slist *h;
    CURL *c = http_easy(q, &r, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 600L);
    r.rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body) r.body = calloc(1, 1);
    return r;
}

static inline void reply_free(reply *r)
{
    free(r->body);
    r->body = NULL;
}

/* The group setup of the gateway tests: a write to a closed socket fails instead of killing
 * the test, and libcurl is initialised once. */
static inline int http_tests_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    return curl_global_init(CURL_GLOBAL_ALL);
}

/* A small gateway: any free port, the model as "stories", 2 slots of 128 positions, one
 * thread, keys and the request log in data_dir. Callers change what their test needs. */
static inline void http_test_config(srv_config *c, const char *model, const char *data_dir)
{
    srv_config_defaults(c);
    c->port = 0;
    c->n_parallel = 2;
    c->n_ctx = 128;
    c->n_batch = 32;
    c->n_threads = 1;
    snprintf(c->data_dir, sizeof c->data_dir, "%s", data_dir);
    char spec[1200];
    snprintf(spec, sizeof spec, "stories=%s", model);
    mica_err err;
    if (srv_config_add_model(c, spec, &err)) fail_msg("%s", err.msg);
}

#endif
