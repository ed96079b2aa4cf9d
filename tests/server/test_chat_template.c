/*
 * test_chat_template.c - the gateway renders chat prompts with the model's own Jinja template:
 * stories260K is given Qwen2.5's real template (tokenizer.chat_template), and the prompt the
 * server built for a conversation (read back from its request log) is byte-for-byte the
 * rendering Hugging Face transformers made of that conversation (../shared/testdata/templates),
 * tools and earlier tool calls included.
 * Text parts are joined into a string before the template sees them. A template that raises
 * answers 500 naming the template line; a template the renderer cannot
 * parse falls back to the built-in format with a warning, and the server keeps serving.
 */
#define _GNU_SOURCE
#include "http_client.h"
#include "gguf_copy.h"

#include "server/srv.h"
#include "store/store.h"

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <unistd.h>

/* Writes the stories260K model with `tmpl` as its tokenizer.chat_template to path. */
static void model_with_template(const char *path, const char *tmpl)
{
    char src[1024];
    TU_SHARED_PATH(src, "testdata/stories260K/models/stories260K.F32.gguf");
    tu_gguf_copy_with_str(src, path, "tokenizer.chat_template", tmpl);
}

static srv *start(const char *dir, const char *model)
{
    srv_config c;
    http_test_config(&c, model, dir);
    c.n_parallel = 1;
    c.n_ctx = 2048;
    mica_err err;
    srv *s;
    if (srv_start(&s, &c, &err)) fail_msg("%s", err.msg);
    return s;
}

static mica_status on_row(void *ctx, const store_log_row *row, mica_err *err)
{
    (void)err;
    *(char **)ctx = strdup(row->prompt ? row->prompt : "");
    return MICA_OK;
}

/* The prompt the server stored for response id. */
static char *stored_prompt(const char *dir, const char *id)
{
    store *db;
    mica_err err;
    char *prompt = NULL;
    if (store_open(&db, dir, &(store_opts){0}, &err) ||
        store_log_each(db, &(store_filter){.id = id}, on_row, &prompt, &err))
        fail_msg("%s", err.msg);
    store_close(db);
    assert_non_null(prompt);
    return prompt;
}

/* POSTs the messages (and tools, may be NULL) of a conversation; returns the reply. */
static reply chat(uint16_t port, json_t *messages, json_t *tools)
{
    json_t *body = json_pack("{s:s,s:O,s:i,s:i}", "model", "stories", "messages", messages,
                             "max_tokens", 2, "temperature", 0);
    if (tools) json_object_set(body, "tools", tools);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    reply r = http_perform(&(http_req){.port = port, .path = "/v1/chat/completions", .body = text});
    free(text);
    return r;
}

static void test_renders_like_transformers(void **state)
{
    (void)state;
    char tdir[1024], dir[512], model[600], path[1200];
    TU_SHARED_PATH(tdir, "testdata/templates");
    snprintf(dir, sizeof dir, "%s/chat_template_%d", tu_tmpdir(), (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(model, sizeof model, "%s/qwen-template.gguf", dir);
    snprintf(path, sizeof path, "%s/templates/Qwen-Qwen2.5-7B-Instruct.jinja", tdir);
    char *tmpl = tu_read_file(path, NULL);
    model_with_template(model, tmpl);
    free(tmpl);
    srv *s = start(dir, model);

    /* Conversations rendered with add_generation_prompt, as the gateway always asks. */
    static const char *const convs[] = {"system_user",
                                        "multi_turn",
                                        "chinese",
                                        "whitespace",
                                        "system_user",
                                        "tools_user",
                                        "tool_call_roundtrip_openai"};
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
        snprintf(path, sizeof path, "%s/conversations/%s.json", tdir, convs[i]);
        json_error_t je;
        json_t *conv = json_load_file(path, 0, &je);
        assert_non_null(conv);
        assert_true(json_is_true(json_object_get(conv, "add_generation_prompt")));
        if (i == 4) { /* again with the user's text as an OpenAI text part */
            json_t *user = json_array_get(json_object_get(conv, "messages"), 1);
            json_object_set_new(
                user, "content",
                json_pack("[{s:s,s:O}]", "type", "text", "text", json_object_get(user, "content")));
        }
        reply r =
            chat(srv_port(s), json_object_get(conv, "messages"), json_object_get(conv, "tools"));
        if (r.status != 200) fail_msg("%s: %ld %s", convs[i], r.status, r.body);
        json_t *resp = json_loads(r.body, 0, &je);
        char *got = stored_prompt(dir, json_string_value(json_object_get(resp, "id")));
        snprintf(path, sizeof path, "%s/renders/Qwen-Qwen2.5-7B-Instruct__%s.txt", tdir, convs[i]);
        size_t len;
        char *want = tu_read_file(path, &len);
        if (strlen(got) != len || memcmp(got, want, len))
            fail_msg("%s: the server's prompt differs from transformers' rendering:\n%s\n---\n%s",
                     convs[i], got, want);
        free(want);
        free(got);
        json_decref(resp);
        json_decref(conv);
        reply_free(&r);
    }
    srv_stop(s);
}

static void test_template_errors(void **state)
{
    (void)state;
    char dir[512], model[600];
    snprintf(dir, sizeof dir, "%s/chat_template_err_%d", tu_tmpdir(), (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(model, sizeof model, "%s/raising.gguf", dir);
    model_with_template(model, "{% for m in messages %}{{ m.content }}\n"
                               "{% if m.role == 'system' %}{{ raise_exception('no system "
                               "messages') }}{% endif %}{% endfor %}");
    srv *s = start(dir, model);
    json_t *msgs = json_pack("[{s:s,s:s}]", "role", "system", "content", "Be brief.");
    reply r = chat(srv_port(s), msgs, NULL);
    assert_int_equal(r.status, 500);
    assert_non_null(strstr(r.body, ":2:"));
    assert_non_null(strstr(r.body, "no system messages"));
    reply_free(&r);
    json_decref(msgs);
    msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", "Hi");
    r = chat(srv_port(s), msgs, NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    srv_stop(s);

    /* Unparseable: the built-in format serves instead. */
    model_with_template(model, "{% for m in messages %}{{ m.content }");
    s = start(dir, model);
    r = chat(srv_port(s), msgs, NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    json_decref(msgs);
    srv_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renders_like_transformers),
        cmocka_unit_test(test_template_errors),
    };
    return cmocka_run_group_tests(tests, http_tests_setup, NULL);
}
