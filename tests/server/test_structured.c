/*
 * test_structured.c - structured output through the gateway over real HTTP: response_format
 * json_schema (chat, plain and streamed) and json_object, and llama.cpp's "grammar" field
 * (completions) return text that follows them; an invalid schema is a 400 naming the schema
 * path with param "response_format", a bad grammar a 400 with param "grammar"; a named
 * tool_choice makes the answer a call of that tool with arguments following its (strict)
 * parameters. The model is a
 * random-weight one with byte tokens (model_synth), so any JSON can be written and no shared
 * data is needed.
 */
#include "test_util.h"

#include "http_client.h"
#include "model/model_synth.h"
#include "server/srv.h"

#include <jansson.h>
#include <unistd.h>

typedef struct fixture {
    char model[512];
    srv *s;
} fixture;

static int setup(void **state)
{
    http_tests_setup(state);
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->model, sizeof f->model, "%s/test_structured_%ld.gguf", tu_tmpdir(), (long)getpid());
    model_synth_params p = model_synth_default_params();
    p.n_ctx = 1024;
    mica_err err;
    if (model_synth_write(f->model, &p, &err)) fail_msg("%s", err.msg);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/structured_%ld", tu_tmpdir(), (long)getpid());
    srv_config c;
    http_test_config(&c, f->model, dir);
    c.n_ctx = 1024;
    c.n_batch = 64;
    if (srv_start(&f->s, &c, &err)) fail_msg("%s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    srv_stop(f->s);
    unlink(f->model);
    free(f);
    return 0;
}

static reply post(fixture *f, const char *path, const char *body)
{
    http_req q = {.port = srv_port(f->s), .path = path, .body = body};
    return http_perform(&q);
}

static json_t *parse_reply(const reply *r, long status)
{
    if (r->status != status) fail_msg("status %ld, want %ld: %s", r->status, status, r->body);
    json_error_t je;
    json_t *v = json_loads(r->body, 0, &je);
    if (!v) fail_msg("reply is not JSON: %s", r->body);
    return v;
}

static const char person_format[] =
    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"person\","
    "\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":"
    "\"string\",\"maxLength\":6},\"age\":{\"type\":\"integer\"}},\"required\":[\"name\","
    "\"age\"]}}}";

/* The content a person schema allows: an object with a short name and an integer age. */
static void check_person(const char *content)
{
    json_error_t je;
    json_t *doc = json_loads(content, JSON_ALLOW_NUL, &je);
    if (!doc) fail_msg("content is not JSON (%s): %s", je.text, content);
    json_t *name = json_object_get(doc, "name");
    assert_true(json_is_string(name));
    assert_true(json_is_integer(json_object_get(doc, "age")));
    assert_int_equal(json_object_size(doc), 2);
    json_decref(doc);
}

static void test_json_schema_chat(void **state)
{
    fixture *f = *state;
    for (int seed = 0; seed < 5; seed++) {
        char body[1024];
        snprintf(body, sizeof body,
                 "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                 "\"temperature\":1,\"seed\":%d,%s}",
                 seed, person_format);
        reply r = post(f, "/v1/chat/completions", body);
        json_t *v = parse_reply(&r, 200);
        json_t *choice = json_array_get(json_object_get(v, "choices"), 0);
        assert_string_equal(json_string_value(json_object_get(choice, "finish_reason")), "stop");
        check_person(
            json_string_value(json_object_get(json_object_get(choice, "message"), "content")));
        json_decref(v);
        reply_free(&r);
    }
}

/* A stream: the deltas put together are the document. */
static void test_json_schema_stream(void **state)
{
    fixture *f = *state;
    char body[1024];
    snprintf(body, sizeof body,
             "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
             "\"stream\":true,\"seed\":3,%s}",
             person_format);
    reply r = post(f, "/v1/chat/completions", body);
    assert_int_equal(r.status, 200);
    char content[8192] = "";
    for (char *line = strstr(r.body, "data: {"); line; line = strstr(line + 1, "data: {")) {
        char *end = strstr(line, "\n\n");
        json_t *chunk = json_loadb(line + 6, (size_t)(end - line - 6), 0, NULL);
        json_t *delta =
            json_object_get(json_array_get(json_object_get(chunk, "choices"), 0), "delta");
        const char *piece = json_string_value(json_object_get(delta, "content"));
        if (piece) strncat(content, piece, sizeof content - strlen(content) - 1);
        json_decref(chunk);
    }
    assert_non_null(strstr(r.body, "data: [DONE]"));
    check_person(content);
    reply_free(&r);
}

