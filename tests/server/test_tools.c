/*
 * test_tools.c - the tool-call parser per template family (Hermes/Qwen <tool_call>, Llama 3
 * JSON with or without <|python_tag|>, Mistral [TOOL_CALLS] in both its forms): the calls
 * found (names, arguments compared as JSON), the text left as content, text that only looks
 * like a call kept as content, parallel_tool_calls false, and streaming: fed in every chunk
 * size the result equals the one-piece result, and plain text before a call is released before
 * the call is complete.
 */
#include "test_util.h"

#include "server/srv_int.h"

#include <jansson.h>

typedef struct expect {
    srv_tool_family family;
    const char *text;
    const char *content; /* what stays text */
    int n_calls;
    const char *names[3];
    const char *args[3]; /* JSON */
} expect;

static const expect cases[] = {
    {SRV_TOOLS_HERMES,
     "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
     "\"Paris\", \"unit\": \"celsius\"}}\n</tool_call>",
     "Let me check.\n",
     1,
     {"get_weather"},
     {"{\"city\":\"Paris\",\"unit\":\"celsius\"}"}},
    {SRV_TOOLS_HERMES,
     "<tool_call>{\"name\":\"a\",\"arguments\":{\"x\":[1,2]}}</tool_call>\n<tool_call>{\"name\":"
     "\"b\",\"arguments\":\"{\\\"y\\\": \\\"}\\\"}\"}</tool_call>",
     "\n",
     2,
     {"a", "b"},
     {"{\"x\":[1,2]}", "{\"y\":\"}\"}"}},
    {SRV_TOOLS_HERMES,
     "No tools needed: a < b and <tool is not a tag.",
     "No tools needed: a < b and <tool is not a tag.",
     0,
     {0},
     {0}},
    {SRV_TOOLS_HERMES,
     "Broken <tool_call>{\"name\": oops}</tool_call> end",
     "Broken <tool_call>{\"name\": oops}</tool_call> end",
     0,
     {0},
     {0}},
    {SRV_TOOLS_HERMES,
     "Cut short <tool_call>{\"name\": \"a\", \"argu",
     "Cut short <tool_call>{\"name\": \"a\", \"argu",
     0,
     {0},
     {0}},
    {SRV_TOOLS_LLAMA3,
     "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
     "",
     1,
     {"get_weather"},
     {"{\"city\":\"Paris\"}"}},
    {SRV_TOOLS_LLAMA3,
     " {\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"q\": \"{;}\"}}",
     "",
     2,
     {"a", "b"},
     {"{}", "{\"q\":\"{;}\"}"}},
    {SRV_TOOLS_LLAMA3, "The answer is {42}.", "The answer is {42}.", 0, {0}, {0}},
    {SRV_TOOLS_LLAMA3, "{\"answer\": 42}", "{\"answer\": 42}", 0, {0}, {0}},
    {SRV_TOOLS_MISTRAL,
     "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"n\": 1}}, {\"name\": \"b\", "
     "\"arguments\": {}}]",
     "",
     2,
     {"a", "b"},
     {"{\"n\":1}", "{}"}},
    {SRV_TOOLS_MISTRAL,
     "Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]b[ARGS]{}",
     "Sure.",
     2,
     {"get_weather", "b"},
     {"{\"city\":\"Paris\"}", "{}"}},
    {SRV_TOOLS_MISTRAL,
     "Just text, [TOOL] is not it.",
     "Just text, [TOOL] is not it.",
     0,
     {0},
     {0}},
};

/* Parses text fed in chunks of `chunk` bytes (0: all at once). */
static void parse(const expect *x, size_t chunk, bool parallel, srv_tool_parser *p,
                  core_buf *content)
{
    srv_tools_init(p, x->family, parallel);
    core_buf_init(content, 1 << 20);
    const size_t n = strlen(x->text);
    if (!chunk) chunk = n ? n : 1;
    for (size_t i = 0; i < n; i += chunk)
        assert_true(srv_tools_feed(p, x->text + i, i + chunk < n ? chunk : n - i, content));
    assert_true(srv_tools_finish(p, content));
}

static void check(const expect *x, const srv_tool_parser *p, const core_buf *content, size_t chunk)
{
    const size_t n = strlen(x->content);
    if (content->len != n || (n && memcmp(content->data, x->content, n)))
        fail_msg("'%s' (chunks of %zu): content '%.*s', expected '%s'", x->text, chunk,
                 (int)content->len, content->data ? content->data : "", x->content);
    assert_int_equal(p->n_calls, x->n_calls);
    for (int i = 0; i < x->n_calls; i++) {
        assert_string_equal(p->calls[i].name, x->names[i]);
        json_t *got = json_loads(p->calls[i].arguments, 0, NULL);
        json_t *want = json_loads(x->args[i], 0, NULL);
        assert_non_null(got);
        if (!json_equal(got, want))
            fail_msg("'%s': arguments %s, expected %s", x->text, p->calls[i].arguments, x->args[i]);
        json_decref(got);
        json_decref(want);
        assert_int_equal(strncmp(p->calls[i].id, "call_", 5), 0);
        assert_int_equal(strlen(p->calls[i].id), 5 + 24);
    }
}

static void test_families(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        srv_tool_parser p;
        core_buf content;
        parse(&cases[k], 0, true, &p, &content);
        check(&cases[k], &p, &content, 0);
        srv_tools_free(&p);
        core_buf_free(&content);
    }
}

static void test_streaming_equals_whole(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (size_t chunk = 1; chunk <= 13; chunk++) {
            srv_tool_parser p;
            core_buf content;
            parse(&cases[k], chunk, true, &p, &content);
            check(&cases[k], &p, &content, chunk);
            srv_tools_free(&p);
            core_buf_free(&content);
        }
}

static void test_text_before_a_call_streams_at_once(void **state)
{
    (void)state;
    srv_tool_parser p;
    core_buf content;
    srv_tools_init(&p, SRV_TOOLS_HERMES, true);
    core_buf_init(&content, 1 << 20);
    const char *part = "Let me check the weather.<tool_c";
    assert_true(srv_tools_feed(&p, part, strlen(part), &content));
    assert_int_equal(content.len, strlen("Let me check the weather."));
    const char *rest = "all>{\"name\": \"w\", \"arguments\": {}}</tool_call>";
    assert_true(srv_tools_feed(&p, rest, strlen(rest), &content));
    assert_int_equal(p.n_calls, 1); /* complete before the answer ends */
    srv_tools_free(&p);
    core_buf_free(&content);
}

static void test_parallel_off_keeps_first_call(void **state)
{
    (void)state;
    srv_tool_parser p;
    core_buf content;
    parse(&cases[1], 0, false, &p, &content);
    assert_int_equal(p.n_calls, 1);
    assert_string_equal(p.calls[0].name, "a");
    srv_tools_free(&p);
    core_buf_free(&content);
}

static void test_family_from_template(void **state)
{
    (void)state;
    assert_int_equal(srv_tools_family("{{ '<tool_call>' }}"), SRV_TOOLS_HERMES);
    assert_int_equal(srv_tools_family("{{ '[TOOL_CALLS]' }}"), SRV_TOOLS_MISTRAL);
    assert_int_equal(srv_tools_family("<|start_header_id|>ipython"), SRV_TOOLS_LLAMA3);
    assert_int_equal(srv_tools_family(NULL), SRV_TOOLS_HERMES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families),
        cmocka_unit_test(test_streaming_equals_whole),
        cmocka_unit_test(test_text_before_a_call_streams_at_once),
        cmocka_unit_test(test_parallel_off_keeps_first_call),
        cmocka_unit_test(test_family_from_template),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
