/*
 * test_server.c - the gateway over real HTTP on 127.0.0.1 with libcurl, serving stories260K
 * (a real pretrained model): chat and completions, streaming with include_usage, models,
 * health, an unknown model's error; 8 simultaneous streams equal the same requests run one
 * at a time (greedy); a VIP stream starts while standard ones fill every slot and all of
 * them finish; a client that disconnects frees its slot; /metrics passes promtool; bad
 * input gets an OpenAI-style error and the server keeps serving.
 */
#define _GNU_SOURCE
#include "http_client.h"

#include "core/core.h"
#include "server/srv.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <strings.h>
#include <unistd.h>

static CURL *request(uint16_t port, const char *path, const char *body, size_t body_len, reply *r,
                     struct curl_slist **headers, const char *tier)
{
    const http_req q = {
        .port = port, .path = path, .body = body, .body_len = body_len, .tier = tier};
    return http_easy(&q, r, headers);
}

static reply http(uint16_t port, const char *path, const char *body)
{
    reply r = http_perform(&(http_req){.port = port, .path = path, .body = body});
    if (r.rc != CURLE_OK) fail_msg("%s: %s", path, curl_easy_strerror(r.rc));
    return r;
}

static json_t *parse(const reply *r)
{
    json_error_t je;
    json_t *v = json_loadb(r->body ? r->body : "", r->len, 0, &je);
    if (!v) fail_msg("not JSON (%s): %.300s", je.text, r->body ? r->body : "");
    return v;
}

static srv *start(srv_config *c, const char *model)
{
    srv_config_defaults(c);
    c->port = 0;
    c->n_parallel = 4;
    c->n_ctx = 256;
    c->n_batch = 64;
    c->n_threads = 2;
    c->trust_tier_header = true;
    c->max_body = 64 * 1024;
    snprintf(c->data_dir, sizeof c->data_dir, "%s/server_%d", tu_tmpdir(), (int)getpid());
    char spec[1200];
    snprintf(spec, sizeof spec, "stories=%s", model);
    mica_err err;
    if (srv_config_add_model(c, spec, &err)) fail_msg("%s", err.msg);
    srv *s;
    if (srv_start(&s, c, &err)) fail_msg("%s", err.msg);
    return s;
}

#define MODEL_PATH(buf) TU_SHARED_PATH(buf, "testdata/stories260K/models/stories260K.F32.gguf")

/* ---- SSE ------------------------------------------------------------------------------- */

typedef struct stream {
    char text[65536];
    size_t text_len;
    int chunks;
    bool done_marker, usage_seen;
    long completion_tokens;
    char finish[16];
    char *raw;
} stream;

/* Splits an SSE body into events and gathers the generated text and the usage chunk. */
static void parse_sse(const char *body, stream *st, bool chat)
{
    memset(st, 0, sizeof *st);
    for (const char *p = body; p && *p;) {
        const char *end = strstr(p, "\n\n");
        if (!end) fail_msg("an SSE event without its blank line: %.100s", p);
        if (!strncmp(p, ": ping", 6)) {
            p = end + 2;
            continue;
        }
        if (strncmp(p, "data: ", 6)) fail_msg("not an SSE data line: %.100s", p);
        assert_false(st->done_marker); /* nothing after [DONE] */
        if (!strncmp(p + 6, "[DONE]", 6)) {
            st->done_marker = true;
            p = end + 2;
            continue;
        }
        json_error_t je;
        json_t *v = json_loadb(p + 6, (size_t)(end - p - 6), 0, &je);
        if (!v) fail_msg("bad chunk JSON: %s", je.text);
        assert_string_equal(json_string_value(json_object_get(v, "object")),
                            chat ? "chat.completion.chunk" : "text_completion");
        json_t *choices = json_object_get(v, "choices");
        json_t *usage = json_object_get(v, "usage");
        if (json_array_size(choices) == 0) {
            assert_true(json_is_object(usage)); /* the usage chunk has no choices */
            st->usage_seen = true;
            st->completion_tokens =
                (long)json_integer_value(json_object_get(usage, "completion_tokens"));
        } else {
            json_t *c = json_array_get(choices, 0);
            json_t *t = chat ? json_object_get(json_object_get(c, "delta"), "content")
                             : json_object_get(c, "text");
            if (json_is_string(t)) {
                assert_true(st->text_len + json_string_length(t) < sizeof st->text);
                memcpy(st->text + st->text_len, json_string_value(t), json_string_length(t));
                st->text_len += json_string_length(t);
            }
            if (json_is_string(json_object_get(c, "finish_reason")))
                snprintf(st->finish, sizeof st->finish, "%s",
                         json_string_value(json_object_get(c, "finish_reason")));
            st->chunks++;
        }
        json_decref(v);
        p = end + 2;
    }
    st->text[st->text_len] = '\0';
}

