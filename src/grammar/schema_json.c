/*
 * schema_json.c - JSON Schema to GBNF (see schema_json.h), after the design of llama.cpp's
 * json-schema-to-grammar: one rule per schema node, shared primitive rules, whitespace
 * limited to a space or a newline and up to 20 indentation characters between tokens (so a
 * model cannot loop on spaces), numbers limited to 16 digits (and exponents to 2, so every
 * document parses as a finite double), and \u escapes that never leave a lone surrogate, so
 * every generated document is JSON that strict parsers accept. The finished grammar is parsed
 * once here: a $ref cycle with no way out becomes an error naming the schema path. Called by
 * the gateway (response_format) and `mica run --json-schema`.
 */
#include "schema_json.h"
#include "grammar.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SC_MAX_DEPTH  64   /* nesting of schemas */
#define SC_MAX_ITEMS  1000 /* minItems/maxItems, minLength/maxLength */
#define SC_MAX_OUTPUT (16u << 20)

static const char sc_primitives[] =
    "space ::= | \" \" | \"\\n\" [ \\t]{0,20}\n"
    "boolean ::= (\"true\" | \"false\") space\n"
    "null ::= \"null\" space\n"
    "integral-part ::= [0] | [1-9] [0-9]{0,15}\n"
    "integer ::= \"-\"? integral-part space\n"
    "number ::= \"-\"? integral-part (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})? space\n"
    "hex ::= [0-9a-fA-F]\n"
    "uescape ::= [0-9a-cA-Ce-fE-F] hex hex hex | [dD] [0-7] hex hex | [dD] [89abAB] hex hex "
    "\"\\\\u\" [dD] [c-fC-F] hex hex\n"
    "char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" uescape)\n"
    "string ::= \"\\\"\" char* \"\\\"\" space\n"
    "value ::= object | array | string | number | boolean | null\n"
    "member ::= string \":\" space value\n"
    "object ::= \"{\" space (member (\",\" space member)*)? \"}\" space\n"
    "array ::= \"[\" space (value (\",\" space value)*)? \"]\" space\n";

/* Keywords that only annotate: accepted and ignored. */
static const char *const sc_annotations[] = {"title",       "description", "$schema",  "$id",
                                             "$comment",    "default",     "examples", "$defs",
                                             "definitions", "strict",      NULL};
static const char *const sc_keywords[] = {
    "type",     "properties", "required",  "additionalProperties",
    "enum",     "const",      "items",     "minItems",
    "maxItems", "minLength",  "maxLength", "pattern",
    "anyOf",    "oneOf",      "$ref",      NULL};

typedef struct sc_named {
    char name[16];
    char *path;
} sc_named;

typedef struct sc {
    json_t *root;
    core_buf *out;
    mica_err *err;
    char path[1024];
    size_t path_len;
    int n_rules, depth;
    sc_named *named; /* every rule written, with its schema path */
    int n_named, cap_named;
    bool failed;
} sc;

static bool sc_fail(sc *c, const char *key, const char *fmt, ...) CORE_PRINTF(3, 4);
static bool sc_fail(sc *c, const char *key, const char *fmt, ...)
{
    if (c->failed) return false;
    c->failed = true;
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    core_fail(c->err, MICA_EINVAL, "schema: %s%s%s: %s", c->path, key ? "/" : "", key ? key : "",
              msg);
    return false;
}

/* ---- the path ------------------------------------------------------------------------ */

/* Appends "/segment" (JSON pointer escaping); returns the length to restore. */
static size_t path_push(sc *c, const char *seg)
{
    const size_t old = c->path_len;
    size_t n = old;
    if (n + 1 < sizeof c->path) c->path[n++] = '/';
    for (const char *s = seg; *s && n + 2 < sizeof c->path; s++) {
        if (*s == '~' || *s == '/') {
            c->path[n++] = '~';
            c->path[n++] = *s == '~' ? '0' : '1';
        } else {
            c->path[n++] = *s;
        }
    }
    c->path[n] = '\0';
    c->path_len = n;
    return old;
}

static size_t path_push_index(sc *c, size_t i)
{
    char seg[24];
    snprintf(seg, sizeof seg, "%zu", i);
    return path_push(c, seg);
}

static void path_pop(sc *c, size_t old)
{
    c->path_len = old;
    c->path[old] = '\0';
}

/* ---- output helpers ------------------------------------------------------------------ */

static bool put(sc *c, core_buf *b, const char *s)
{
    return core_buf_append(b, s, strlen(s)) || sc_fail(c, NULL, "the grammar is too large");
}

