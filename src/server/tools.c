/*
 * tools.c - OpenAI tool calling: the request's `tools`, `tool_choice` and
 * `parallel_tool_calls`, and the parser that finds tool calls in what the model generates,
 * per template family:
 *   Hermes / Qwen   <tool_call>{"name": ..., "arguments": {...}}</tool_call> (any number)
 *   Llama 3         [<|python_tag|>]{"name": ..., "parameters": {...}} at the start of the answer
 *                   (several separated by ';' or whitespace)
 *   Mistral         [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]  or, in newer
 *                   templates, [TOOL_CALLS]name[ARGS]{...} repeated
 * The parser is incremental so that streams can send `delta.tool_calls` as soon as a call is
 * complete: text that cannot belong to a call is released as content at once, text that might
 * (a marker's prefix, an unfinished call) is held back. At the end, anything held back that
 * did not turn into a call is released as content, so no generated text is ever lost.
 * Called by openai.c (parsing the request), chat.c (family, fallback prompt) and job.c.
 */
#define _GNU_SOURCE /* memmem */
#include "srv_int.h"
#include "grammar/schema_json.h"

#include <gnutls/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HERMES_OPEN   "<tool_call>"
#define HERMES_CLOSE  "</tool_call>"
#define LLAMA3_TAG    "<|python_tag|>"
#define MISTRAL_TAG   "[TOOL_CALLS]"
#define MISTRAL_ARGS  "[ARGS]"
#define MAX_CALL_TEXT (1u << 20)

srv_tool_family srv_tools_family(const char *template_text)
{
    if (!template_text) return SRV_TOOLS_HERMES;
    if (strstr(template_text, MISTRAL_TAG)) return SRV_TOOLS_MISTRAL;
    if (strstr(template_text, HERMES_OPEN)) return SRV_TOOLS_HERMES;
    if (strstr(template_text, LLAMA3_TAG) || strstr(template_text, "<|start_header_id|>"))
        return SRV_TOOLS_LLAMA3;
    return SRV_TOOLS_HERMES;
}

/* ---- the request ----------------------------------------------------------------------- */

static bool check_tool(json_t *t, size_t i, srv_error *e)
{
    char param[32];
    snprintf(param, sizeof param, "tools[%zu]", i);
    json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
    if (!json_is_object(t) || !json_is_string(type) ||
        strcmp(json_string_value(type), "function") || !json_is_object(fn))
        return srv_fail(e, 400, param, "%s must be {\"type\": \"function\", \"function\": {...}}",
                        param);
    json_t *name = json_object_get(fn, "name"), *params = json_object_get(fn, "parameters");
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 64)
        return srv_fail(e, 400, param, "%s.function.name must be a string of 1 to 64 characters",
                        param);
    if (params && !json_is_object(params))
        return srv_fail(e, 400, param, "%s.function.parameters must be a JSON schema object",
                        param);
    return true;
}

static bool tool_named(json_t *tools, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        if (!strcmp(json_string_value(json_object_get(json_object_get(t, "function"), "name")),
                    name))
            return true;
    }
    return false;
}

static bool parse_tool_choice(json_t *body, srv_gen *g, srv_error *e)
{
    json_t *c = json_object_get(body, "tool_choice");
    g->tool_choice = g->tools ? SRV_TOOL_AUTO : SRV_TOOL_NONE;
    if (!c || json_is_null(c)) return true;
    if (json_is_string(c)) {
        const char *v = json_string_value(c);
        if (!strcmp(v, "none"))
            g->tool_choice = SRV_TOOL_NONE;
        else if (!strcmp(v, "auto"))
            g->tool_choice = SRV_TOOL_AUTO;
        else if (!strcmp(v, "required"))
            g->tool_choice = SRV_TOOL_REQUIRED;
        else
            return srv_fail(e, 400, "tool_choice",
                            "'tool_choice' must be none, auto, required or a named function");
    } else {
        const char *name =
            json_string_value(json_object_get(json_object_get(c, "function"), "name"));
        if (!json_is_object(c) || !name)
            return srv_fail(e, 400, "tool_choice",
                            "'tool_choice' must be none, auto, required or "
                            "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        if (!g->tools || !tool_named(g->tools, name))
            return srv_fail(e, 400, "tool_choice",
                            "tool_choice names '%s', which is not in 'tools'", name);
        g->tool_choice = SRV_TOOL_NAMED;
        snprintf(g->tool_name, sizeof g->tool_name, "%s", name);
    }
    if (g->tool_choice != SRV_TOOL_NONE && !g->tools)
        return srv_fail(e, 400, "tool_choice", "'tool_choice' needs 'tools'");
    return true;
}

bool srv_parse_tools(json_t *body, srv_gen *g, srv_error *e)
{
    json_t *tools = json_object_get(body, "tools");
    g->parallel_tool_calls = true;
    if (tools && !json_is_null(tools)) {
        if (!g->chat) return srv_fail(e, 400, "tools", "'tools' needs /v1/chat/completions");
        if (!json_is_array(tools) || json_array_size(tools) == 0 || json_array_size(tools) > 128)
            return srv_fail(e, 400, "tools", "'tools' must be a list of 1 to 128 functions");
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) if (!check_tool(t, i, e)) return false;
        g->tools = json_incref(tools);
    }
    json_t *par = json_object_get(body, "parallel_tool_calls");
    if (par && !json_is_null(par)) {
        if (!json_is_boolean(par))
            return srv_fail(e, 400, "parallel_tool_calls",
                            "'parallel_tool_calls' must be a boolean");
        g->parallel_tool_calls = json_is_true(par);
    }
    return parse_tool_choice(body, g, e);
}