/* ---- the API --------------------------------------------------------------------------- */

static void test_endpoints(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    srv_config cfg;
    srv *s = start(&cfg, model);
    const uint16_t port = srv_port(s);

    reply r = http(port, "/health", NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    r = http(port, "/v1/models", NULL);
    json_t *v = parse(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "list");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(v, "data"), 0), "id")),
        "stories");
    json_decref(v);
    free(r.body);

    /* Completions, greedy: the reference text of stories260K starts the same way. */
    r = http(port, "/v1/completions",
             "{\"model\":\"stories\",\"prompt\":\"Once upon a time\",\"max_tokens\":16,"
             "\"temperature\":0}");
    assert_int_equal(r.status, 200);
    v = parse(&r);
    json_t *choice = json_array_get(json_object_get(v, "choices"), 0);
    char ref_path[1024];
    TU_SHARED_PATH(ref_path, "testdata/stories260K/text/stories260K.F32.n64.f32kv.gen.txt");
    char *ref = tu_read_file(ref_path, NULL);
    const char *text = json_string_value(json_object_get(choice, "text"));
    assert_true(strlen(text) > 10 && !strncmp(ref, text, strlen(text)));
    assert_string_equal(json_string_value(json_object_get(choice, "finish_reason")), "length");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens")), 16);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "text_completion");
    json_decref(v);
    free(r.body);
    free(ref);

    /* Chat, not streamed, with n = 2 and logprobs. */
    r = http(port, "/v1/chat/completions",
             "{\"model\":\"stories\",\"messages\":[{\"role\":\"system\",\"content\":\"Be kind\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello\"}]}],"
             "\"max_completion_tokens\":8,\"n\":2,\"seed\":7,\"logprobs\":true,"
             "\"top_logprobs\":2}");
    assert_int_equal(r.status, 200);
    v = parse(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "chat.completion");
    assert_int_equal(json_array_size(json_object_get(v, "choices")), 2);
    choice = json_array_get(json_object_get(v, "choices"), 1);
    assert_int_equal(json_integer_value(json_object_get(choice, "index")), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(choice, "message"), "role")),
        "assistant");
    json_t *content = json_object_get(json_object_get(choice, "logprobs"), "content");
    assert_int_equal(json_array_size(content), 8);
    assert_int_equal(json_array_size(json_object_get(json_array_get(content, 0), "top_logprobs")),
                     2);
    assert_true(json_real_value(json_object_get(json_array_get(content, 0), "logprob")) <= 0);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens")), 16);
    json_decref(v);
    free(r.body);

    /* Streamed chat with the usage chunk before [DONE]. */
    r = http(port, "/v1/chat/completions",
             "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
             "\"max_tokens\":12,\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    assert_int_equal(r.status, 200);
    stream st;
    parse_sse(r.body, &st, true);
    assert_true(st.done_marker && st.usage_seen);
    assert_int_equal(st.completion_tokens, 12);
    assert_string_equal(st.finish, "length");
    free(r.body);

    /* An unknown model. */
    r = http(port, "/v1/chat/completions",
             "{\"model\":\"gpt-9\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}");
    assert_int_equal(r.status, 404);
    v = parse(&r);
    json_t *err = json_object_get(v, "error");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "model_not_found");
    assert_string_equal(json_string_value(json_object_get(err, "param")), "model");
    assert_non_null(strstr(json_string_value(json_object_get(err, "message")), "gpt-9"));
    json_decref(v);
    free(r.body);
    srv_stop(s);
}

