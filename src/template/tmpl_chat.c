/*
 * tmpl_chat.c - a model's chat format: its own tokenizer.chat_template, or, for a model
 * without one (or with one the renderer cannot parse), a built-in format guessed from the
 * template's text: ChatML (the default), Llama-3 or Llama-2. The built-in formats are small
 * Jinja templates rendered by the same engine, so the callers (the gateway, `mica chat`) have
 * one path; they put tool descriptions in the system message in the Hermes style
 * (<tools>...</tools>, answers in <tool_call>...</tool_call>), which the gateway's parser reads.
 *
 * Reads the model through mica.h (metadata, BOS/EOS texts). Called by src/server/chat.c and
 * src/cli/cmd_chat.c.
 */
#include "template/template.h"

#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The system text: the first message's if it is a system message, plus the tools. */
static const char prelude[] =
    "{%- set ns = namespace(system='', has_system=false) -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set ns.system = messages[0].content if messages[0].content is string else '' -%}"
    "{%- set ns.has_system = true -%}{%- endif -%}"
    "{%- if tools -%}"
    "{%- set ns.system = ns.system ~ ('\\n\\n' if ns.system else '') ~ '# Tools\\n\\nYou may call "
    "one or more functions to assist with the user query.\\n\\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\\n<tools>' -%}"
    "{%- for t in tools -%}{%- set ns.system = ns.system ~ '\\n' ~ (t | tojson) -%}{%- endfor -%}"
    "{%- set ns.system = ns.system ~ '\\n</tools>\\n\\nFor each function call, return a json "
    "object with function name and arguments within <tool_call></tool_call> XML tags:\\n"
    "<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call>' "
    "-%}"
    "{%- endif -%}";

static const char chatml[] =
    "{%- if ns.system and not ns.has_system -%}"
    "<|im_start|>system{{ '\\n' }}{{ ns.system }}<|im_end|>{{ '\\n' }}{%- endif -%}"
    "{%- for m in messages -%}"
    "<|im_start|>{{ m.role }}{{ '\\n' }}"
    "{{- ns.system if loop.first and ns.has_system else (m.content if m.content is string else "
    "'') -}}"
    "<|im_end|>{{ '\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}";

static const char llama3[] =
    "{%- if ns.system and not ns.has_system -%}"
    "<|start_header_id|>system<|end_header_id|>{{ '\\n\\n' }}{{ ns.system }}<|eot_id|>"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "<|start_header_id|>{{ m.role }}<|end_header_id|>{{ '\\n\\n' }}"
    "{{- ns.system if loop.first and ns.has_system else (m.content if m.content is string else "
    "'') -}}"
    "<|eot_id|>{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "<|start_header_id|>assistant<|end_header_id|>{{ '\\n\\n' }}{%- endif -%}";

/* [INST] user [/INST] answer</s><s>[INST] ...; the system text goes into the first turn. */
static const char llama2[] =
    "{%- set turn = namespace(first=true) -%}"
    "{%- for m in messages -%}"
    "{%- set text = m.content if m.content is string else '' -%}"
    "{%- if m.role == 'system' -%}"
    "{%- elif m.role == 'assistant' -%}{{ ' ' ~ text }}</s><s>"
    "{%- else -%}{{ '[INST] ' }}"
    "{%- if turn.first and ns.system -%}<<SYS>>{{ '\\n' }}{{ ns.system }}{{ '\\n' }}<</SYS>>"
    "{{ '\\n\\n' }}{%- endif -%}"
    "{%- set turn.first = false -%}{{ text }} [/INST]"
    "{%- endif -%}{%- endfor -%}";

struct tmpl_chat {
    tmpl_template *t;
    char *source; /* the model's template text, or NULL */
    const char *format;
    char bos[64], eos[64];
    char warning[MICA_ERR_MSG_MAX];
};

/* A special token's text into buf ("" when the model has none). */
static void special_text(const mica_model *m, mica_token t, char *buf, size_t cap)
{
    const size_t n = t >= 0 ? mica_token_to_piece(m, t, true, buf, cap - 1) : 0;
    buf[n < cap ? n : cap - 1] = '\0';
}

