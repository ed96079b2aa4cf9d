/*
 * template.h - chat templates: a Jinja subset interpreter that renders the chat templates
 * shipped with models (tokenizer.chat_template) the way Hugging Face transformers renders them
 * with Python's jinja2 (trim_blocks, lstrip_blocks, lenient Undefined, an immutable sandbox,
 * transformers' tojson / raise_exception / strftime_now).
 *
 * Use: build the variables as tmpl_value trees (or with tmpl_json.h from Jansson), parse the
 * template once with tmpl_parse, render it as often as needed with tmpl_render, free both.
 * Depends on libc only (numerical core). Called by `mica template` (src/cli/cmd_template.c),
 * the gateway and the tests.
 *
 * Threads: a parsed template is immutable and may be rendered by several threads at once.
 * Values are reference counted without atomics: a value tree passed to tmpl_render must not be
 * used by another thread while the render runs.
 */
#ifndef MICA_TEMPLATE_H
#define MICA_TEMPLATE_H

#include "mica.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- values ---------------------------------------------------------------------------- */

/* A Python-like value: None, bool, int, float, str, list, dict (insertion-ordered keys), and
 * the render's own kinds (undefined, tuple, namespace, macro, ...). */
typedef struct tmpl_value tmpl_value;

typedef enum tmpl_kind {
    TMPL_UNDEFINED,
    TMPL_NONE,
    TMPL_BOOL,
    TMPL_INT,
    TMPL_FLOAT,
    TMPL_STR,
    TMPL_LIST,
    TMPL_TUPLE,
    TMPL_DICT,
    TMPL_NAMESPACE,
    TMPL_GENERATOR,
    TMPL_MACRO,
    TMPL_FUNC,
    TMPL_LOOP,
} tmpl_kind;

/* Constructors return a new reference, or NULL when an allocation fails. tmpl_none and
 * tmpl_bool return static values (never NULL; freeing them does nothing). */
tmpl_value *tmpl_none(void);
tmpl_value *tmpl_bool(bool b);
tmpl_value *tmpl_int(int64_t i);
tmpl_value *tmpl_float(double f);
tmpl_value *tmpl_str(const char *s, size_t len); /* bytes are UTF-8, may hold NUL */
tmpl_value *tmpl_cstr(const char *s);
tmpl_value *tmpl_list(void);
tmpl_value *tmpl_dict(void);

/* Appends item to a list / sets key in a dict (replacing an existing key in place). Both take
 * over the caller's reference to item / v, also when they fail (MICA_ENOMEM, or MICA_EINVAL
 * when list / dict is not one or item / v is NULL). */
mica_status tmpl_list_push(tmpl_value *list, tmpl_value *item, mica_err *err);
mica_status tmpl_dict_set(tmpl_value *dict, const char *key, size_t key_len, tmpl_value *v,
                          mica_err *err);

/* Drops one reference (NULL is ignored); tmpl_value_ref adds one and returns v. */
void tmpl_value_free(tmpl_value *v);
tmpl_value *tmpl_value_ref(tmpl_value *v);

/* Reading values (tests, callers that inspect what they built). */
tmpl_kind tmpl_value_kind(const tmpl_value *v);
size_t tmpl_value_len(const tmpl_value *v); /* items of a list/tuple/dict, bytes of a str */
const char *tmpl_value_str(const tmpl_value *v, size_t *len);       /* NULL unless a str */
tmpl_value *tmpl_dict_get(const tmpl_value *dict, const char *key); /* borrowed, or NULL */

/* ---- templates --------------------------------------------------------------------------- */

typedef struct tmpl_template tmpl_template;

/* Parses src[0..len) once. name (e.g. the file or model path) prefixes every message about
 * this template: "NAME:LINE: what is wrong". Syntax errors and unknown tags are MICA_EFORMAT,
 * a template beyond the parser's caps (source size, nesting) MICA_EUNSUPPORTED. */
mica_status tmpl_parse(tmpl_template **out, const char *name, const char *src, size_t len,
                       mica_err *err);
void tmpl_free(tmpl_template *t);

typedef struct tmpl_var {
    const char *name;
    tmpl_value *value; /* borrowed for the render */
} tmpl_var;

/* What a render gets. Like transformers' apply_chat_template: messages, tools (None when
 * NULL), documents (None), add_generation_prompt, bos_token / eos_token (left undefined when
 * NULL), then vars (template kwargs such as enable_thinking; a var with the name of one of
 * the above replaces it). */
typedef struct tmpl_render_params {
    tmpl_value *messages; /* list of message dicts */
    tmpl_value *tools;    /* list, or NULL */
    bool add_generation_prompt;
    const char *bos_token, *eos_token;
    const tmpl_var *vars;
    size_t n_vars;
    /* "YYYY-MM-DD HH:MM:SS" that strftime_now() formats (a frozen clock), or NULL for the
     * local time at the start of the render. */
    const char *now;
    /* Caps against hostile templates; 0 selects the default. */
    size_t max_output;  /* bytes of output (and of any one string): 16 MiB */
    size_t max_memory;  /* bytes of values alive at once: 256 MiB */
    uint64_t max_steps; /* expressions and statements evaluated: 50 million */
} tmpl_render_params;

/* Renders t. On success *out is a malloc'd NUL-terminated string of *out_len bytes (the
 * caller frees it). A template that raises (raise_exception, an undefined value used, a type
 * error, as Python would) fails with MICA_EINVAL and "NAME:LINE: message" where message is
 * what Python's exception says; a cap reached is MICA_ERANGE; malloc failure MICA_ENOMEM. */
mica_status tmpl_render(const tmpl_template *t, const tmpl_render_params *p, char **out,
                        size_t *out_len, mica_err *err);

/* ---- a model's chat format (tmpl_chat.c) ------------------------------------------------ */

/* The model's tokenizer.chat_template, or a built-in format (ChatML, Llama-3, Llama-2 as small
 * Jinja templates guessed from the template's text) when it has none or it does not parse;
 * BOS/EOS texts from the model. name prefixes template messages. */
typedef struct tmpl_chat tmpl_chat;

mica_status tmpl_chat_new(tmpl_chat **out, const mica_model *m, const char *name, mica_err *err);
/* The same from the template text (source[0..len), NULL when there is none) and the BOS/EOS
 * texts, for callers that hold a vocabulary rather than a mica_model (training). */
mica_status tmpl_chat_new_text(tmpl_chat **out, const char *source, size_t len, const char *bos,
                               const char *eos, const char *name, mica_err *err);
void tmpl_chat_free(tmpl_chat *c);
/* "model" (its own template), "chatml", "llama3" or "llama2". */
const char *tmpl_chat_format(const tmpl_chat *c);
/* The model's template text (NULL when it has none), e.g. to tell how it writes tool calls. */
const char *tmpl_chat_source(const tmpl_chat *c);
/* Why the model's template was not used (it did not parse), or NULL. */
const char *tmpl_chat_warning(const tmpl_chat *c);
/* Renders messages (a list of message dicts) and tools (a list, or NULL) like tmpl_render. */
mica_status tmpl_chat_render(const tmpl_chat *c, tmpl_value *messages, tmpl_value *tools,
                             bool add_generation_prompt, char **out, size_t *len, mica_err *err);
/* Whether the rendered text already starts with the BOS text (then the tokenizer must not add
 * another). */
bool tmpl_chat_has_bos(const tmpl_chat *c, const char *text, size_t len);

#endif