static bool putf(sc *c, core_buf *b, const char *fmt, ...) CORE_PRINTF(3, 4);
static bool putf(sc *c, core_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *tmp = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!tmp) return sc_fail(c, NULL, "out of memory");
    va_start(ap, fmt);
    vsnprintf(tmp, (size_t)n + 1, fmt, ap);
    va_end(ap);
    const bool ok = put(c, b, tmp);
    free(tmp);
    return ok;
}

/* A GBNF literal of s[0..n): every byte outside printable ASCII, and " and \, escaped. */
static bool put_literal(sc *c, core_buf *b, const char *s, size_t n)
{
    if (!put(c, b, "\"")) return false;
    for (size_t i = 0; i < n; i++) {
        const unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            if (!putf(c, b, "\\%c", ch)) return false;
        } else if (ch < 0x20 || ch >= 0x7F) {
            int len;
            const uint32_t cp = core_utf8_decode(s + i, n - i, &len);
            if (!putf(c, b, "\\U%08X", cp)) return false;
            i += (size_t)len - 1;
        } else if (!core_buf_append(b, s + i, 1)) {
            return sc_fail(c, NULL, "the grammar is too large");
        }
    }
    return put(c, b, "\"");
}

/* A fresh rule name, remembered with the current path. */
static bool new_rule(sc *c, char name[16])
{
    snprintf(name, 16, "s%d", ++c->n_rules);
    if (c->n_named == c->cap_named) {
        const int cap = c->cap_named ? c->cap_named * 2 : 32;
        sc_named *n = realloc(c->named, (size_t)cap * sizeof *n);
        if (!n) return sc_fail(c, NULL, "out of memory");
        c->named = n;
        c->cap_named = cap;
    }
    sc_named *n = &c->named[c->n_named];
    memcpy(n->name, name, 16);
    if (!(n->path = malloc(c->path_len + 1))) return sc_fail(c, NULL, "out of memory");
    memcpy(n->path, c->path, c->path_len + 1);
    c->n_named++;
    return true;
}

static bool write_rule(sc *c, const char *name, const core_buf *body)
{
    return putf(c, c->out, "%s ::= ", name) &&
           (!body->len || core_buf_append(c->out, body->data, body->len) ||
            sc_fail(c, NULL, "the grammar is too large")) &&
           put(c, c->out, "\n");
}

/* ---- schema nodes -------------------------------------------------------------------- */

static bool compile(sc *c, json_t *node, char name[16]);

static bool check_keywords(sc *c, json_t *node)
{
    const char *key;
    json_t *v;
    json_object_foreach(node, key, v)
    {
        bool known = false;
        for (int i = 0; sc_keywords[i] && !known; i++) known = !strcmp(key, sc_keywords[i]);
        for (int i = 0; sc_annotations[i] && !known; i++) known = !strcmp(key, sc_annotations[i]);
        if (!known) return sc_fail(c, key, "unsupported keyword");
    }
    return true;
}

/* A JSON value written exactly (const, enum), then space. */
static bool put_value(sc *c, core_buf *b, json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) return sc_fail(c, NULL, "out of memory");
    const bool ok = put_literal(c, b, text, strlen(text)) && put(c, b, " space");
    free(text);
    return ok;
}

static bool body_enum(sc *c, json_t *node, core_buf *b)
{
    json_t *e = json_object_get(node, "enum");
    if (!json_is_array(e) || json_array_size(e) == 0)
        return sc_fail(c, "enum", "must be a non-empty array");
    size_t i;
    json_t *v;
    json_array_foreach(e, i, v)
    {
        if ((i && !put(c, b, " | ")) || !put_value(c, b, v)) return false;
    }
    return true;
}

static bool body_alternatives(sc *c, json_t *node, const char *key, core_buf *b)
{
    json_t *list = json_object_get(node, key);
    if (!json_is_array(list) || json_array_size(list) == 0)
        return sc_fail(c, key, "must be a non-empty array of schemas");
    const size_t old = path_push(c, key);
    size_t i;
    json_t *sub;
    bool ok = true;
    json_array_foreach(list, i, sub)
    {
        char name[16];
        const size_t at = path_push_index(c, i);
        ok = compile(c, sub, name) && (!i || put(c, b, " | ")) && put(c, b, name);
        path_pop(c, at);
        if (!ok) break;
    }
    path_pop(c, old);
    return ok;
}