/* ---- JSON spans ------------------------------------------------------------------------- */

/* Length of the JSON object or array that starts at s[0] ('{' or '['), or 0 while it is
 * not closed within n bytes. Strings and escapes are skipped; the content is validated by
 * Jansson afterwards. */
static size_t json_span(const char *s, size_t n)
{
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) return i + 1;
        }
    }
    return 0;
}

static size_t skip_space(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++;
    return i;
}

/* ---- the parser ------------------------------------------------------------------------- */

void srv_tools_init(srv_tool_parser *p, srv_tool_family family, bool parallel)
{
    memset(p, 0, sizeof *p);
    p->family = family;
    p->parallel = parallel;
    core_buf_init(&p->held, MAX_CALL_TEXT);
}

void srv_tools_free(srv_tool_parser *p)
{
    core_buf_free(&p->held);
    for (int i = 0; i < p->n_calls; i++) {
        free(p->calls[i].name);
        free(p->calls[i].arguments);
    }
    memset(p, 0, sizeof *p);
}

/* Adds a call from its name and arguments (an object, or a string holding JSON). */
static bool add_call(srv_tool_parser *p, json_t *name, json_t *args)
{
    if (!json_is_string(name)) return false;
    if (p->n_calls == SRV_MAX_TOOL_CALLS || (!p->parallel && p->n_calls == 1)) return true;
    char *a = json_is_string(args) ? strdup(json_string_value(args))
                                   : json_dumps(args ? args : json_object(), JSON_COMPACT);
    if (!a) return false;
    srv_tool_call *c = &p->calls[p->n_calls];
    c->name = strdup(json_string_value(name));
    if (!c->name) {
        free(a);
        return false;
    }
    c->arguments = a;
    uint8_t raw[12];
    gnutls_rnd(GNUTLS_RND_NONCE, raw, sizeof raw);
    int o = snprintf(c->id, sizeof c->id, "call_");
    for (size_t i = 0; i < sizeof raw; i++)
        o += snprintf(c->id + o, sizeof c->id - (size_t)o, "%02x", raw[i]);
    p->n_calls++;
    return true;
}

/* One call object: {"name", "arguments"} (Hermes, Mistral) or {"name", "parameters"}
 * (Llama 3). False when it is not one. */
static bool add_call_json(srv_tool_parser *p, const char *s, size_t n)
{
    json_t *o = json_loadb(s, n, 0, NULL);
    bool ok = json_is_object(o);
    if (ok) {
        json_t *args = json_object_get(o, "arguments");
        if (!args) args = json_object_get(o, "parameters");
        ok = (!args || json_is_object(args) || json_is_string(args)) &&
             add_call(p, json_object_get(o, "name"), args);
    }
    json_decref(o);
    return ok;
}

/* Releases held[0..n) as content and drops it from held. */
static bool release(srv_tool_parser *p, size_t n, core_buf *content)
{
    if (!core_buf_append(content, p->held.data, n)) return false;
    memmove(p->held.data, p->held.data + n, p->held.len - n);
    p->held.len -= n;
    return true;
}

static void drop(srv_tool_parser *p, size_t n)
{
    memmove(p->held.data, p->held.data + n, p->held.len - n);
    p->held.len -= n;
}

/* How many bytes at the end of s[0..n) are a proper prefix of marker. */
static size_t marker_tail(const char *s, size_t n, const char *marker)
{
    const size_t m = strlen(marker);
    for (size_t k = m - 1 < n ? m - 1 : n; k > 0; k--)
        if (!memcmp(s + n - k, marker, k)) return k;
    return 0;
}

/* Text before the marker is content; a held tail that may start the marker waits. Returns
 * the offset just past the marker, or 0 when it is not (yet) there. */
static size_t until_marker(srv_tool_parser *p, const char *marker, core_buf *content)
{
    const char *h = p->held.data ? p->held.data : "";
    const char *at = memmem(h, p->held.len, marker, strlen(marker));
    if (!at) {
        release(p, p->held.len - marker_tail(h, p->held.len, marker), content);
        return 0;
    }
    release(p, (size_t)(at - h), content);
    return strlen(marker);
}

