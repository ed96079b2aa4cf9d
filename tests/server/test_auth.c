/*
 * test_auth.c - who may talk to the gateway, over real HTTP(S) on 127.0.0.1 with libcurl:
 * with keys configured a missing, wrong or revoked key gets 401 (revoking in the keys file
 * takes effect in the running server), a key limited to other models gets 403, the N+1st
 * request in a minute gets 429 with Retry-After, the key's tier is the request's tier; keys
 * are stored only as hashes and never appear in what `mica serve` prints; HTTPS with a
 * self-signed certificate verified by libcurl works and plain HTTP to that port fails; the
 * server refuses to listen off loopback without keys, or without TLS.
 */
#define _GNU_SOURCE
#include "http_client.h"
#include "serve_child.h"

#include "server/srv.h"

#include <curl/curl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A reply with its body copied into a fixed buffer, so the checks need no frees. */
typedef struct answer {
    long status;
    char body[8192];
    char retry_after[16];
    CURLcode rc;
} answer;

static answer call(const char *scheme, uint16_t port, const char *path, const char *key,
                   const char *body, const char *ca)
{
    reply r = http_perform(&(http_req){
        .scheme = scheme, .port = port, .path = path, .body = body, .key = key, .ca = ca});
    answer a = {.status = r.status, .rc = r.rc};
    snprintf(a.body, sizeof a.body, "%s", r.body);
    memcpy(a.retry_after, r.retry_after, sizeof a.retry_after);
    reply_free(&r);
    return a;
}

static const char *const chat_body = "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
                                     "\"content\":\"Hi\"}],\"max_tokens\":2}";

static void tmp_dir(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/auth_%d_%s", tu_tmpdir(), (int)getpid(), name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", buf);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mkdir(buf, 0700), 0);
}

static void add_key(const srv_config *c, const srv_key *tmpl, char *secret, char *id)
{
    char path[SRV_PATH_MAX];
    srv_config_keys_path(c, path, sizeof path);
    srv_keyring ring;
    mica_err err;
    if (srv_keys_load(&ring, path, &err) || srv_keys_add(&ring, tmpl, secret, 80, &err) ||
        srv_keys_save(&ring, path, &err))
        fail_msg("%s", err.msg);
    strcpy(id, ring.keys[ring.n - 1].id);
    srv_keys_free(&ring);
}

static void test_keys(void **state)
{
    (void)state;
    char model[1024], dir[512];
    TU_SHARED_PATH(model, "testdata/stories260K/models/stories260K.F32.gguf");
    tmp_dir(dir, sizeof dir, "keys");
    srv_config c;
    http_test_config(&c, model, dir);
    char vip[80], limited[80], other[80], id_vip[24], id_limited[24], id_other[24];
    add_key(&c, &(srv_key){.tier = "vip"}, vip, id_vip);
    add_key(&c, &(srv_key){.tier = "standard", .rpm = 3}, limited, id_limited);
    add_key(&c, &(srv_key){.tier = "batch", .models = {"elsewhere"}, .n_models = 1}, other,
            id_other);
    /* Only hashes are stored. */
    char path[SRV_PATH_MAX];
    srv_config_keys_path(&c, path, sizeof path);
    char *file = tu_read_file(path, NULL);
    assert_null(strstr(file, vip + 3));
    assert_null(strstr(file, limited + 3));
    free(file);

    srv *s;
    mica_err err;
    if (srv_start(&s, &c, &err)) fail_msg("%s", err.msg);
    const uint16_t port = srv_port(s);
    answer r = call("http", port, "/v1/chat/completions", NULL, chat_body, NULL);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "invalid_api_key"));
    r = call("http", port, "/v1/chat/completions", "mk-0000", chat_body, NULL);
    assert_int_equal(r.status, 401);
    r = call("http", port, "/v1/models", NULL, NULL, NULL);
    assert_int_equal(r.status, 401);
    r = call("http", port, "/health", NULL, NULL, NULL); /* load balancers need no key */
    assert_int_equal(r.status, 200);

    r = call("http", port, "/v1/chat/completions", vip, chat_body, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"service_tier\":\"vip\""));
    /* A key for other models: 403, and /v1/models lists none of ours. */
    r = call("http", port, "/v1/chat/completions", other, chat_body, NULL);
    assert_int_equal(r.status, 403);
    assert_non_null(strstr(r.body, "model_not_allowed"));
    r = call("http", port, "/v1/models", other, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "stories"));
    /* 3 requests per minute: the 4th is refused with Retry-After. */
    for (int i = 0; i < 3; i++) {
        r = call("http", port, "/v1/chat/completions", limited, chat_body, NULL);
        assert_int_equal(r.status, 200);
    }
    r = call("http", port, "/v1/chat/completions", limited, chat_body, NULL);
    assert_int_equal(r.status, 429);
    assert_true(atoi(r.retry_after) >= 1 && atoi(r.retry_after) <= 20);
    /* Revoking in the file takes effect in the running server. */
    srv_keyring ring;
    if (srv_keys_load(&ring, path, &err) || srv_keys_revoke(&ring, id_vip, &err) ||
        srv_keys_save(&ring, path, &err))
        fail_msg("%s", err.msg);
    srv_keys_free(&ring);
    r = call("http", port, "/v1/chat/completions", vip, chat_body, NULL);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "revoked"));
    srv_stop(s);
}