/* Resolves a local JSON pointer ("#/$defs/x"). */
static json_t *resolve(json_t *root, const char *ref)
{
    if (ref[0] != '#') return NULL;
    json_t *at = root;
    for (const char *p = ref + 1; *p == '/' && at;) {
        char seg[256];
        size_t n = 0;
        for (p++; *p && *p != '/' && n + 1 < sizeof seg; p++) {
            if (*p == '~' && (p[1] == '0' || p[1] == '1')) {
                seg[n++] = p[1] == '0' ? '~' : '/';
                p++;
            } else {
                seg[n++] = *p;
            }
        }
        seg[n] = '\0';
        at = json_is_object(at) ? json_object_get(at, seg) : NULL;
    }
    return at;
}

/* A $ref is one rule per target, named after the target's path: a second visit (recursion)
 * refers to it. */
static bool body_ref(sc *c, json_t *node, core_buf *b)
{
    json_t *r = json_object_get(node, "$ref");
    const char *ref = json_string_value(r);
    if (!ref || (strncmp(ref, "#/$defs/", 8) && strncmp(ref, "#/definitions/", 14)))
        return sc_fail(c, "$ref",
                       "only local references to #/$defs or #/definitions are supported");
    for (int i = 0; i < c->n_named; i++)
        if (!strcmp(c->named[i].path, ref)) return put(c, b, c->named[i].name);
    json_t *target = resolve(c->root, ref);
    if (!target) return sc_fail(c, "$ref", "'%s' does not exist", ref);
    char saved[sizeof c->path];
    memcpy(saved, c->path, sizeof saved);
    const size_t saved_len = c->path_len;
    snprintf(c->path, sizeof c->path, "%s", ref);
    c->path_len = strlen(c->path);
    char name[16];
    const bool ok = compile(c, target, name);
    memcpy(c->path, saved, sizeof saved);
    c->path_len = saved_len;
    return ok && put(c, b, name);
}

static bool get_count(sc *c, json_t *node, const char *key, long *out)
{
    json_t *v = json_object_get(node, key);
    if (!v) return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return sc_fail(c, key, "must be a non-negative integer");
    if (json_integer_value(v) > SC_MAX_ITEMS)
        return sc_fail(c, key, "values above %d are not supported", SC_MAX_ITEMS);
    *out = (long)json_integer_value(v);
    return true;
}

static bool get_range(sc *c, json_t *node, const char *kmin, const char *kmax, long *min, long *max)
{
    *min = 0;
    *max = -1;
    if (!get_count(c, node, kmin, min) || !get_count(c, node, kmax, max)) return false;
    if (*max >= 0 && *max < *min) return sc_fail(c, kmax, "is below %s", kmin);
    return true;
}

/* "{m,n}" (n < 0: unbounded). */
static bool put_repeat(sc *c, core_buf *b, long min, long max)
{
    return max < 0 ? putf(c, b, "{%ld,}", min) : putf(c, b, "{%ld,%ld}", min, max);
}

static bool body_array(sc *c, json_t *node, core_buf *b)
{
    long min, max;
    if (!get_range(c, node, "minItems", "maxItems", &min, &max)) return false;
    json_t *items = json_object_get(node, "items");
    char item[16] = "value";
    if (items) {
        if (json_is_array(items)) return sc_fail(c, "items", "tuple items are not supported");
        const size_t old = path_push(c, "items");
        const bool ok = compile(c, items, item);
        path_pop(c, old);
        if (!ok) return false;
    }
    if (max == 0) return put(c, b, "\"[\" space \"]\" space");
    if (!put(c, b, "\"[\" space ")) return false;
    if (min == 0) {
        if (!putf(c, b, "(%s (\",\" space %s)", item, item) ||
            !put_repeat(c, b, 0, max < 0 ? -1 : max - 1) || !put(c, b, ")?"))
            return false;
    } else if (!putf(c, b, "%s (\",\" space %s)", item, item) ||
               !put_repeat(c, b, min - 1, max < 0 ? -1 : max - 1)) {
        return false;
    }
    return put(c, b, " \"]\" space");
}

/* ---- objects ------------------------------------------------------------------------- */

static bool is_required(json_t *required, const char *key)
{
    size_t i;
    json_t *v;
    json_array_foreach(required, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), key)) return true;
    }
    return false;
}

static bool check_required(sc *c, json_t *required, json_t *props)
{
    if (!required) return true;
    if (!json_is_array(required)) return sc_fail(c, "required", "must be an array of names");
    size_t i;
    json_t *v;
    json_array_foreach(required, i, v)
    {
        if (!json_is_string(v)) return sc_fail(c, "required", "must be an array of names");
        if (!json_object_get(props, json_string_value(v))) {
            const size_t old = path_push(c, "required");
            path_push_index(c, i);
            sc_fail(c, NULL, "'%s' is not among the properties", json_string_value(v));
            path_pop(c, old);
            return false;
        }
    }
    return true;
}

