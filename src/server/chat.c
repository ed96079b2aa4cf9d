/*
 * chat.c - turns the "messages" of a chat request into prompt text: with the model's own
 * Jinja chat template (tokenizer.chat_template, rendered by src/template as transformers
 * would, with add_generation_prompt and the model's BOS/EOS texts), or, for a model without
 * one (or with one the renderer cannot parse), with one of three built-in formats (ChatML,
 * Llama-3, Llama-2) guessed from the template's text. The text is tokenized with special
 * tokens parsed. Called by openai.c; srv_chat_init / srv_chat_free by http.c.
 */
#include "srv_int.h"
#include "template/tmpl_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void pick_builtin_format(srv_model *m)
{
    char tmpl[8192];
    const int64_t n = mica_model_meta_str(m->m, "tokenizer.chat_template", tmpl, sizeof tmpl);
    const char *f = "chatml";
    if (n > 0 && strstr(tmpl, "<|start_header_id|>"))
        f = "llama3";
    else if (n > 0 && strstr(tmpl, "[INST]") && !strstr(tmpl, "<|im_start|>"))
        f = "llama2";
    snprintf(m->chat_format, sizeof m->chat_format, "%s", f);
}

/* The text of a special token (BOS/EOS) into buf; "" when the model has none. */
static void special_text(const srv_model *m, mica_token t, char *buf, size_t cap)
{
    size_t n = t >= 0 ? mica_token_to_piece(m->m, t, true, buf, cap - 1) : 0;
    buf[n < cap ? n : cap - 1] = '\0';
}

void srv_chat_init(srv_model *m)
{
    pick_builtin_format(m);
    m->tool_family = SRV_TOOLS_HERMES; /* what the built-in tools prompt asks for */
    special_text(m, mica_model_bos(m->m), m->bos_text, sizeof m->bos_text);
    special_text(m, mica_model_eos(m->m), m->eos_text, sizeof m->eos_text);
    const int64_t n = mica_model_meta_str(m->m, "tokenizer.chat_template", NULL, 0);
    if (n <= 0) return;
    char *src = malloc((size_t)n + 1);
    if (!src) return;
    mica_model_meta_str(m->m, "tokenizer.chat_template", src, (size_t)n + 1);
    char name[SRV_NAME_MAX + 32];
    snprintf(name, sizeof name, "%s:chat_template", m->name);
    mica_err err;
    if (!tmpl_parse(&m->tmpl, name, src, (size_t)n, &err)) {
        m->tool_family = srv_tools_family(src);
    } else {
        /* The server still serves the model; say once why its prompts look different. */
        fprintf(stderr, "mica: %s; using the built-in %s format\n", err.msg, m->chat_format);
        m->tmpl = NULL;
    }
    free(src);
}

void srv_chat_free(srv_model *m)
{
    tmpl_free(m->tmpl);
    m->tmpl = NULL;
}

/* The text of a message's content: a string, or an array of {"type":"text","text":...} whose
 * texts are joined with newlines (as llama-server does). */
static bool content_text(json_t *content, int i, core_buf *out, srv_error *e)
{
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (json_is_string(content))
        return core_buf_append(out, json_string_value(content), json_string_length(content)) ||
               srv_fail(e, 400, param, "the conversation is too long");
    if (json_is_null(content)) return true;
    if (!json_is_array(content))
        return srv_fail(e, 400, param, "%s must be a string or an array of text parts", param);
    size_t k;
    json_t *part;
    json_array_foreach(content, k, part)
    {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") ||
            !json_is_string(text))
            return srv_fail(e, 400, param,
                            "%s[%zu]: only {\"type\": \"text\", \"text\": ...} "
                            "parts are supported",
                            param, k);
        if ((k > 0 && !core_buf_append(out, "\n", 1)) ||
            !core_buf_append(out, json_string_value(text), json_string_length(text)))
            return srv_fail(e, 400, param, "the conversation is too long");
    }
    return true;
}

