/*
 * cli_record.c - one labelled example of a JSON-lines file as the model sees it: a record
 * {"prompt", "completion"} or {"messages": [..., {"role": "assistant", ...}]} becomes the
 * prompt text (raw, or rendered in the model's chat format with the generation prompt) and
 * the answer. `mica eval` compares answers with the reference; `mica train` / `mica finetune`
 * learn the target: in the chat format, what the full conversation adds after the prompt
 * (the answer and the end of the turn), so training and generation see the same tokens.
 */
#define _GNU_SOURCE /* strndup */
#include "cli_record.h"

#include "template/tmpl_json.h"

#include <stdlib.h>
#include <string.h>

static char *dup_str(json_t *v)
{
    return json_is_string(v) ? strndup(json_string_value(v), json_string_length(v)) : NULL;
}

void cli_record_free(cli_record *r)
{
    free(r->prompt);
    free(r->reference);
    free(r->target);
    memset(r, 0, sizeof *r);
}

static mica_status render(const tmpl_chat *fmt, json_t *conv, bool gen_prompt, char **out,
                          mica_err *err)
{
    tmpl_value *v = NULL;
    mica_status st = tmpl_from_json(conv, &v, "messages", err);
    size_t len;
    if (!st) st = tmpl_chat_render(fmt, v, NULL, gen_prompt, out, &len, err);
    tmpl_value_free(v);
    return st;
}

/* The chat format's text after the prompt: the answer and the end of the turn; when the
 * template does not render the answer after the prompt text, the answer alone. */
static mica_status render_target(const tmpl_chat *fmt, json_t *conv, cli_record *r, mica_err *err)
{
    json_array_append_new(conv,
                          json_pack("{s:s,s:s}", "role", "assistant", "content", r->reference));
    char *full = NULL;
    const mica_status st = render(fmt, conv, false, &full, err);
    if (st) return st;
    const size_t np = strlen(r->prompt);
    if (!strncmp(full, r->prompt, np) && strstr(full + np, r->reference))
        r->target = strdup(full + np);
    else
        r->target = strdup(r->reference);
    free(full);
    return r->target ? MICA_OK : core_fail(err, MICA_ENOMEM, "out of memory");
}

/* The conversation before the answer, and the answer itself into r->reference. */
static json_t *split_record(json_t *rec, bool chat, cli_record *r, mica_err *err)
{
    json_t *msgs = json_object_get(rec, "messages");
    if (json_is_array(msgs)) {
        const size_t n = json_array_size(msgs);
        json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
        const char *role = last ? json_string_value(json_object_get(last, "role")) : NULL;
        if (!role || strcmp(role, "assistant")) {
            core_fail(err, MICA_EFORMAT, "the last message must be the assistant's answer");
            return NULL;
        }
        if (!(r->reference = dup_str(json_object_get(last, "content")))) {
            core_fail(err, MICA_EFORMAT, "the reference answer is not a string");
            return NULL;
        }
        json_t *conv = json_array();
        for (size_t i = 0; i + 1 < n; i++) json_array_append(conv, json_array_get(msgs, i));
        return conv;
    }
    json_t *p = json_object_get(rec, "prompt");
    r->reference = dup_str(json_object_get(rec, "completion"));
    if (!json_is_string(p) || !r->reference) {
        core_fail(err, MICA_EFORMAT,
                  "expected \"prompt\" and \"completion\" strings, or \"messages\"");
        return NULL;
    }
    if (!chat) {
        r->prompt = dup_str(p);
        if (!r->prompt) core_fail(err, MICA_ENOMEM, "out of memory");
        return NULL;
    }
    return json_pack("[{s:s,s:O}]", "role", "user", "content", p);
}

mica_status cli_record_render(json_t *rec, bool chat, const tmpl_chat *fmt, bool want_target,
                              cli_record *r, mica_err *err)
{
    memset(r, 0, sizeof *r);
    json_t *conv = split_record(rec, chat, r, err);
    mica_status st = MICA_OK;
    if (!conv) {
        st = r->prompt ? MICA_OK : err->status;
    } else {
        st = render(fmt, conv, true, &r->prompt, err);
        if (!st && want_target) st = render_target(fmt, conv, r, err);
        json_decref(conv);
    }
    if (st) cli_record_free(r);
    return st;
}
