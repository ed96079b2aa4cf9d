/*
 * test_chat.c - a model's chat format (tmpl_chat): a model without a template gets ChatML,
 * whose tools prompt is byte-for-byte Qwen2.5's (checked against transformers' rendering of
 * Qwen2.5's real template in ../shared/testdata/templates); a template that does not parse
 * falls back, with a warning, to the built-in format its text hints at (Llama-3, Llama-2),
 * whose renderings are those formats' published layouts; BOS detection.
 */
#include "gguf_copy.h"

#include "template/template.h"
#include "template/tmpl_json.h"

#include <unistd.h>

static char stories[1024];

#define NEED_STORIES() TU_SHARED_PATH(stories, "testdata/stories260K/models/stories260K.F32.gguf")

static mica_model *load(const char *path)
{
    mica_model *m;
    mica_err err;
    if (mica_model_load(&m, path, &err)) fail_msg("%s", err.msg);
    return m;
}

/* Renders messages (JSON) with add_generation_prompt and compares with want. */
static void expect_render(const tmpl_chat *c, const char *messages, const char *tools,
                          const char *want, size_t want_len)
{
    tmpl_value *msgs, *tl = NULL;
    mica_err err;
    if (tmpl_from_json_text(messages, strlen(messages), &msgs, "messages", &err) ||
        (tools && tmpl_from_json_text(tools, strlen(tools), &tl, "tools", &err)))
        fail_msg("%s", err.msg);
    char *out;
    size_t len;
    if (tmpl_chat_render(c, msgs, tl, true, &out, &len, &err)) fail_msg("%s", err.msg);
    if (len != want_len || memcmp(out, want, len))
        fail_msg("%s rendered:\n%s\n--- expected:\n%.*s", tmpl_chat_format(c), out, (int)want_len,
                 want);
    free(out);
    tmpl_value_free(msgs);
    tmpl_value_free(tl);
}

static void test_chatml_matches_qwen(void **state)
{
    (void)state;
    char conv_path[1024], want_path[1024];
    NEED_STORIES();
    TU_SHARED_PATH(conv_path, "testdata/templates/conversations/tools_user.json");
    TU_SHARED_PATH(want_path,
                   "testdata/templates/renders/Qwen-Qwen2.5-7B-Instruct__tools_user.txt");
    mica_model *m = load(stories);
    tmpl_chat *c;
    mica_err err;
    if (tmpl_chat_new(&c, m, "stories", &err)) fail_msg("%s", err.msg);
    assert_string_equal(tmpl_chat_format(c), "chatml");
    assert_null(tmpl_chat_warning(c));
    char *conv = tu_read_file(conv_path, NULL);
    json_t *j = json_loads(conv, 0, NULL);
    char *msgs = json_dumps(json_object_get(j, "messages"), 0);
    char *tools = json_dumps(json_object_get(j, "tools"), 0);
    size_t want_len;
    char *want = tu_read_file(want_path, &want_len);
    expect_render(c, msgs, tools, want, want_len);
    const char *plain = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                        "<|im_start|>assistant\n";
    expect_render(c,
                  "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                  "{\"role\":\"user\",\"content\":\"Hi\"}]",
                  NULL, plain, strlen(plain));
    assert_false(tmpl_chat_has_bos(c, plain, strlen(plain)));
    free(want);
    free(msgs);
    free(tools);
    free(conv);
    json_decref(j);
    tmpl_chat_free(c);
    mica_model_free(m);
}

/* A model whose template does not parse but names its format's markers. */
static tmpl_chat *fallback(const char *hint, const char *format)
{
    char path[600];
    snprintf(path, sizeof path, "%s/chat_%s_%d.gguf", tu_tmpdir(), format, (int)getpid());
    char tmpl[256];
    snprintf(tmpl, sizeof tmpl, "{%% if %s", hint);
    tu_gguf_copy_with_str(stories, path, "tokenizer.chat_template", tmpl);
    mica_model *m = load(path);
    tmpl_chat *c;
    mica_err err;
    if (tmpl_chat_new(&c, m, "fallback", &err)) fail_msg("%s", err.msg);
    mica_model_free(m);
    assert_string_equal(tmpl_chat_format(c), format);
    assert_non_null(tmpl_chat_warning(c));
    assert_non_null(strstr(tmpl_chat_warning(c), "fallback:chat_template:1:"));
    return c;
}

static const char *const conversation = "[{\"role\":\"system\",\"content\":\"S\"},"
                                        "{\"role\":\"user\",\"content\":\"U1\"},"
                                        "{\"role\":\"assistant\",\"content\":\"A1\"},"
                                        "{\"role\":\"user\",\"content\":\"U2\"}]";

static void test_llama3_fallback(void **state)
{
    (void)state;
    NEED_STORIES();
    tmpl_chat *c = fallback("'<|start_header_id|>'", "llama3");
    const char *want = "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                       "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
                       "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\n";
    expect_render(c, conversation, NULL, want, strlen(want));
    tmpl_chat_free(c);
}

static void test_llama2_fallback(void **state)
{
    (void)state;
    NEED_STORIES();
    tmpl_chat *c = fallback("'[INST]'", "llama2");
    const char *want = "[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1</s><s>[INST] U2 [/INST]";
    expect_render(c, conversation, NULL, want, strlen(want));
    assert_true(tmpl_chat_has_bos(c, "<s>[INST]", 9));
    tmpl_chat_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml_matches_qwen),
        cmocka_unit_test(test_llama3_fallback),
        cmocka_unit_test(test_llama2_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