typedef struct chat_msg {
    const char *role; /* "system", "user", "assistant", "tool" */
    core_buf text;
} chat_msg;

static bool put(core_buf *out, const char *s, srv_error *e)
{
    return core_buf_append(out, s, strlen(s)) ||
           srv_fail(e, 400, "messages", "the conversation is too long");
}

static bool put_msg(core_buf *out, const chat_msg *m, srv_error *e)
{
    return core_buf_append(out, m->text.data ? m->text.data : "", m->text.len) ||
           srv_fail(e, 400, "messages", "the conversation is too long");
}

static bool render_chatml(const chat_msg *msgs, size_t n, core_buf *out, srv_error *e)
{
    for (size_t i = 0; i < n; i++)
        if (!put(out, "<|im_start|>", e) || !put(out, msgs[i].role, e) || !put(out, "\n", e) ||
            !put_msg(out, &msgs[i], e) || !put(out, "<|im_end|>\n", e))
            return false;
    return put(out, "<|im_start|>assistant\n", e);
}

static bool render_llama3(const chat_msg *msgs, size_t n, core_buf *out, srv_error *e)
{
    for (size_t i = 0; i < n; i++)
        if (!put(out, "<|start_header_id|>", e) || !put(out, msgs[i].role, e) ||
            !put(out, "<|end_header_id|>\n\n", e) || !put_msg(out, &msgs[i], e) ||
            !put(out, "<|eot_id|>", e))
            return false;
    return put(out, "<|start_header_id|>assistant<|end_header_id|>\n\n", e);
}

/* [INST] user [/INST] answer</s><s>[INST] ...; a system message goes into the first turn. */
static bool render_llama2(const chat_msg *msgs, size_t n, core_buf *out, srv_error *e)
{
    const chat_msg *sys = NULL;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        const chat_msg *m = &msgs[i];
        if (!strcmp(m->role, "system")) {
            sys = m;
            continue;
        }
        if (!strcmp(m->role, "assistant")) {
            if (!put(out, " ", e) || !put_msg(out, m, e) || !put(out, "</s><s>", e)) return false;
            continue;
        }
        if (!put(out, "[INST] ", e)) return false;
        if (sys && first &&
            (!put(out, "<<SYS>>\n", e) || !put_msg(out, sys, e) || !put(out, "\n<</SYS>>\n\n", e)))
            return false;
        first = false;
        if (!put_msg(out, m, e) || !put(out, " [/INST]", e)) return false;
    }
    return true;
}

static const char *role_name(json_t *role)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    if (!json_is_string(role)) return NULL;
    const char *r = json_string_value(role);
    if (!strcmp(r, "developer")) return "system"; /* OpenAI's newer name for it */
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (!strcmp(r, roles[i])) return roles[i];
    return NULL;
}

/* The messages as the template sees them: as sent (tool calls, names, ...), with text parts
 * joined into one string (most templates expect a string: srv_chat_render's text of it) and
 * "developer" renamed "system", which templates know. */
static bool template_messages(json_t *messages, const chat_msg *msgs, tmpl_value **out,
                              srv_error *e)
{
    json_t *copy = json_deep_copy(messages);
    if (!copy) return srv_fail(e, 500, "messages", "out of memory");
    size_t i;
    json_t *msg;
    json_array_foreach(copy, i, msg)
    {
        json_object_set_new(msg, "role", json_string(msgs[i].role));
        if (json_is_array(json_object_get(msg, "content")))
            json_object_set_new(
                msg, "content",
                json_stringn(msgs[i].text.data ? msgs[i].text.data : "", msgs[i].text.len));
    }
    mica_err err;
    const mica_status st = tmpl_from_json(copy, out, "messages", &err);
    json_decref(copy);
    return !st || srv_fail(e, 400, "messages", "%s", err.msg);
}