/* Property i's `"key" : value`, its value rule compiled under /properties/key. */
static bool put_member(sc *c, core_buf *b, const char *key, json_t *schema)
{
    const size_t old = path_push(c, "properties");
    path_push(c, key);
    char name[16];
    const bool ok = compile(c, schema, name);
    path_pop(c, old);
    json_t *k = json_string(key);
    char *text = k ? json_dumps(k, JSON_ENCODE_ANY) : NULL;
    json_decref(k);
    const bool ok2 = ok && text && put_literal(c, b, text, strlen(text)) &&
                     putf(c, b, " space \":\" space %s", name);
    free(text);
    return ok2;
}

/* Properties in their order, required ones always, optional ones maybe; commas only between
 * those written. rest_i: properties i.. after one was written; first_i: before any was. */
static bool body_properties(sc *c, json_t *props, json_t *required, core_buf *b)
{
    const size_t n = json_object_size(props);
    char(*first)[16] = calloc(n + 1, 16), (*rest)[16] = calloc(n + 1, 16);
    core_buf *members = calloc(n ? n : 1, sizeof *members);
    bool *req = calloc(n ? n : 1, sizeof *req);
    bool ok = first && rest && members && req;
    if (!ok) sc_fail(c, NULL, "out of memory");
    if (ok) { /* past the last property: nothing */
        memcpy(first[n], "\"\"", 3);
        memcpy(rest[n], "\"\"", 3);
    }
    const char *key;
    json_t *schema;
    size_t i = 0;
    json_object_foreach(props, key, schema)
    {
        if (!ok) break;
        core_buf_init(&members[i], SC_MAX_OUTPUT);
        req[i] = is_required(required, key);
        ok = put_member(c, &members[i], key, schema);
        i++;
    }
    /* Rules from the last property back. */
    for (size_t k = n; ok && k-- > 0;) {
        core_buf rb, fb;
        core_buf_init(&rb, SC_MAX_OUTPUT);
        core_buf_init(&fb, SC_MAX_OUTPUT);
        ok = new_rule(c, rest[k]) && new_rule(c, first[k]);
        const char *m = members[k].data;
        ok = ok &&
             putf(c, &rb, req[k] ? "\",\" space %s %s" : "(\",\" space %s)? %s", m, rest[k + 1]) &&
             putf(c, &fb, "%s %s", m, rest[k + 1]) &&
             (req[k] || putf(c, &fb, " | %s", first[k + 1])) && write_rule(c, rest[k], &rb) &&
             write_rule(c, first[k], &fb);
        core_buf_free(&rb);
        core_buf_free(&fb);
    }
    ok = ok && putf(c, b, "\"{\" space %s \"}\" space", first[0]);
    for (size_t k = 0; members && k < n; k++) core_buf_free(&members[k]);
    free(first);
    free(rest);
    free(members);
    free(req);
    return ok;
}

static bool body_object(sc *c, json_t *node, core_buf *b)
{
    json_t *props = json_object_get(node, "properties");
    json_t *required = json_object_get(node, "required");
    json_t *extra = json_object_get(node, "additionalProperties");
    if (props && !json_is_object(props))
        return sc_fail(c, "properties", "must be an object of schemas");
    if (extra && !json_is_boolean(extra) && !json_is_object(extra))
        return sc_fail(c, "additionalProperties", "must be a boolean or a schema");
    if (!check_required(c, required, props)) return false;
    if (props) return body_properties(c, props, required, b);
    if (!extra || json_is_true(extra)) return put(c, b, "object");
    if (json_is_false(extra)) return put(c, b, "\"{\" space \"}\" space");
    /* additionalProperties: a schema and no properties: a map from names to such values. */
    char name[16];
    const size_t old = path_push(c, "additionalProperties");
    const bool ok = compile(c, extra, name);
    path_pop(c, old);
    return ok && putf(c, b,
                      "\"{\" space (string \":\" space %s (\",\" space string \":\" space %s)*)? "
                      "\"}\" space",
                      name, name);
}

/* ---- strings and patterns ------------------------------------------------------------ */

static bool sc_pattern(sc *c, const char *re, core_buf *b); /* below */