static bool step_hermes(srv_tool_parser *p, core_buf *content)
{
    for (;;) {
        if (!p->in_call) {
            const size_t skip = until_marker(p, HERMES_OPEN, content);
            if (!skip) return true;
            drop(p, skip);
            p->in_call = true;
        }
        const char *h = p->held.data ? p->held.data : "";
        const char *end = memmem(h, p->held.len, HERMES_CLOSE, strlen(HERMES_CLOSE));
        if (!end) return true;
        const size_t body = (size_t)(end - h), total = body + strlen(HERMES_CLOSE);
        if (!add_call_json(p, h, body)) {
            /* Not a call after all: the whole block is text. */
            if (!core_buf_append(content, HERMES_OPEN, strlen(HERMES_OPEN))) return false;
            if (!release(p, total, content)) return false;
        } else {
            drop(p, total);
        }
        p->in_call = false;
    }
}

/* Llama 3: calls only when the answer starts with the tag or a JSON object. */
static bool step_llama3(srv_tool_parser *p, core_buf *content)
{
    const char *h = p->held.data ? p->held.data : "";
    size_t i = skip_space(h, p->held.len, 0);
    if (!p->decided) {
        if (i == p->held.len) return true;
        const size_t tag = strlen(LLAMA3_TAG);
        const size_t cmp = p->held.len - i < tag ? p->held.len - i : tag;
        if (!memcmp(h + i, LLAMA3_TAG, cmp)) {
            if (cmp < tag) return true; /* the tag may still be coming */
            drop(p, i + tag);
            p->in_call = true;
        } else {
            p->in_call = h[i] == '{';
        }
        p->decided = true;
        if (!p->in_call) return release(p, p->held.len, content);
    }
    if (!p->in_call) return release(p, p->held.len, content);
    /* A sequence of objects separated by ';' or whitespace, up to the end of the answer. */
    for (;;) {
        h = p->held.data ? p->held.data : "";
        i = skip_space(h, p->held.len, 0);
        if (i < p->held.len && h[i] == ';') i = skip_space(h, p->held.len, i + 1);
        if (i == p->held.len || h[i] != '{') return true;
        const size_t n = json_span(h + i, p->held.len - i);
        if (!n) return true;
        if (!add_call_json(p, h + i, n)) return true; /* finish() releases it as text */
        drop(p, i + n);
    }
}

static bool step_mistral(srv_tool_parser *p, core_buf *content)
{
    if (!p->in_call) {
        const size_t skip = until_marker(p, MISTRAL_TAG, content);
        if (!skip) return true;
        drop(p, skip);
        p->in_call = true;
    }
    for (;;) {
        const char *h = p->held.data ? p->held.data : "";
        size_t i = skip_space(h, p->held.len, 0);
        if (i < p->held.len && h[i] == ',') i = skip_space(h, p->held.len, i + 1);
        if (i == p->held.len) return true;
        if (p->held.len - i >= strlen(MISTRAL_TAG) &&
            !memcmp(h + i, MISTRAL_TAG, strlen(MISTRAL_TAG))) {
            drop(p, i + strlen(MISTRAL_TAG)); /* the next call of the newer form */
            continue;
        }
        if (h[i] == '[' || h[i] == '{') {
            const size_t n = json_span(h + i, p->held.len - i);
            if (!n) return true;
            json_t *v = json_loadb(h + i, n, 0, NULL);
            bool ok = v != NULL;
            if (json_is_array(v)) {
                size_t k;
                json_t *o;
                json_array_foreach(v, k, o)
                {
                    ok = ok && json_is_object(o) &&
                         add_call(p, json_object_get(o, "name"), json_object_get(o, "arguments"));
                }
            } else if (ok) {
                ok = add_call_json(p, h + i, n);
            }
            json_decref(v);
            if (!ok) return true;
            drop(p, i + n);
            continue;
        }
        /* name[ARGS]{...} */
        const char *args = memmem(h + i, p->held.len - i, MISTRAL_ARGS, strlen(MISTRAL_ARGS));
        if (!args) return true;
        const size_t a = (size_t)(args - h) + strlen(MISTRAL_ARGS);
        const size_t j = skip_space(h, p->held.len, a);
        if (j == p->held.len) return true;
        const size_t n = h[j] == '{' ? json_span(h + j, p->held.len - j) : 0;
        if (!n) return true;
        json_t *name = json_stringn(h + i, (size_t)(args - h) - i);
        json_t *obj = json_loadb(h + j, n, 0, NULL);
        const bool ok = name && json_is_object(obj) && add_call(p, name, obj);
        json_decref(name);
        json_decref(obj);
        if (!ok) return true;
        drop(p, j + n);
    }
}