static bool render_template(const srv_model *m, json_t *messages, const chat_msg *parsed,
                            json_t *tools, core_buf *out, srv_error *e)
{
    tmpl_value *msgs, *tl = NULL;
    if (!template_messages(messages, parsed, &msgs, e)) return false;
    mica_err err;
    if (tools && tmpl_from_json(tools, &tl, "tools", &err)) {
        tmpl_value_free(msgs);
        return srv_fail(e, 400, "tools", "%s", err.msg);
    }
    const tmpl_render_params p = {
        .messages = msgs,
        .tools = tl,
        .add_generation_prompt = true,
        .bos_token = m->bos_text[0] ? m->bos_text : NULL,
        .eos_token = m->eos_text[0] ? m->eos_text : NULL,
    };
    char *text = NULL;
    size_t len = 0;
    const mica_status st = tmpl_render(m->tmpl, &p, &text, &len, &err);
    tmpl_value_free(msgs);
    tmpl_value_free(tl);
    bool ok = !st || srv_fail(e, 500, "messages", "the chat template failed: %s", err.msg);
    if (ok && !core_buf_append(out, text, len))
        ok = srv_fail(e, 400, "messages", "the conversation is too long");
    free(text);
    return ok;
}

/* Built-in formats with tools: their description goes into the system message (a new one
 * first when the conversation has none). Returns the messages to render: msgs or msgs - 1. */
static chat_msg *add_tools_system(chat_msg *msgs, json_t *tools, srv_error *e, bool *ok)
{
    chat_msg *sys = !strcmp(msgs[0].role, "system") ? &msgs[0] : &msgs[-1];
    if (sys != &msgs[0]) sys->role = "system";
    if ((sys->text.len && !core_buf_append(&sys->text, "\n\n", 2)) ||
        !srv_tools_system_text(tools, &sys->text))
        *ok = srv_fail(e, 400, "tools", "the conversation is too long");
    return sys;
}

static bool render_builtin(const srv_model *m, chat_msg *msgs, size_t n, json_t *tools,
                           core_buf *out, srv_error *e)
{
    bool ok = true;
    if (tools) {
        chat_msg *first = add_tools_system(msgs, tools, e, &ok);
        n += (size_t)(msgs - first);
        msgs = first;
    }
    if (!ok) return false;
    if (!strcmp(m->chat_format, "llama3")) return render_llama3(msgs, n, out, e);
    if (!strcmp(m->chat_format, "llama2")) return render_llama2(msgs, n, out, e);
    return render_chatml(msgs, n, out, e);
}

bool srv_chat_render(const srv_model *m, json_t *messages, json_t *tools, core_buf *out,
                     srv_error *e)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return srv_fail(e, 400, "messages", "'messages' must be a non-empty array");
    const size_t n = json_array_size(messages);
    /* One spare message in front: the system message that describes tools when none is. */
    chat_msg *all = core_calloc(n + 1, sizeof *all), *msgs = all + 1;
    if (!all) return srv_fail(e, 500, "messages", "out of memory");
    core_buf_init(&all[0].text, out->max);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        json_t *msg = json_array_get(messages, i);
        char param[64];
        snprintf(param, sizeof param, "messages[%zu].role", i);
        core_buf_init(&msgs[i].text, out->max);
        if (!json_is_object(msg)) {
            ok = srv_fail(e, 400, param, "messages[%zu] must be an object", i);
        } else if (!(msgs[i].role = role_name(json_object_get(msg, "role")))) {
            ok = srv_fail(e, 400, param,
                          "%s must be one of system, developer, user, assistant, tool", param);
        } else {
            ok = content_text(json_object_get(msg, "content"), (int)i, &msgs[i].text, e);
        }
    }
    if (ok)
        ok = m->tmpl ? render_template(m, messages, msgs, tools, out, e)
                     : render_builtin(m, msgs, n, tools, out, e);
    for (size_t i = 0; i <= n; i++) core_buf_free(&all[i].text);
    free(all);
    return ok;
}