static bool body_string(sc *c, json_t *node, core_buf *b)
{
    long min, max;
    if (!get_range(c, node, "minLength", "maxLength", &min, &max)) return false;
    json_t *pat = json_object_get(node, "pattern");
    if (!pat)
        return put(c, b, "\"\\\"\" char") && put_repeat(c, b, min, max) &&
               put(c, b, " \"\\\"\" space");
    if (!json_is_string(pat)) return sc_fail(c, "pattern", "must be a string");
    if (json_object_get(node, "minLength") || json_object_get(node, "maxLength"))
        return sc_fail(c, "pattern", "pattern together with minLength/maxLength is not supported");
    const size_t old = path_push(c, "pattern");
    const bool ok = put(c, b, "\"\\\"\" ") && sc_pattern(c, json_string_value(pat), b);
    path_pop(c, old);
    return ok && put(c, b, " \"\\\"\" space");
}

static bool body_type(sc *c, json_t *node, const char *type, core_buf *b)
{
    if (!strcmp(type, "object")) return body_object(c, node, b);
    if (!strcmp(type, "array")) return body_array(c, node, b);
    if (!strcmp(type, "string")) return body_string(c, node, b);
    if (!strcmp(type, "number") || !strcmp(type, "integer") || !strcmp(type, "boolean") ||
        !strcmp(type, "null"))
        return put(c, b, type);
    return sc_fail(c, "type", "unknown type '%s'", type);
}

static bool body_types(sc *c, json_t *node, core_buf *b)
{
    json_t *t = json_object_get(node, "type");
    if (json_is_string(t)) return body_type(c, node, json_string_value(t), b);
    if (!json_is_array(t) || json_array_size(t) == 0)
        return sc_fail(c, "type", "must be a type name or a non-empty list of them");
    size_t i;
    json_t *v;
    json_array_foreach(t, i, v)
    {
        if (!json_is_string(v)) return sc_fail(c, "type", "must be a list of type names");
        if (i && !put(c, b, " | ")) return false;
        if (!put(c, b, "(") || !body_type(c, node, json_string_value(v), b) || !put(c, b, ")"))
            return false;
    }
    return true;
}

/* The body of a node's rule, by the first keyword that decides its shape. */
static bool body(sc *c, json_t *node, core_buf *b)
{
    if (json_is_true(node)) return put(c, b, "value");
    if (json_is_false(node)) return sc_fail(c, NULL, "the schema false accepts nothing");
    if (!json_is_object(node)) return sc_fail(c, NULL, "a schema must be an object or a boolean");
    if (!check_keywords(c, node)) return false;
    if (json_object_get(node, "$ref")) return body_ref(c, node, b);
    if (json_object_get(node, "const")) return put_value(c, b, json_object_get(node, "const"));
    if (json_object_get(node, "enum")) return body_enum(c, node, b);
    if (json_object_get(node, "anyOf")) return body_alternatives(c, node, "anyOf", b);
    if (json_object_get(node, "oneOf")) return body_alternatives(c, node, "oneOf", b);
    if (json_object_get(node, "type")) return body_types(c, node, b);
    if (json_object_get(node, "properties") || json_object_get(node, "additionalProperties"))
        return body_object(c, node, b);
    if (json_object_get(node, "items")) return body_array(c, node, b);
    return put(c, b, "value");
}

static bool compile(sc *c, json_t *node, char name[16])
{
    if (++c->depth > SC_MAX_DEPTH) return sc_fail(c, NULL, "nested deeper than %d", SC_MAX_DEPTH);
    core_buf b;
    core_buf_init(&b, SC_MAX_OUTPUT);
    const bool ok = new_rule(c, name) && body(c, node, &b) && write_rule(c, name, &b);
    core_buf_free(&b);
    c->depth--;
    return ok;
}

/* ---- patterns ---------------------------------------------------------------------- */

/* A regular expression becomes GBNF over the characters of the JSON string (the text between
 * its quotes): characters that JSON must escape (", \, controls) are written as their escape.
 * Without ^ or $ the pattern may match anywhere: any characters may come before or after. */

#define RE_MAX_RANGES 256

typedef struct re_set {
    uint32_t lo[RE_MAX_RANGES], hi[RE_MAX_RANGES];
    int n;
} re_set;

typedef struct re {
    sc *c;
    const char *start, *p, *end;
} re;

static bool re_fail(re *r, const char *what)
{
    return sc_fail(r->c, NULL, "%s at offset %d", what, (int)(r->p - r->start));
}

static bool set_add(re *r, re_set *s, uint32_t lo, uint32_t hi)
{
    if (s->n == RE_MAX_RANGES) return re_fail(r, "character class too large");
    s->lo[s->n] = lo;
    s->hi[s->n++] = hi;
    return true;
}