/* ---- bad input ------------------------------------------------------------------------- */

static void expect_error(uint16_t port, const char *path, const char *body, size_t len, long status,
                         const char *param, const char *needle)
{
    reply r = {0};
    struct curl_slist *h;
    CURL *c = request(port, path, body, len, &r, &h, NULL);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (r.status != status)
        fail_msg("%s: status %ld, expected %ld: %s", body, r.status, status, r.body);
    json_t *v = parse(&r);
    json_t *e = json_object_get(v, "error");
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_is_string(json_object_get(e, "type")));
    if (param) assert_string_equal(json_string_value(json_object_get(e, "param")), param);
    if (needle && !strstr(json_string_value(json_object_get(e, "message")), needle))
        fail_msg("'%s' does not say '%s'", json_string_value(json_object_get(e, "message")),
                 needle);
    json_decref(v);
    free(r.body);
}

static void test_bad_input(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    srv_config cfg;
    srv *s = start(&cfg, model);
    const uint16_t port = srv_port(s);
    const char *chat = "/v1/chat/completions", *cmpl = "/v1/completions";
#define BAD(path, body, status, param, needle)                                                     \
    expect_error(port, path, body, strlen(body), status, param, needle)
    BAD(chat, "{\"model\": \"stories\", \"messages\": [", 400, NULL, "invalid JSON");
    BAD(chat, "[1, 2]", 400, NULL, "JSON object");
    BAD(chat, "{\"messages\": []}", 400, "model", NULL);
    BAD(chat, "{\"model\": \"stories\"}", 400, "messages", NULL);
    BAD(chat, "{\"model\": \"stories\", \"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
        400, "messages[0].role", NULL);
    BAD(chat, "{\"model\": \"stories\", \"messages\": [{\"role\": \"user\", \"content\": 5}]}", 400,
        "messages[0].content", NULL);
    BAD(cmpl, "{\"model\": \"stories\", \"prompt\": \"x\", \"temperature\": \"hot\"}", 400,
        "temperature", NULL);
    BAD(cmpl, "{\"model\": \"stories\", \"prompt\": \"x\", \"n\": 99}", 400, "n", NULL);
    BAD(cmpl, "{\"model\": \"stories\", \"prompt\": \"x\", \"stop\": [1]}", 400, "stop", NULL);
    BAD(cmpl, "{\"model\": \"stories\", \"prompt\": \"x\", \"logit_bias\": {\"99999\": 1}}", 400,
        "logit_bias", NULL);
    BAD(cmpl, "{\"model\": \"stories\", \"prompt\": [1, -4]}", 400, "prompt", NULL);
    BAD(cmpl, "{\"model\": \"stories\", \"prompt\": \"x\", \"stream_options\": {}}", 400,
        "stream_options", NULL);
    /* Invalid UTF-8 inside a JSON string. */
    const char bad_utf8[] = "{\"model\": \"stories\", \"prompt\": \"a\xC3\x28\"}";
    expect_error(port, cmpl, bad_utf8, sizeof bad_utf8 - 1, 400, NULL, "invalid JSON");
    /* A prompt longer than the context: the lengths are in the message. */
    core_buf big;
    core_buf_init(&big, 1 << 20);
    core_buf_printf(&big, "{\"model\": \"stories\", \"prompt\": \"");
    for (int i = 0; i < 300; i++) core_buf_printf(&big, "the dog ");
    core_buf_printf(&big, "\"}");
    expect_error(port, cmpl, big.data, big.len, 400, "prompt", "maximum context length is 256");
    /* A body over the cap. */
    big.len = 0;
    core_buf_printf(&big, "{\"model\": \"stories\", \"prompt\": \"");
    for (int i = 0; i < 20000; i++) core_buf_printf(&big, "word ");
    core_buf_printf(&big, "\"}");
    expect_error(port, cmpl, big.data, big.len, 413, NULL, "larger than");
    core_buf_free(&big);
    BAD("/v1/nothing", "{}", 404, NULL, NULL);
    /* Still serving. */
    reply r = http(port, "/v1/completions",
                   "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":3}");
    assert_int_equal(r.status, 200);
    free(r.body);
    srv_stop(s);
}