static void test_json_object(void **state)
{
    fixture *f = *state;
    reply r = post(f, "/v1/chat/completions",
                   "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                   "\"seed\":1,\"response_format\":{\"type\":\"json_object\"}}");
    json_t *v = parse_reply(&r, 200);
    json_t *choice = json_array_get(json_object_get(v, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(choice, "finish_reason")), "stop");
    const char *content =
        json_string_value(json_object_get(json_object_get(choice, "message"), "content"));
    json_t *doc = json_loads(content, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(doc)) fail_msg("not a JSON object: %s", content);
    json_decref(doc);
    json_decref(v);
    reply_free(&r);
}

static void test_grammar_field(void **state)
{
    fixture *f = *state;
    for (int seed = 0; seed < 4; seed++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"model\":\"stories\",\"prompt\":\"Is it?\",\"seed\":%d,\"n\":2,"
                 "\"grammar\":\"root ::= (\\\"yes\\\" | \\\"no\\\") \\\"!\\\"{0,2}\"}",
                 seed);
        reply r = post(f, "/v1/completions", body);
        json_t *v = parse_reply(&r, 200);
        for (size_t i = 0; i < 2; i++) {
            const char *text = json_string_value(
                json_object_get(json_array_get(json_object_get(v, "choices"), i), "text"));
            const size_t n = strspn(text + (text[0] == 'y' ? 3 : 2), "!");
            if ((strncmp(text, "yes", 3) && strncmp(text, "no", 2)) ||
                strlen(text) != (text[0] == 'y' ? 3 : 2) + n || n > 2)
                fail_msg("text '%s' is not in the grammar", text);
        }
        json_decref(v);
        reply_free(&r);
    }
}

static void expect_400(fixture *f, const char *path, const char *body, const char *param,
                       const char *message)
{
    reply r = post(f, path, body);
    json_t *v = parse_reply(&r, 400);
    json_t *e = json_object_get(v, "error");
    assert_string_equal(json_string_value(json_object_get(e, "param")), param);
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (!strstr(msg, message)) fail_msg("message '%s' lacks '%s'", msg, message);
    json_decref(v);
    reply_free(&r);
}

static void test_bad_schema_and_grammar(void **state)
{
    fixture *f = *state;
    expect_400(f, "/v1/chat/completions",
               "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
               "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
               "\"schema\":{\"type\":\"object\",\"properties\":{\"age\":{\"type\":\"years\"}}}}}}",
               "response_format", "#/properties/age/type");
    expect_400(f, "/v1/chat/completions",
               "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
               "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
               "\"schema\":{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}}}}",
               "response_format", "#/$defs/a");
    expect_400(f, "/v1/completions",
               "{\"model\":\"stories\",\"prompt\":\"x\",\"response_format\":{\"type\":\"yaml\"}}",
               "response_format", "unknown response_format type");
    expect_400(f, "/v1/completions",
               "{\"model\":\"stories\",\"prompt\":\"x\",\"grammar\":\"root ::= undefined\"}",
               "grammar", "rule 'undefined' is used but not defined");
}

/* Two tools; the named one is called, with arguments following its parameters (strict). */
static const char two_tools[] =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"b\",\"strict\":true,\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},\"required\":[\"n\"]}}}]";

static void test_named_tool_choice(void **state)
{
    fixture *f = *state;
    char body[1024];
    for (int seed = 0; seed < 5; seed++) {
        snprintf(body, sizeof body,
                 "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                 "%s,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"b\"}},"
                 "\"parallel_tool_calls\":false,\"temperature\":1,\"seed\":%d,"
                 "\"max_tokens\":400}",
                 two_tools, seed);
        reply r = post(f, "/v1/chat/completions", body);
        json_t *v = parse_reply(&r, 200);
        json_t *ch = json_array_get(json_object_get(v, "choices"), 0);
        assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
        json_t *calls = json_object_get(json_object_get(ch, "message"), "tool_calls");
        assert_int_equal(json_array_size(calls), 1);
        json_t *fn = json_object_get(json_array_get(calls, 0), "function");
        assert_string_equal(json_string_value(json_object_get(fn, "name")), "b");
        json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
        assert_true(json_is_integer(json_object_get(args, "n")));
        assert_int_equal(json_object_size(args), 1);
        json_decref(args);
        json_decref(v);
        reply_free(&r);
    }
    snprintf(body, sizeof body,
             "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
             "%s,\"tool_choice\":\"required\",\"response_format\":{\"type\":\"json_object\"}}",
             two_tools);
    expect_400(f, "/v1/chat/completions", body, "tool_choice", "cannot be combined");
    snprintf(body, sizeof body,
             "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
             "%s,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"c\"}}}",
             two_tools);
    expect_400(f, "/v1/chat/completions", body, "tool_choice", "'c'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_schema_chat),
        cmocka_unit_test(test_json_schema_stream),
        cmocka_unit_test(test_json_object),
        cmocka_unit_test(test_grammar_field),
        cmocka_unit_test(test_bad_schema_and_grammar),
        cmocka_unit_test(test_named_tool_choice),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