static int range_cmp(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorts and merges the ranges. */
static void set_normalize(re_set *s)
{
    uint32_t pairs[RE_MAX_RANGES][2];
    for (int i = 0; i < s->n; i++) pairs[i][0] = s->lo[i], pairs[i][1] = s->hi[i];
    qsort(pairs, (size_t)s->n, sizeof pairs[0], range_cmp);
    int n = 0;
    for (int i = 0; i < s->n; i++) {
        if (n && pairs[i][0] <= s->hi[n - 1] + 1) {
            if (pairs[i][1] > s->hi[n - 1]) s->hi[n - 1] = pairs[i][1];
            continue;
        }
        s->lo[n] = pairs[i][0];
        s->hi[n++] = pairs[i][1];
    }
    s->n = n;
}

static bool set_complement(re *r, re_set *s)
{
    set_normalize(s);
    re_set out = {.n = 0};
    uint32_t next = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->lo[i] > next && !set_add(r, &out, next, s->lo[i] - 1)) return false;
        next = s->hi[i] + 1;
    }
    if (next <= 0x10FFFF && !set_add(r, &out, next, 0x10FFFF)) return false;
    *s = out;
    return true;
}

static bool json_unsafe(uint32_t cp)
{
    return cp < 0x20 || cp == '"' || cp == '\\';
}

static bool set_has(const re_set *s, uint32_t cp)
{
    for (int i = 0; i < s->n; i++)
        if (s->lo[i] <= cp && cp <= s->hi[i]) return true;
    return false;
}

static bool put_cp(sc *c, core_buf *b, uint32_t cp)
{
    return cp < 0x100     ? putf(c, b, "\\x%02X", cp)
           : cp < 0x10000 ? putf(c, b, "\\u%04X", cp)
                          : putf(c, b, "\\U%08X", cp);
}

/* The set as GBNF: a class of its characters JSON writes as they are, and the JSON escape of
 * each other one, as alternatives. */
static bool put_set(re *r, core_buf *b, re_set *s)
{
    sc *c = r->c;
    set_normalize(s);
    core_buf cls;
    core_buf_init(&cls, SC_MAX_OUTPUT);
    bool ok = true;
    int n_alt = 0;
    for (int i = 0; i < s->n && ok; i++)
        for (uint32_t lo = s->lo[i]; lo <= s->hi[i] && ok;) {
            while (lo <= s->hi[i] && json_unsafe(lo)) lo++;
            uint32_t hi = lo;
            while (hi < s->hi[i] && !json_unsafe(hi + 1)) hi++;
            if (lo > s->hi[i]) break;
            ok = put_cp(c, &cls, lo) && (hi == lo || (put(c, &cls, "-") && put_cp(c, &cls, hi)));
            lo = hi + 1;
        }
    ok = ok && put(c, b, "(");
    if (ok && cls.len) {
        ok = put(c, b, "[") && put(c, b, cls.data) && put(c, b, "]");
        n_alt++;
    }
    for (uint32_t cp = 0; cp < 0x60 && ok; cp++) {
        if (!json_unsafe(cp) || !set_has(s, cp)) continue;
        ok = put(c, b, n_alt++ ? " | " : "") && (cp == '"'    ? put(c, b, "\"\\\\\\\"\"")
                                                 : cp == '\\' ? put(c, b, "\"\\\\\\\\\"")
                                                              : putf(c, b, "\"\\\\u%04x\"", cp));
    }
    core_buf_free(&cls);
    if (ok && !n_alt) return re_fail(r, "a class that matches nothing");
    return ok && put(c, b, ") ");
}

/* \d \w \s and their negations into s; false (without an error) for other letters. */
static bool shorthand(re *r, char e, re_set *s, bool *ok)
{
    const char lower = (char)(e | 0x20);
    if (lower != 'd' && lower != 'w' && lower != 's') return false;
    re_set t = {.n = 0};
    *ok = true;
    if (lower == 'd') *ok = set_add(r, &t, '0', '9');
    if (lower == 'w')
        *ok = set_add(r, &t, '0', '9') && set_add(r, &t, 'A', 'Z') && set_add(r, &t, 'a', 'z') &&
              set_add(r, &t, '_', '_');
    if (lower == 's') *ok = set_add(r, &t, '\t', '\r') && set_add(r, &t, ' ', ' ');
    if (*ok && e != lower) *ok = set_complement(r, &t);
    for (int i = 0; *ok && i < t.n; i++) *ok = set_add(r, s, t.lo[i], t.hi[i]);
    return true;
}

static int re_hex(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') return (ch | 0x20) - 'a' + 10;
    return -1;
}