/* ---- concurrency ----------------------------------------------------------------------- */

static const char *const prompts[8] = {
    "Once upon a time", "The little dog",  "Lily wanted to", "One day, a big",
    "Tom and Sue",      "The sun was hot", "A cat sat",      "Mom said",
};

static char *stream_body(int i, int max_tokens)
{
    char *b = malloc(512);
    snprintf(b, 512,
             "{\"model\":\"stories\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,"
             "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
             prompts[i], max_tokens);
    return b;
}

typedef struct multi {
    CURLM *m;
    CURL *c[16];
    reply r[16];
    struct curl_slist *h[16];
    char *body[16];
    int n;
} multi;

static void multi_add(multi *mu, uint16_t port, char *body, const char *tier)
{
    const int i = mu->n++;
    memset(&mu->r[i], 0, sizeof mu->r[i]);
    mu->body[i] = body;
    mu->c[i] = request(port, "/v1/completions", body, strlen(body), &mu->r[i], &mu->h[i], tier);
    curl_multi_add_handle(mu->m, mu->c[i]);
}

static int multi_run(multi *mu, double seconds)
{
    int running = 1;
    const double until = core_now() + seconds;
    while (running && core_now() < until) {
        curl_multi_perform(mu->m, &running);
        if (running) curl_multi_poll(mu->m, NULL, 0, 20, NULL);
    }
    return running;
}

static void multi_free(multi *mu)
{
    for (int i = 0; i < mu->n; i++) {
        curl_multi_remove_handle(mu->m, mu->c[i]);
        curl_easy_cleanup(mu->c[i]);
        curl_slist_free_all(mu->h[i]);
        free(mu->r[i].body);
        free(mu->body[i]);
    }
    curl_multi_cleanup(mu->m);
}

static void test_concurrent_streams(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    srv_config cfg;
    srv *s = start(&cfg, model);
    const uint16_t port = srv_port(s);
    /* One at a time first. */
    char alone[8][4096];
    for (int i = 0; i < 8; i++) {
        char *b = stream_body(i, 32);
        reply r = http(port, "/v1/completions", b);
        stream st;
        parse_sse(r.body, &st, false);
        assert_true(st.done_marker && st.usage_seen);
        assert_true(st.text_len < sizeof alone[i]);
        memcpy(alone[i], st.text, st.text_len + 1);
        free(b);
        free(r.body);
    }
    multi mu = {.m = curl_multi_init()};
    for (int i = 0; i < 8; i++) multi_add(&mu, port, stream_body(i, 32), NULL);
    assert_int_equal(multi_run(&mu, 120), 0);
    for (int i = 0; i < 8; i++) {
        long code;
        curl_easy_getinfo(mu.c[i], CURLINFO_RESPONSE_CODE, &code);
        assert_int_equal(code, 200);
        stream st;
        parse_sse(mu.r[i].body, &st, false);
        assert_true(st.done_marker && st.usage_seen);
        assert_int_equal(st.completion_tokens, 32);
        if (strcmp(st.text, alone[i]))
            fail_msg("stream %d differs from its run alone:\n%s\n---\n%s", i, st.text, alone[i]);
    }
    multi_free(&mu);
    srv_stop(s);
}

