/*
 * chat.c - turns the "messages" (and "tools") of a chat request into prompt text with the
 * model's chat format (src/template's tmpl_chat: its own Jinja template rendered as
 * transformers would, or a built-in ChatML / Llama-3 / Llama-2 format). Checks roles and
 * content here, so that every format gets messages of the same shape. Called by openai.c;
 * srv_chat_init / srv_chat_free by http.c.
 */
#include "srv_int.h"
#include "template/tmpl_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mica_status srv_chat_init(srv_model *m, mica_err *err)
{
    const mica_status st = tmpl_chat_new(&m->chat, m->m, m->name, err);
    if (st) return st;
    /* The server still serves the model; say once why its prompts look different. */
    if (tmpl_chat_warning(m->chat))
        fprintf(stderr, "mica: %s; using the built-in %s format\n", tmpl_chat_warning(m->chat),
                tmpl_chat_format(m->chat));
    /* Built-in formats ask for Hermes-style calls. */
    m->tool_family = strcmp(tmpl_chat_format(m->chat), "model")
                         ? SRV_TOOLS_HERMES
                         : srv_tools_family(tmpl_chat_source(m->chat));
    return MICA_OK;
}

void srv_chat_free(srv_model *m)
{
    tmpl_chat_free(m->chat);
    m->chat = NULL;
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
 * joined into one string (most templates expect a string) and "developer" renamed "system",
 * which templates know. */
static bool template_messages(json_t *messages, tmpl_value **out, core_buf *scratch, srv_error *e)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return srv_fail(e, 400, "messages", "'messages' must be a non-empty array");
    json_t *copy = json_deep_copy(messages);
    if (!copy) return srv_fail(e, 500, "messages", "out of memory");
    bool ok = true;
    size_t i;
    json_t *msg;
    json_array_foreach(copy, i, msg)
    {
        char param[64];
        snprintf(param, sizeof param, "messages[%zu].role", i);
        const char *role = json_is_object(msg) ? role_name(json_object_get(msg, "role")) : NULL;
        if (!json_is_object(msg)) {
            ok = srv_fail(e, 400, param, "messages[%zu] must be an object", i);
        } else if (!role) {
            ok = srv_fail(e, 400, param,
                          "%s must be one of system, developer, user, assistant, tool", param);
        } else {
            json_object_set_new(msg, "role", json_string(role));
            scratch->len = 0;
            json_t *content = json_object_get(msg, "content");
            ok = content_text(content, (int)i, scratch, e);
            if (ok && json_is_array(content))
                json_object_set_new(msg, "content",
                                    json_stringn(scratch->data ? scratch->data : "", scratch->len));
        }
        if (!ok) break;
    }
    mica_err err;
    if (ok && tmpl_from_json(copy, out, "messages", &err))
        ok = srv_fail(e, 400, "messages", "%s", err.msg);
    json_decref(copy);
    return ok;
}

bool srv_chat_render(const srv_model *m, json_t *messages, json_t *tools, core_buf *out,
                     bool *has_bos, srv_error *e)
{
    tmpl_value *msgs = NULL, *tl = NULL;
    core_buf scratch;
    core_buf_init(&scratch, out->max);
    bool ok = template_messages(messages, &msgs, &scratch, e);
    core_buf_free(&scratch);
    mica_err err;
    if (ok && tools && tmpl_from_json(tools, &tl, "tools", &err))
        ok = srv_fail(e, 400, "tools", "%s", err.msg);
    char *text = NULL;
    size_t len = 0;
    if (ok && tmpl_chat_render(m->chat, msgs, tl, true, &text, &len, &err))
        ok = srv_fail(e, 500, "messages", "the chat template failed: %s", err.msg);
    if (ok && !core_buf_append(out, text, len))
        ok = srv_fail(e, 400, "messages", "the conversation is too long");
    *has_bos = ok && tmpl_chat_has_bos(m->chat, text, len);
    free(text);
    tmpl_value_free(msgs);
    tmpl_value_free(tl);
    return ok;
}