/* After a backslash: one character (\n, \x41, \u00e9, \., ...). */
static bool escaped_cp(re *r, uint32_t *cp)
{
    const char e = *r->p++;
    static const char simple[][2] = {{'n', '\n'}, {'t', '\t'}, {'r', '\r'},
                                     {'f', '\f'}, {'v', '\v'}, {'0', '\0'}};
    for (size_t i = 0; i < sizeof simple / sizeof *simple; i++)
        if (e == simple[i][0]) {
            *cp = (uint32_t)(unsigned char)simple[i][1];
            return true;
        }
    const int n_hex = e == 'x' ? 2 : e == 'u' ? 4 : 0;
    if (n_hex) {
        *cp = 0;
        for (int i = 0; i < n_hex; i++) {
            const int h = r->p < r->end ? re_hex(*r->p) : -1;
            if (h < 0) return re_fail(r, "bad hex escape");
            *cp = *cp * 16 + (uint32_t)h;
            r->p++;
        }
        return true;
    }
    if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '1' && e <= '9'))
        return re_fail(r, "unsupported escape");
    *cp = (uint32_t)(unsigned char)e;
    return true;
}

/* One class member: a character, an escape, or a shorthand; *single tells which. */
static bool class_item(re *r, re_set *s, uint32_t *cp, bool *single)
{
    *single = true;
    if (*r->p == '\\') {
        r->p++;
        if (r->p >= r->end) return re_fail(r, "trailing backslash");
        bool ok;
        if (shorthand(r, *r->p, s, &ok)) {
            r->p++;
            *single = false;
            return ok;
        }
        return escaped_cp(r, cp);
    }
    int len;
    *cp = core_utf8_decode(r->p, (size_t)(r->end - r->p), &len);
    r->p += len;
    return true;
}

static bool re_class(re *r, core_buf *b)
{
    r->p++; /* '[' */
    re_set s = {.n = 0};
    const bool negated = r->p < r->end && *r->p == '^';
    r->p += negated;
    while (r->p < r->end && *r->p != ']') {
        uint32_t lo, hi;
        bool single;
        if (!class_item(r, &s, &lo, &single)) return false;
        if (!single) continue;
        hi = lo;
        if (r->p + 1 < r->end && *r->p == '-' && r->p[1] != ']') {
            r->p++;
            if (!class_item(r, &s, &hi, &single)) return false;
            if (!single || hi < lo) return re_fail(r, "bad range in a class");
        }
        if (!set_add(r, &s, lo, hi)) return false;
    }
    if (r->p >= r->end) return re_fail(r, "unterminated class");
    r->p++;
    return (!negated || set_complement(r, &s)) && put_set(r, b, &s);
}

static bool re_alt(re *r, core_buf *b);

static bool re_atom(re *r, core_buf *b)
{
    const char ch = *r->p;
    re_set s = {.n = 0};
    if (ch == '(') {
        r->p++;
        if (r->p + 1 < r->end && r->p[0] == '?' && r->p[1] == ':') r->p += 2;
        if (r->p < r->end && *r->p == '?') return re_fail(r, "unsupported group");
        if (!put(r->c, b, "(") || !re_alt(r, b)) return false;
        if (r->p >= r->end || *r->p != ')') return re_fail(r, "missing ')'");
        r->p++;
        return put(r->c, b, ") ");
    }
    if (ch == '[') return re_class(r, b);
    if (ch == '.') {
        r->p++;
        return set_add(r, &s, '\n', '\n') && set_complement(r, &s) && put_set(r, b, &s);
    }
    if (ch == '^' || ch == '$') return re_fail(r, "anchors are supported only at the ends");
    if (ch == '*' || ch == '+' || ch == '?' || ch == '{' || ch == ')')
        return re_fail(r, "unexpected character");
    uint32_t cp;
    bool single;
    if (ch == '\\' && r->p + 1 < r->end && (r->p[1] == 'b' || r->p[1] == 'B'))
        return re_fail(r, "word boundaries are not supported");
    if (!class_item(r, &s, &cp, &single)) return false;
    return (!single || set_add(r, &s, cp, cp)) && put_set(r, b, &s);
}

static bool re_quantifier(re *r, core_buf *b)
{
    const char ch = *r->p;
    if (ch == '*' || ch == '+' || ch == '?') {
        r->p++;
        if (!putf(r->c, b, "%c ", ch)) return false;
    } else if (ch == '{') {
        const char *close = memchr(r->p, '}', (size_t)(r->end - r->p));
        long min, max = -1;
        int used = 0;
        char spec[32];
        const size_t n = close ? (size_t)(close - r->p + 1) : 0;
        if (!n || n >= sizeof spec) return re_fail(r, "bad quantifier");
        memcpy(spec, r->p, n);
        spec[n] = '\0';
        if (sscanf(spec, "{%ld,%ld}%n", &min, &max, &used) == 2 && used == (int)n) {
        } else if (sscanf(spec, "{%ld,}%n", &min, &used) == 1 && used == (int)n) {
            max = -1;
        } else if (sscanf(spec, "{%ld}%n", &min, &used) == 1 && used == (int)n) {
            max = min;
        } else {
            return re_fail(r, "bad quantifier");
        }
        if (min < 0 || min > SC_MAX_ITEMS || max > SC_MAX_ITEMS || (max >= 0 && max < min))
            return re_fail(r, "quantifier out of range");
        r->p = close + 1;
        if (!put_repeat(r->c, b, min, max) || !put(r->c, b, " ")) return false;
    } else {
        return true;
    }
    if (r->p < r->end && *r->p == '?') r->p++; /* lazy: the same strings match in full */
    return true;
}