/* ---- priorities, disconnects, metrics -------------------------------------------------- */

static double metric(uint16_t port, const char *name_and_labels)
{
    reply r = http(port, "/metrics", NULL);
    const char *p = strstr(r.body, name_and_labels);
    double v = p ? atof(p + strlen(name_and_labels)) : -1;
    free(r.body);
    return v;
}

/* A long greedy stream (the context is large enough for thousands of tokens). */
static char *long_body(int i, int max_tokens)
{
    char *b = malloc(256);
    snprintf(b, 256,
             "{\"model\":\"stories\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,"
             "\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
             prompts[i], max_tokens);
    return b;
}

/* Whether at least k of the first n streams are sending (which ones got slots is up to the
 * order the requests arrived in). */
static bool streaming(const multi *mu, int n, int k)
{
    int sending = 0;
    for (int i = 0; i < n; i++) sending += mu->r[i].len >= 300;
    return sending >= k;
}

static void test_vip_and_disconnect(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    srv_config cfg;
    srv *s = start(&cfg, model);
    srv_stop(s);
    cfg.n_ctx = 8192;
    mica_err err;
    if (srv_start(&s, &cfg, &err)) fail_msg("%s", err.msg);
    const uint16_t port = srv_port(s);
    /* Four long standard streams fill the four slots and two more wait; then a VIP arrives,
     * runs and finishes while every standard stream is still going. */
    multi mu = {.m = curl_multi_init()};
    for (int i = 0; i < 6; i++) multi_add(&mu, port, long_body(i, 2000), "standard");
    double until = core_now() + 60;
    while (core_now() < until && !streaming(&mu, 6, 4)) multi_run(&mu, 0.01);
    multi_add(&mu, port, stream_body(6, 8), "vip");
    stream vip;
    until = core_now() + 60;
    do {
        multi_run(&mu, 0.01);
        parse_sse(mu.r[6].body ? mu.r[6].body : "", &vip, false);
    } while (!vip.done_marker && core_now() < until);
    assert_true(vip.done_marker);
    assert_int_equal(vip.completion_tokens, 8);
    for (int i = 0; i < 6; i++) {
        stream st;
        parse_sse(mu.r[i].body ? mu.r[i].body : "", &st, false);
        assert_false(st.done_marker);
    }
    assert_true(metric(port, "mica_preemptions_total{model=\"stories\"} ") >= 1);
    /* ... and every standard stream still completes. */
    assert_int_equal(multi_run(&mu, 600), 0);
    for (int i = 0; i < 6; i++) {
        stream st;
        parse_sse(mu.r[i].body, &st, false);
        assert_true(st.done_marker);
        assert_int_equal(st.completion_tokens, 2000);
    }
    assert_true(metric(port, "mica_requests_finished_total{model=\"stories\",tier=\"vip\","
                             "reason=\"length\"} ") == 1);
    multi_free(&mu);

    /* A client that goes away: its slot is free again right after. */
    const uint16_t port2 = port;
    const double cancelled0 = metric(port2, "mica_requests_finished_total{model=\"stories\","
                                            "tier=\"standard\",reason=\"cancelled\"} ");
    mu = (multi){.m = curl_multi_init()};
    char *body = malloc(256);
    snprintf(body, 256,
             "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":8000,"
             "\"ignore_eos\":true,\"stream\":true}");
    multi_add(&mu, port2, body, NULL);
    until = core_now() + 30;
    while (core_now() < until && mu.r[0].len < 600) multi_run(&mu, 0.05);
    assert_true(mu.r[0].len >= 600); /* streaming */
    assert_true(metric(port2, "mica_free_slots{model=\"stories\"} ") == 3);
    multi_free(&mu); /* closes the connection */
    double free_slots = 0;
    for (int k = 0; k < 200 && free_slots != 4; k++) {
        usleep(10000);
        free_slots = metric(port2, "mica_free_slots{model=\"stories\"} ");
    }
    assert_true(free_slots == 4);
    assert_true(metric(port2, "mica_requests_finished_total{model=\"stories\",tier=\"standard\","
                              "reason=\"cancelled\"} ") == cancelled0 + 1);
    srv_stop(s);
}