/* The built-in format the model's template text hints at. */
static const char *guess_format(const char *src)
{
    if (src && strstr(src, "<|start_header_id|>")) return "llama3";
    if (src && strstr(src, "[INST]") && !strstr(src, "<|im_start|>")) return "llama2";
    return "chatml";
}

static mica_status parse_builtin(tmpl_chat *c, mica_err *err)
{
    const char *body = !strcmp(c->format, "llama3")   ? llama3
                       : !strcmp(c->format, "llama2") ? llama2
                                                      : chatml;
    char src[sizeof prelude + sizeof chatml + sizeof llama3 + sizeof llama2];
    snprintf(src, sizeof src, "%s%s", prelude, body);
    char name[32];
    snprintf(name, sizeof name, "built-in %s", c->format);
    return tmpl_parse(&c->t, name, src, strlen(src), err);
}

mica_status tmpl_chat_new_text(tmpl_chat **out, const char *source, size_t len, const char *bos,
                               const char *eos, const char *name, mica_err *err)
{
    *out = NULL;
    tmpl_chat *c = core_calloc(1, sizeof *c);
    if (!c) return core_fail(err, MICA_ENOMEM, "out of memory");
    snprintf(c->bos, sizeof c->bos, "%s", bos ? bos : "");
    snprintf(c->eos, sizeof c->eos, "%s", eos ? eos : "");
    if (source && (c->source = malloc(len + 1))) {
        memcpy(c->source, source, len);
        c->source[len] = '\0';
        char tname[256];
        snprintf(tname, sizeof tname, "%s:chat_template", name);
        mica_err perr;
        if (!tmpl_parse(&c->t, tname, c->source, len, &perr)) {
            c->format = "model";
            *out = c;
            return MICA_OK;
        }
        c->t = NULL;
        snprintf(c->warning, sizeof c->warning, "%s", perr.msg);
    }
    c->format = guess_format(c->source);
    const mica_status st = parse_builtin(c, err);
    if (st) {
        tmpl_chat_free(c);
        return st;
    }
    *out = c;
    return MICA_OK;
}

mica_status tmpl_chat_new(tmpl_chat **out, const mica_model *m, const char *name, mica_err *err)
{
    char bos[64], eos[64];
    special_text(m, mica_model_bos(m), bos, sizeof bos);
    special_text(m, mica_model_eos(m), eos, sizeof eos);
    const int64_t n = mica_model_meta_str(m, "tokenizer.chat_template", NULL, 0);
    char *source = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (source) mica_model_meta_str(m, "tokenizer.chat_template", source, (size_t)n + 1);
    const mica_status st =
        tmpl_chat_new_text(out, source, source ? (size_t)n : 0, bos, eos, name, err);
    free(source);
    return st;
}

void tmpl_chat_free(tmpl_chat *c)
{
    if (!c) return;
    tmpl_free(c->t);
    free(c->source);
    free(c);
}

const char *tmpl_chat_format(const tmpl_chat *c)
{
    return c->format;
}

const char *tmpl_chat_source(const tmpl_chat *c)
{
    return c->source;
}

const char *tmpl_chat_warning(const tmpl_chat *c)
{
    return c->warning[0] ? c->warning : NULL;
}

bool tmpl_chat_has_bos(const tmpl_chat *c, const char *text, size_t len)
{
    const size_t n = strlen(c->bos);
    return n && len >= n && !memcmp(text, c->bos, n);
}

mica_status tmpl_chat_render(const tmpl_chat *c, tmpl_value *messages, tmpl_value *tools,
                             bool add_generation_prompt, char **out, size_t *len, mica_err *err)
{
    const tmpl_render_params p = {
        .messages = messages,
        .tools = tools,
        .add_generation_prompt = add_generation_prompt,
        .bos_token = c->bos[0] ? c->bos : NULL,
        .eos_token = c->eos[0] ? c->eos : NULL,
    };
    return tmpl_render(c->t, &p, out, len, err);
}