static bool re_seq(re *r, core_buf *b)
{
    while (r->p < r->end && *r->p != '|' && *r->p != ')')
        if (!re_atom(r, b) || !re_quantifier(r, b)) return false;
    return true;
}

static bool re_alt(re *r, core_buf *b)
{
    if (!re_seq(r, b)) return false;
    while (r->p < r->end && *r->p == '|') {
        r->p++;
        if (!put(r->c, b, "| ") || !re_seq(r, b)) return false;
    }
    return true;
}

/* Whether the pattern's last character is an unescaped '$'. */
static bool ends_anchored(const char *start, const char *end)
{
    if (end == start || end[-1] != '$') return false;
    size_t n = 0;
    for (const char *q = end - 1; q > start && q[-1] == '\\'; q--) n++;
    return n % 2 == 0;
}

static bool sc_pattern(sc *c, const char *pattern, core_buf *b)
{
    re r = {.c = c, .start = pattern, .p = pattern, .end = pattern + strlen(pattern)};
    const bool head = *r.p == '^';
    r.p += head;
    const bool tail = ends_anchored(r.p, r.end);
    r.end -= tail;
    bool ok = (head || put(c, b, "char* ")) && put(c, b, "(") && re_alt(&r, b);
    if (ok && r.p < r.end) ok = re_fail(&r, "unmatched ')'");
    return ok && put(c, b, ")") && (tail || put(c, b, " char*"));
}

/* ---- the whole schema ---------------------------------------------------------------- */

/* The schema path of a rule the grammar check blamed ("s3", or a generated "s3_2"). */
static const char *path_of_rule(const sc *c, const char *rule)
{
    const size_t n = strcspn(rule, "_");
    for (int i = 0; i < c->n_named; i++)
        if (strlen(c->named[i].name) == n && !strncmp(c->named[i].name, rule, n))
            return c->named[i].path;
    return "#";
}

static mica_status check_grammar(sc *c)
{
    gram *g = NULL;
    char bad[GRAM_NAME_MAX];
    mica_err gerr;
    const mica_status st = gram_parse(&g, c->out->data, c->out->len, bad, &gerr);
    gram_free(g);
    if (!st) return MICA_OK;
    if (!bad[0]) return core_fail(c->err, st, "schema: %s", gerr.msg);
    return core_fail(c->err, MICA_EINVAL,
                     "schema: %s: a recursive $ref that never ends (no finite document)",
                     path_of_rule(c, bad));
}

mica_status gram_schema_gbnf(json_t *schema, core_buf *out, mica_err *err)
{
    sc c = {.root = schema, .out = out, .err = err, .path = "#", .path_len = 1};
    char name[16];
    const size_t start = out->len;
    bool ok = put(&c, out, sc_primitives) && compile(&c, schema, name) &&
              putf(&c, out, "root ::= %s\n", name);
    mica_status st = ok ? check_grammar(&c) : MICA_EINVAL;
    for (int i = 0; i < c.n_named; i++) free(c.named[i].path);
    free(c.named);
    if (st) out->len = start;
    return st;
}

mica_status gram_schema_gbnf_text(const char *text, size_t len, core_buf *out, mica_err *err)
{
    json_error_t je;
    json_t *schema = json_loadb(text, len, JSON_DECODE_ANY, &je);
    if (!schema)
        return core_fail(err, MICA_EINVAL, "schema: invalid JSON: %s (line %d)", je.text, je.line);
    const mica_status st = gram_schema_gbnf(schema, out, err);
    json_decref(schema);
    return st;
}

mica_status gram_schema_any_object(core_buf *out, mica_err *err)
{
    if (!core_buf_append(out, sc_primitives, strlen(sc_primitives)) ||
        !core_buf_append(out, "root ::= object\n", 16))
        return core_fail(err, MICA_ENOMEM, "schema: out of memory");
    return MICA_OK;
}