static void test_metrics_promtool(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    if (access("/usr/bin/promtool", X_OK)) {
        printf("SKIP: promtool is not installed (Debian package prometheus)\n");
        skip();
    }
    srv_config cfg;
    srv *s = start(&cfg, model);
    const uint16_t port = srv_port(s);
    reply r = http(port, "/v1/completions",
                   "{\"model\":\"stories\",\"prompt\":\"Once\","
                   "\"max_tokens\":4}");
    free(r.body);
    r = http(port, "/metrics", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "mica_time_to_first_token_seconds_bucket{model=\"stories\""));
    assert_non_null(
        strstr(r.body, "mica_generated_tokens_total{model=\"stories\",tier=\"standard\"} 4"));
    char path[512];
    snprintf(path, sizeof path, "%s/metrics_%d.txt", tu_tmpdir(), (int)getpid());
    FILE *f = fopen(path, "w");
    fwrite(r.body, 1, r.len, f);
    fclose(f);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    const int rc = system(cmd);
    unlink(path);
    assert_int_equal(rc, 0);
    free(r.body);
    srv_stop(s);
}

static double norm_of(json_t *emb)
{
    double n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(emb, i, v) n += json_real_value(v) * json_real_value(v);
    return sqrt(n);
}

static void test_embeddings(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    srv_config cfg;
    srv *s = start(&cfg, model);
    const uint16_t port = srv_port(s);
    reply r = http(port, "/v1/embeddings",
                   "{\"model\":\"stories\",\"input\":[\"Once upon a time\",\"The dog\"]}");
    assert_int_equal(r.status, 200);
    json_t *v = parse(&r);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "list");
    json_t *data = json_object_get(v, "data");
    assert_int_equal(json_array_size(data), 2);
    json_t *e0 = json_array_get(data, 0), *e1 = json_array_get(data, 1);
    assert_string_equal(json_string_value(json_object_get(e0, "object")), "embedding");
    assert_int_equal(json_integer_value(json_object_get(e1, "index")), 1);
    json_t *emb0 = json_object_get(e0, "embedding");
    assert_int_equal(json_array_size(emb0), 64); /* stories260K: n_embd 64 */
    assert_true(fabs(norm_of(emb0) - 1) < 1e-5);
    assert_true(json_integer_value(json_object_get(json_object_get(v, "usage"), "prompt_tokens")) >
                4);
    /* The same text as tokens, and as base64, gives the same vector. */
    char body[512];
    size_t n_ids;
    mica_token ids[32];
    mica_model *m;
    mica_err err;
    if (mica_model_load(&m, model, &err)) fail_msg("%s", err.msg);
    assert_int_equal(mica_tokenize(m, "Once upon a time", 16, true, false, ids, 32, &n_ids, &err),
                     MICA_OK);
    mica_model_free(m);
    int o = snprintf(body, sizeof body, "{\"model\":\"stories\",\"input\":[");
    for (size_t i = 0; i < n_ids; i++)
        o += snprintf(body + o, sizeof body - (size_t)o, "%s%d", i ? "," : "", ids[i]);
    snprintf(body + o, sizeof body - (size_t)o, "],\"encoding_format\":\"base64\"}");
    reply r2 = http(port, "/v1/embeddings", body);
    assert_int_equal(r2.status, 200);
    json_t *v2 = parse(&r2);
    const char *b64 = json_string_value(
        json_object_get(json_array_get(json_object_get(v2, "data"), 0), "embedding"));
    assert_non_null(b64);
    /* Decode the little-endian float32 bytes. */
    uint8_t bytes[256 + 3];
    size_t nb = 0;
    for (size_t i = 0; b64[i] && b64[i + 1]; i += 4) {
        uint32_t x = 0;
        for (int k = 0; k < 4; k++) {
            const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            const char *p = b64[i + (size_t)k] == '=' ? abc : strchr(abc, b64[i + (size_t)k]);
            x = x << 6 | (uint32_t)(p - abc);
        }
        bytes[nb++] = (uint8_t)(x >> 16);
        bytes[nb++] = (uint8_t)(x >> 8);
        bytes[nb++] = (uint8_t)x;
    }
    assert_true(nb >= 256);
    for (int i = 0; i < 64; i++) {
        float f;
        memcpy(&f, bytes + 4 * i, 4);
        assert_true(fabs(f - json_real_value(json_array_get(emb0, (size_t)i))) < 1e-6);
    }
    json_decref(v2);
    free(r2.body);
    json_decref(v);
    free(r.body);
    expect_error(port, "/v1/embeddings", "{\"model\":\"stories\",\"input\":5}", 29, 400, "input",
                 NULL);
    expect_error(port, "/v1/embeddings", "{\"model\":\"gpt\",\"input\":\"x\"}", 27, 404, "model",
                 NULL);
    srv_stop(s);
}