/* ---- the process: what it prints ------------------------------------------------------- */

static void test_keys_never_printed(void **state)
{
    (void)state;
    char model[1024], dir[512], log[600], mspec[1100];
    TU_SHARED_PATH(model, "testdata/stories260K/models/stories260K.F32.gguf");
    tmp_dir(dir, sizeof dir, "print");
    snprintf(log, sizeof log, "%s/serve.log", dir);
    snprintf(mspec, sizeof mspec, "stories=%s", model);
    srv_config c;
    http_test_config(&c, model, dir);
    char key[80], id[24];
    add_key(&c, &(srv_key){.tier = "standard"}, key, id);
    const char *args[] = {"-m", mspec, "--port", "0", "--data-dir", dir, "-t", "1", NULL};
    const pid_t pid = spawn_serve(args, log);
    const uint16_t port = wait_port(log, pid);
    assert_true(port > 0);
    answer r = call("http", port, "/v1/chat/completions", key, chat_body, NULL);
    assert_int_equal(r.status, 200);
    r = call("http", port, "/v1/chat/completions", "mk-wrong-key-123", chat_body, NULL);
    assert_int_equal(r.status, 401);
    kill(pid, SIGTERM);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *out = tu_read_file(log, NULL);
    assert_null(strstr(out, key + 3));
    assert_null(strstr(out, "mk-wrong-key-123"));
    free(out);
}

/* ---- TLS and exposure ------------------------------------------------------------------ */

static void test_tls(void **state)
{
    (void)state;
    char model[1024], dir[512], cmd[2048];
    TU_SHARED_PATH(model, "testdata/stories260K/models/stories260K.F32.gguf");
    if (system("command -v certtool > /dev/null")) {
        printf("SKIP: certtool (Debian package gnutls-bin) is not installed\n");
        skip();
    }
    tmp_dir(dir, sizeof dir, "tls");
    snprintf(cmd, sizeof cmd,
             "cd '%s' && certtool --generate-privkey --key-type=ecdsa --outfile key.pem 2>/dev/null"
             " && printf 'cn = 127.0.0.1\\nip_address = 127.0.0.1\\nexpiration_days = 2\\n"
             "tls_www_server\\nsigning_key\\nca\\ncert_signing_key\\n' > tmpl"
             " && certtool --generate-self-signed --load-privkey key.pem --template tmpl"
             " --outfile cert.pem > /dev/null 2>&1",
             dir);
    assert_int_equal(system(cmd), 0);
    srv_config c;
    http_test_config(&c, model, dir);
    snprintf(c.tls_cert, sizeof c.tls_cert, "%s/cert.pem", dir);
    snprintf(c.tls_key, sizeof c.tls_key, "%s/key.pem", dir);
    srv *s;
    mica_err err;
    if (srv_start(&s, &c, &err)) fail_msg("%s", err.msg);
    char ca[600];
    snprintf(ca, sizeof ca, "%s/cert.pem", dir);
    answer r = call("https", srv_port(s), "/v1/chat/completions", NULL, chat_body, ca);
    if (r.rc != CURLE_OK) fail_msg("https: %s", curl_easy_strerror(r.rc));
    assert_int_equal(r.status, 200);
    /* Without the certificate the client refuses; plain HTTP gets no HTTP answer. */
    r = call("https", srv_port(s), "/health", NULL, NULL, "/dev/null");
    assert_int_not_equal(r.rc, CURLE_OK);
    r = call("http", srv_port(s), "/health", NULL, NULL, NULL);
    assert_true(r.rc != CURLE_OK || r.status != 200);
    srv_stop(s);

    /* Off loopback: keys are required, and TLS unless --insecure-http. */
    char other[512];
    tmp_dir(other, sizeof other, "exposed");
    http_test_config(&c, model, other);
    snprintf(c.host, sizeof c.host, "0.0.0.0");
    assert_int_equal(srv_start(&s, &c, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "loopback"));
    char key[80], id[24];
    add_key(&c, &(srv_key){.tier = "standard"}, key, id);
    assert_int_equal(srv_start(&s, &c, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "--tls-cert"));
    c.insecure_http = true;
    if (srv_start(&s, &c, &err)) fail_msg("%s", err.msg);
    srv_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_keys_never_printed),
        cmocka_unit_test(test_tls),
    };
    return cmocka_run_group_tests(tests, http_tests_setup, NULL);
}