bool srv_tools_feed(srv_tool_parser *p, const char *text, size_t len, core_buf *content)
{
    if (len && !core_buf_append(&p->held, text, len)) return false;
    switch (p->family) {
    case SRV_TOOLS_HERMES:
        return step_hermes(p, content);
    case SRV_TOOLS_LLAMA3:
        return step_llama3(p, content);
    case SRV_TOOLS_MISTRAL:
        return step_mistral(p, content);
    }
    return release(p, p->held.len, content);
}

bool srv_tools_finish(srv_tool_parser *p, core_buf *content)
{
    /* An unfinished call is text: what the model wrote is never swallowed. */
    if (p->in_call && p->family == SRV_TOOLS_HERMES &&
        !core_buf_append(content, HERMES_OPEN, strlen(HERMES_OPEN)))
        return false;
    if (p->in_call && p->family == SRV_TOOLS_MISTRAL && p->n_calls == 0 &&
        !core_buf_append(content, MISTRAL_TAG, strlen(MISTRAL_TAG)))
        return false;
    return release(p, p->held.len, content);
}

json_t *srv_tool_call_json(const srv_tool_call *c, int index, bool with_index)
{
    json_t *o = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", c->id, "type", "function", "function",
                          "name", c->name, "arguments", c->arguments);
    if (with_index) json_object_set_new(o, "index", json_integer(index));
    return o;
}

/* ---- forcing calls: tool_choice required or named --------------------------------------- */

/* The schema of one call of tool t: {"name": const, ARGS: its parameters when the function is
 * strict, else any object}; ARGS is "parameters" for Llama 3, "arguments" for the others. */
static json_t *call_schema(json_t *t, const char *args_key)
{
    json_t *fn = json_object_get(t, "function");
    json_t *params = json_object_get(fn, "parameters");
    json_t *args = json_is_true(json_object_get(fn, "strict")) && params
                       ? json_deep_copy(params)
                       : json_pack("{s:s}", "type", "object");
    return json_pack("{s:s,s:{s:{s:O},s:o},s:[s,s]}", "type", "object", "properties", "name",
                     "const", json_object_get(fn, "name"), args_key, args, "required", "name",
                     args_key);
}

/* The calls the request allows: every tool, or the named one. */
static json_t *calls_schema(const srv_gen *g, const char *args_key)
{
    json_t *any = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(g->tools, i, t)
    {
        const char *name =
            json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (g->tool_choice != SRV_TOOL_NAMED || !strcmp(name, g->tool_name))
            json_array_append_new(any, call_schema(t, args_key));
    }
    return json_pack("{s:o}", "anyOf", any);
}

bool srv_tools_grammar(srv_gen *g, srv_tool_family family, srv_error *e)
{
    if (g->tool_choice != SRV_TOOL_REQUIRED && g->tool_choice != SRV_TOOL_NAMED) return true;
    if (g->grammar)
        return srv_fail(e, 400, "tool_choice",
                        "tool_choice 'required' or a named function cannot be combined with "
                        "'response_format' or 'grammar'");
    json_t *schema = calls_schema(g, family == SRV_TOOLS_LLAMA3 ? "parameters" : "arguments");
    core_buf gbnf;
    core_buf_init(&gbnf, 64u << 20);
    mica_err err;
    const mica_status st = gram_schema_gbnf(schema, &gbnf, &err);
    json_decref(schema);
    if (st) {
        core_buf_free(&gbnf);
        return srv_fail(e, 400, "tools", "a tool's parameters: %s", err.msg);
    }
    /* The schema's root becomes one call; the root around it is the family's markup. */
    char *root = gbnf.data ? strstr(gbnf.data, "root ::= ") : NULL;
    if (!root) {
        core_buf_free(&gbnf);
        return srv_fail(e, 500, "tools", "the tool grammar has no root");
    }
    memcpy(root, "call", 4); /* as long as "root" */
    const bool more = g->parallel_tool_calls;
    bool ok;
    if (family == SRV_TOOLS_MISTRAL)
        ok = core_buf_printf(&gbnf, "root ::= \"[TOOL_CALLS][\" call %s\"]\"\n",
                             more ? "(\", \" call)*" : "");
    else if (family == SRV_TOOLS_LLAMA3)
        ok = core_buf_printf(&gbnf, "root ::= call %s\n", more ? "(\"; \" call)*" : "");
    else
        ok = core_buf_printf(&gbnf,
                             "tc ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n"
                             "root ::= tc %s\n",
                             more ? "(\"\\n\" tc)*" : "");
    if (!ok) {
        core_buf_free(&gbnf);
        return srv_fail(e, 400, "tools", "the tools are too large");
    }
    g->grammar = gbnf.data; /* the job owns it */
    g->grammar_len = gbnf.len;
    return true;
}