/* The official openai npm client (tests/server/openai, installed by scripts/install-deps.sh). */
static void test_openai_npm_client(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    const char *dir = MICA_SOURCE_DIR "/tests/server/openai";
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/node_modules/openai/package.json", dir);
    if (system("node --version > /dev/null 2>&1") != 0 || access(probe, R_OK)) {
        printf("SKIP: node or the openai npm package is missing (scripts/install-deps.sh)\n");
        skip();
    }
    srv_config cfg;
    srv *s = start(&cfg, model);
    srv_stop(s);
    cfg.n_ctx = 1024; /* the tools' description makes long prompts */
    mica_err err;
    if (srv_start(&s, &cfg, &err)) fail_msg("%s", err.msg);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "node %s/client.mjs http://127.0.0.1:%u/v1 stories", dir,
             (unsigned)srv_port(s));
    const int rc = system(cmd);
    srv_stop(s);
    assert_int_equal(rc, 0);
}

/* A stream that waits for a slot receives comment pings, then its answer. */
static void test_pings_while_waiting(void **state)
{
    (void)state;
    char model[1024];
    MODEL_PATH(model);
    srv_config cfg;
    srv_config_defaults(&cfg);
    srv *s = start(&cfg, model);
    srv_stop(s);
    cfg.n_parallel = 1;
    cfg.n_batch = 8;
    cfg.n_ctx = 8192;
    cfg.ping_s = 0.05;
    mica_err err;
    if (srv_start(&s, &cfg, &err)) fail_msg("%s", err.msg);
    multi mu = {.m = curl_multi_init()};
    char *hog = malloc(256);
    snprintf(hog, 256,
             "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":3000,"
             "\"ignore_eos\":true,\"stream\":true}");
    multi_add(&mu, srv_port(s), hog, NULL);
    const double until = core_now() + 30;
    while (core_now() < until && mu.r[0].len < 300) multi_run(&mu, 0.01); /* it holds the slot */
    multi_add(&mu, srv_port(s), stream_body(1, 4), NULL);
    assert_int_equal(multi_run(&mu, 120), 0);
    assert_non_null(strstr(mu.r[1].body, ": ping\n\n"));
    stream st;
    parse_sse(mu.r[1].body, &st, false);
    assert_true(st.done_marker);
    assert_int_equal(st.completion_tokens, 4);
    multi_free(&mu);
    srv_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),           cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_concurrent_streams),  cmocka_unit_test(test_vip_and_disconnect),
        cmocka_unit_test(test_metrics_promtool),    cmocka_unit_test(test_openai_npm_client),
        cmocka_unit_test(test_pings_while_waiting), cmocka_unit_test(test_embeddings),
    };
    return cmocka_run_group_tests(tests, http_tests_setup, NULL);
}
