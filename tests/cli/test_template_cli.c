/*
 * test_template_cli.c - `mica template` as a user runs it (build/mica in a child process):
 * real templates over the reference conversations print transformers' bytes exactly (a
 * conversation file with "messages" and "tools", --add-generation-prompt, --bos / --eos,
 * --var, --now), a plain messages array works, -m takes the template and BOS / EOS texts from
 * a GGUF's metadata, and every failure - a template that raises, a syntax error, missing or
 * invalid files, bad options - is one line `mica: FILE: ...` (with the template line where
 * there is one), exit 1, nothing on stdout.
 */
#define _GNU_SOURCE
#include "cli_run.h"

#include "gguf/gguf.h"

#include <unistd.h>

static void tmp_path(char *buf, size_t cap, const char *name)
{
    run_tmp_path(buf, cap, "tcli", name);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

static void expect_error(const char *const *args, const char *prefix, const char *needle)
{
    run_expect_error(run_mica(args), prefix, needle);
}

static void test_help(void **state)
{
    run_result r = run_mica((const char *[]){"template", "--help", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: mica template"));
    assert_non_null(strstr(r.out, "--var NAME=JSON"));
    run_free(&r);
    r = run_mica((const char *[]){"--help", NULL});
    assert_non_null(strstr(r.out, "template"));
    run_free(&r);
}

/* ---- reference pairs ------------------------------------------------------------------- */

typedef struct ref_pair {
    const char *tmpl, *conv, *bos, *eos, *var; /* from templates.json and the conversation */
    bool gen;
} ref_pair;

static void run_ref(const char *root, const ref_pair *p)
{
    char tpath[1200], cpath[1200], want_path[1400];
    snprintf(tpath, sizeof tpath, "%s/templates/%s.jinja", root, p->tmpl);
    snprintf(cpath, sizeof cpath, "%s/conversations/%s.json", root, p->conv);
    snprintf(want_path, sizeof want_path, "%s/renders/%s__%s.txt", root, p->tmpl, p->conv);
    const char *args[20] = {"template", "--template",         tpath, "--messages", cpath,
                            "--now",    "2025-01-15 10:30:00"};
    int n = 7;
    if (p->gen) args[n++] = "--add-generation-prompt";
    if (p->bos) args[n++] = "--bos", args[n++] = p->bos;
    if (p->eos) args[n++] = "--eos", args[n++] = p->eos;
    if (p->var) args[n++] = "--var", args[n++] = p->var;
    args[n] = NULL;
    run_result r = run_mica(args);
    size_t want_len;
    char *want = tu_read_file(want_path, &want_len);
    if (r.status != 0 || r.out_len != want_len || memcmp(r.out, want, want_len))
        fail_msg("%s x %s: exit %d, stderr '%s', %zu bytes (want %zu)", p->tmpl, p->conv, r.status,
                 r.err, r.out_len, want_len);
    free(want);
    run_free(&r);
}

static void test_reference_pairs(void **state)
{
    char root[1024];
    char rel[] = "testdata/templates";
    TU_SHARED_PATH(root, rel);
    static const ref_pair pairs[] = {
        {"Qwen-Qwen2.5-7B-Instruct", "tool_call_roundtrip", NULL, "<|im_end|>", NULL, true},
        {"meta-llama-Llama-3.2-3B-Instruct", "tools_user", "<|begin_of_text|>", "<|eot_id|>", NULL,
         true},
        {"Qwen-Qwen3-0.6B", "user_simple_nothink", NULL, "<|im_end|>", "enable_thinking=false",
         true},
        {"mistralai-Mistral-7B-Instruct-v0.2", "multi_turn_assistant_last_nogen", "<s>", "</s>",
         NULL, false},
        {"google-gemma-4-31B-it-interleaved", "chinese", "<bos>", "<eos>", NULL, true},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (!strcmp(pairs[i].conv, "multi_turn_assistant_last_nogen")) continue; /* raises */
        run_ref(root, &pairs[i]);
    }
    /* where transformers raised, mica fails with the same message and the template line */
    char tpath[1200], cpath[1200], prefix[1300];
    snprintf(tpath, sizeof tpath, "%s/templates/%s.jinja", root, pairs[3].tmpl);
    snprintf(cpath, sizeof cpath, "%s/conversations/%s.json", root, pairs[3].conv);
    snprintf(prefix, sizeof prefix, "%s:1: ", tpath);
    expect_error((const char *[]){"template", "--template", tpath, "--messages", cpath, "--bos",
                                  "<s>", "--eos", "</s>", NULL},
                 prefix, "Conversation roles must alternate user/assistant/user/assistant/...");
}

/* ---- a messages array, and -m MODEL ------------------------------------------------------ */

static const char chatml[] =
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    "{% if tools %}{{ tools | length }} tools{% endif %}{{ extra | default('') }}";

static const char msgs[] = "[{\"role\": \"user\", \"content\": \"h\\u00e9\"}]";

static void test_messages_array(void **state)
{
    char tpath[512], mpath[512], tools[512];
    tmp_path(tpath, sizeof tpath, "chatml.jinja");
    tmp_path(mpath, sizeof mpath, "msgs.json");
    tmp_path(tools, sizeof tools, "tools.json");
    write_file(tpath, chatml);
    write_file(mpath, msgs);
    write_file(tools, "[{\"type\": \"function\"}, {\"type\": \"function\"}]");
    run_result r = run_mica((const char *[]){"template", "--template", tpath, "--messages", mpath,
                                             "--tools", tools, "--bos", "<B>", "--var",
                                             "extra=[1, \"x\"]", "--add-generation-prompt", NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "<B><|im_start|>user\nh\303\251<|im_end|>\n<|im_start|>assistant\n"
                               "2 tools[1, 'x']");
    run_free(&r);
    unlink(tools);
    unlink(tpath);
    unlink(mpath);
}

static void write_model(const char *path, const char *tmpl)
{
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    static const char *const tokens[] = {"<unk>", "<|bos|>", "<|eos|>", "a"};
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), MICA_OK);
    assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 4), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1), MICA_OK);
    assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2), MICA_OK);
    if (tmpl) assert_int_equal(gguf_writer_set_str(w, "tokenizer.chat_template", tmpl), MICA_OK);
    mica_err err;
    if (gguf_writer_write(w, path, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
}

static void test_model_template(void **state)
{
    char model[512], bare[512], mpath[512];
    tmp_path(model, sizeof model, "chat.gguf");
    tmp_path(bare, sizeof bare, "bare.gguf");
    tmp_path(mpath, sizeof mpath, "msgs.json");
    write_model(model, "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}\n{{ boom() }}");
    write_model(bare, NULL);
    write_file(mpath, msgs);
    /* the model's BOS / EOS texts; the template fails on its line 2 */
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s:tokenizer.chat_template:2: ", model);
    expect_error((const char *[]){"template", "-m", model, "--messages", mpath, NULL}, prefix,
                 "'boom' is undefined");
    write_model(model, "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}");
    run_result r = run_mica((const char *[]){"template", "-m", model, "--messages", mpath, NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "<|bos|>h\303\251<|eos|>");
    run_free(&r);
    r = run_mica(
        (const char *[]){"template", "-m", model, "--messages", mpath, "--eos", "E", NULL});
    assert_string_equal(r.out, "<|bos|>h\303\251E");
    run_free(&r);
    snprintf(prefix, sizeof prefix, "%s: ", bare);
    expect_error((const char *[]){"template", "-m", bare, "--messages", mpath, NULL}, prefix,
                 "the model has no tokenizer.chat_template");
    unlink(model);
    unlink(bare);
    unlink(mpath);
}

/* ---- bad input ------------------------------------------------------------------------- */

static void test_errors(void **state)
{
    char tpath[512], bad[512], mpath[512], junk[512], prefix[600];
    tmp_path(tpath, sizeof tpath, "ok.jinja");
    tmp_path(bad, sizeof bad, "bad.jinja");
    tmp_path(mpath, sizeof mpath, "msgs.json");
    tmp_path(junk, sizeof junk, "junk.json");
    write_file(tpath, chatml);
    write_file(bad, "hello\n{% foo %}\n");
    write_file(mpath, msgs);
    write_file(junk, "[{\"role\": ");
    snprintf(prefix, sizeof prefix, "%s:2: ", bad);
    expect_error((const char *[]){"template", "--template", bad, "--messages", mpath, NULL}, prefix,
                 "unknown tag 'foo'");
    snprintf(prefix, sizeof prefix, "%s: ", junk);
    expect_error((const char *[]){"template", "--template", tpath, "--messages", junk, NULL},
                 prefix, "invalid JSON at line 1");
    expect_error((const char *[]){"template", "--template", "/nonexistent/t.jinja", "--messages",
                                  mpath, NULL},
                 "/nonexistent/t.jinja: ", "No such file");
    expect_error((const char *[]){"template", "--template", tpath, "--messages",
                                  "/nonexistent/m.json", NULL},
                 "/nonexistent/m.json: ", "No such file");
    snprintf(prefix, sizeof prefix, "%s: ", tpath);
    expect_error((const char *[]){"template", "--template", tpath, "--messages", tpath, NULL},
                 prefix, "invalid JSON");
    snprintf(prefix, sizeof prefix, "%s: ", mpath);
    expect_error((const char *[]){"template", "--template", tpath, "--messages", mpath, "--tools",
                                  mpath, "--var", "x={", NULL},
                 "--var x: ", "invalid JSON");
    expect_error((const char *[]){"template", "--template", tpath, "--messages", mpath, "--var",
                                  "novalue", NULL},
                 "--var novalue: ", "expected NAME=JSON");
    expect_error((const char *[]){"template", "--template", tpath, "--messages", mpath, "--now",
                                  "yesterday", NULL},
                 tpath, "is not YYYY-MM-DD HH:MM:SS");
    expect_error((const char *[]){"template", "--template", tpath, NULL},
                 "template: ", "--messages FILE.json is required");
    expect_error((const char *[]){"template", "--messages", mpath, NULL},
                 "template: ", "exactly one of -m MODEL or --template FILE");
    expect_error(
        (const char *[]){"template", "--template", tpath, "--messages", mpath, "--frob", NULL},
        "template: ", "unknown option '--frob'");
    expect_error((const char *[]){"template", "--template", NULL},
                 "template --template: ", "missing value");
    unlink(tpath);
    unlink(bad);
    unlink(mpath);
    unlink(junk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),           cmocka_unit_test(test_reference_pairs),
        cmocka_unit_test(test_messages_array), cmocka_unit_test(test_model_template),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
