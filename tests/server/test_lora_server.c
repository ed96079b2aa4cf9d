/*
 * test_lora_server.c - per-request LoRA adapters in the gateway: llama-dense with llama.cpp's
 * reference adapter configured as "ld"; three requests at once — no adapter, "ld" at scale 1
 * and "ld" at scale 0.5 — share the engine's batches, and each greedy answer is the one
 * llama.cpp's logits for that setting give (../shared/testdata/llamacpp/lora). Unknown
 * adapters and bad entries are 400s naming "lora".
 */
#define _GNU_SOURCE
#include "http_client.h"
#include "llamacpp_ref.h"

#include "core/core.h"

#include <jansson.h>
#include <pthread.h>

#define N_CASES 3

typedef struct lora_case {
    const char *ref;  /* reference logits, under ../shared */
    const char *lora; /* the request's "lora" value, or NULL */
    char want[512];   /* the text of llama.cpp's greedy tokens while they are clear winners */
    uint16_t port;
    char got[4096];
} lora_case;

/* The text of the greedy tokens up to the first near tie (margin under 1e-2), made valid
 * UTF-8 as the gateway sends it (U+FFFD for bytes that are not); a replacement at the very end
 * is dropped, since the tokens after the cut may complete that character. */
static size_t expected_text(mica_model *m, const lr_ref *r, char *out, size_t cap)
{
    core_buf raw, clean;
    core_buf_init(&raw, 4096);
    core_buf_init(&clean, 4 * 4096);
    for (int k = 0; k < LR_N_GEN && r->margin[k] > 1e-2 && !mica_model_is_eog(m, r->greedy[k]);
         k++) {
        char piece[64];
        const size_t len = mica_token_to_piece(m, r->greedy[k], false, piece, sizeof piece);
        core_buf_append(&raw, piece, len);
    }
    core_buf_append_utf8(&clean, raw.data ? raw.data : "", raw.len);
    size_t n = clean.len;
    while (n >= 3 && !memcmp(clean.data + n - 3, "\xef\xbf\xbd", 3)) n -= 3;
    n = n < cap - 1 ? n : cap - 1;
    if (n) memcpy(out, clean.data, n);
    out[n] = '\0';
    core_buf_free(&raw);
    core_buf_free(&clean);
    return n;
}

static void *ask(void *arg)
{
    lora_case *c = arg;
    lr_ref r;
    lr_load(c->ref, &r);
    char body[1024];
    int n = snprintf(body, sizeof body,
                     "{\"model\":\"m\",\"temperature\":0,\"max_tokens\":%d,"
                     "\"prompt\":[",
                     LR_N_GEN);
    for (int i = 0; i < LR_N_PROMPT; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s%d", i ? "," : "", r.prompt[i]);
    snprintf(body + n, sizeof body - (size_t)n, "]%s%s}", c->lora ? ",\"lora\":" : "",
             c->lora ? c->lora : "");
    lr_free(&r);
    reply rep = http_perform(&(http_req){.port = c->port, .path = "/v1/completions", .body = body});
    json_t *v = json_loads(rep.body, 0, NULL);
    const char *text = json_string_value(
        json_object_get(json_array_get(json_object_get(v, "choices"), 0), "text"));
    snprintf(c->got, sizeof c->got, "%s", text ? text : rep.body);
    json_decref(v);
    reply_free(&rep);
    return NULL;
}

static void test_adapters_per_request(void **state)
{
    (void)state;
    char model[1024], adapter[1024], dir[512], spec[1200];
    TU_SHARED_PATH(model, "testdata/llamacpp/models/llama-dense.F32.gguf");
    TU_SHARED_PATH(adapter, "testdata/llamacpp/lora/adapters/lora-llama-dense.gguf");
    snprintf(dir, sizeof dir, "%s/lora_server_%d", tu_tmpdir(), (int)getpid());
    lora_case cases[N_CASES] = {
        {.ref = "testdata/llamacpp/logits/llama-dense.F32.f32kv"},
        {.ref = "testdata/llamacpp/lora/logits/lora-llama-dense.s1.0.f32kv", .lora = "\"ld\""},
        {.ref = "testdata/llamacpp/lora/logits/lora-llama-dense.s0.5.f32kv",
         .lora = "[{\"name\":\"ld\",\"scale\":0.5}]"},
    };
    mica_model *m;
    mica_err err;
    if (mica_model_load(&m, model, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < N_CASES; i++) {
        lr_ref r;
        lr_load(cases[i].ref, &r);
        assert_true(expected_text(m, &r, cases[i].want, sizeof cases[i].want) >= 4);
        lr_free(&r);
    }
    mica_model_free(m);
    assert_string_not_equal(cases[0].want, cases[1].want); /* the adapter matters */

    srv_config c;
    http_test_config(&c, model, dir);
    c.n_parallel = 4;
    snprintf(c.models[0].name, sizeof c.models[0].name, "m");
    snprintf(spec, sizeof spec, "ld=%s", adapter);
    if (srv_config_add_lora(&c, spec, &err)) fail_msg("%s", err.msg);
    srv *s;
    if (srv_start(&s, &c, &err)) fail_msg("%s", err.msg);
    pthread_t th[N_CASES];
    for (int i = 0; i < N_CASES; i++) {
        cases[i].port = srv_port(s);
        pthread_create(&th[i], NULL, ask, &cases[i]);
    }
    for (int i = 0; i < N_CASES; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_CASES; i++)
        if (strncmp(cases[i].got, cases[i].want, strlen(cases[i].want)))
            fail_msg("%s: answered '%s', llama.cpp's greedy text starts '%s'", cases[i].ref,
                     cases[i].got, cases[i].want);

    static const char *const bad[] = {"\"nope\"", "[{\"id\":3}]",
                                      "[{\"name\":\"ld\",\"scale\":\"x\"}]", "[7]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"model\":\"m\",\"prompt\":\"a\",\"max_tokens\":1,\"lora\":%s}", bad[i]);
        reply rep =
            http_perform(&(http_req){.port = srv_port(s), .path = "/v1/completions", .body = body});
        assert_int_equal(rep.status, 400);
        assert_non_null(strstr(rep.body, "\"param\":\"lora\""));
        reply_free(&rep);
    }
    srv_stop(s);
}

static void test_config_errors(void **state)
{
    (void)state;
    srv_config c;
    srv_config_defaults(&c);
    mica_err err;
    assert_int_equal(srv_config_add_model(&c, "m=/x.gguf", &err), MICA_OK);
    assert_int_equal(srv_config_add_lora(&c, "noequals", &err), MICA_EINVAL);
    assert_int_equal(srv_config_add_lora(&c, "other:a=/a.gguf", &err), MICA_OK);
    assert_int_equal(srv_config_check(&c, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "'other'"));
    c.n_loras = 0;
    assert_int_equal(srv_config_add_lora(&c, "a=/a.gguf", &err), MICA_OK);
    assert_int_equal(srv_config_add_lora(&c, "m:a=/b.gguf", &err), MICA_OK);
    assert_int_equal(srv_config_check(&c, &err), MICA_EINVAL);
    assert_non_null(strstr(err.msg, "used twice"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adapters_per_request),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, http_tests_setup, NULL);
}
