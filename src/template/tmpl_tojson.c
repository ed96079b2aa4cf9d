/*
 * tmpl_tojson.c - the tojson filter as transformers defines it: Python's json.dumps with
 * ensure_ascii=False unless asked, keys in insertion order unless sort_keys, separators
 * ", " / ": " (or "," with indent), Python's float repr, NaN / Infinity, and json's
 * TypeErrors for what it cannot serialise (Undefined, generators, namespaces). Writes text
 * only; no JSON parsing lives in the core. Called by tmpl_filter.c.
 */
#include "tmpl_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define JSON_MAX_DEPTH 500

static bool put(core_buf *out, const char *s)
{
    return core_buf_append(out, s, strlen(s));
}

static bool write_string(core_buf *out, const char *s, size_t n, bool ascii)
{
    if (!put(out, "\"")) return false;
    size_t start = 0, len;
    for (size_t off = 0; off < n; off += len) {
        uint32_t c = tmpl_decode(s + off, n - off, &len);
        char esc[16];
        const char *e = NULL;
        switch (c) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        default:
            if (c < 0x20 || (ascii && c >= 0x7F && c <= 0xFFFF)) {
                snprintf(esc, sizeof esc, "\\u%04x", (unsigned)c);
                e = esc;
            } else if (ascii && c > 0xFFFF) {
                uint32_t v = c - 0x10000;
                snprintf(esc, sizeof esc, "\\u%04x\\u%04x", (unsigned)(0xD800 + (v >> 10)),
                         (unsigned)(0xDC00 + (v & 0x3FF)));
                e = esc;
            }
        }
        if (!e) continue;
        if (!core_buf_append(out, s + start, off - start) || !put(out, e)) return false;
        start = off + len;
    }
    return core_buf_append(out, s + start, n - start) && put(out, "\"");
}

static bool write_float(core_buf *out, double f)
{
    if (isnan(f)) return put(out, "NaN");
    if (isinf(f)) return put(out, f < 0 ? "-Infinity" : "Infinity");
    return tmpl_write_float(out, f);
}

static bool newline_indent(core_buf *out, const tmpl_json_opts *o, int level)
{
    if (o->indent < 0) return true;
    if (!put(out, "\n")) return false;
    for (int i = 0; i < level * o->indent; i++)
        if (!put(out, " ")) return false;
    return true;
}

typedef struct json_ctx {
    tmpl_run *r;
    core_buf *out;
    const tmpl_json_opts *o;
    bool full; /* the output cap was reached */
} json_ctx;

static bool encode(json_ctx *j, const tmpl_value *v, int level);

static bool out_ok(json_ctx *j, bool ok)
{
    if (!ok) j->full = true;
    return ok;
}

static bool write_key(json_ctx *j, const tmpl_value *k)
{
    core_buf *out = j->out;
    char buf[32];
    switch ((tmpl_kind)k->kind) {
    case TMPL_STR:
        return out_ok(j, write_string(out, k->u.str.s, k->u.str.len, j->o->ensure_ascii));
    case TMPL_INT:
        snprintf(buf, sizeof buf, "\"%lld\"", (long long)k->u.i);
        return out_ok(j, put(out, buf));
    case TMPL_BOOL:
        return out_ok(j, put(out, k->u.b ? "\"true\"" : "\"false\""));
    case TMPL_NONE:
        return out_ok(j, put(out, "\"null\""));
    case TMPL_FLOAT:
        return out_ok(j, put(out, "\"") && write_float(out, k->u.f) && put(out, "\""));
    default:
        return tmpl_failb(j->r, MICA_EINVAL, "keys must be str, int, float, bool or None, not %s",
                          tmpl_type_name(k));
    }
}

/* The order in which a dict's items are written: as inserted, or sorted by key. */
static bool item_order(json_ctx *j, const tmpl_value *m, size_t *order)
{
    size_t n = m->u.map.len;
    for (size_t i = 0; i < n; i++) order[i] = i;
    if (!j->o->sort_keys) return true;
    for (size_t i = 1; i < n; i++) { /* insertion sort: stable, dicts are small */
        size_t x = order[i], k = i;
        while (k > 0) {
            int c = tmpl_order(j->r, m->u.map.k[order[k - 1]], m->u.map.k[x], false);
            if (c == -2) return false;
            if (c <= 0) break;
            order[k] = order[k - 1];
            k--;
        }
        order[k] = x;
    }
    return true;
}

static bool encode_map(json_ctx *j, const tmpl_value *m, int level)
{
    size_t n = m->u.map.len;
    if (n == 0) return out_ok(j, put(j->out, "{}"));
    size_t small[64], *order = n <= 64 ? small : malloc(n * sizeof *order);
    if (!order) return tmpl_fail_nomem(j->r), false;
    bool ok = item_order(j, m, order) && out_ok(j, put(j->out, "{")) &&
              out_ok(j, newline_indent(j->out, j->o, level + 1));
    for (size_t i = 0; ok && i < n; i++) {
        size_t x = order[i];
        ok = (!i ||
              out_ok(j, put(j->out, j->o->item_sep) && newline_indent(j->out, j->o, level + 1))) &&
             write_key(j, m->u.map.k[x]) && out_ok(j, put(j->out, j->o->key_sep)) &&
             encode(j, m->u.map.v[x], level + 1);
    }
    ok = ok && out_ok(j, newline_indent(j->out, j->o, level) && put(j->out, "}"));
    if (order != small) free(order);
    return ok;
}

static bool encode_seq(json_ctx *j, const tmpl_value *s, int level)
{
    if (s->u.seq.len == 0) return out_ok(j, put(j->out, "[]"));
    bool ok = out_ok(j, put(j->out, "[") && newline_indent(j->out, j->o, level + 1));
    for (size_t i = 0; ok && i < s->u.seq.len; i++)
        ok = (!i ||
              out_ok(j, put(j->out, j->o->item_sep) && newline_indent(j->out, j->o, level + 1))) &&
             encode(j, s->u.seq.v[i], level + 1);
    return ok && out_ok(j, newline_indent(j->out, j->o, level) && put(j->out, "]"));
}

static bool encode(json_ctx *j, const tmpl_value *v, int level)
{
    char buf[32];
    if (level > JSON_MAX_DEPTH)
        return tmpl_failb(j->r, MICA_EINVAL,
                          "maximum recursion depth exceeded while encoding a JSON object");
    switch ((tmpl_kind)v->kind) {
    case TMPL_NONE:
        return out_ok(j, put(j->out, "null"));
    case TMPL_BOOL:
        return out_ok(j, put(j->out, v->u.b ? "true" : "false"));
    case TMPL_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v->u.i);
        return out_ok(j, put(j->out, buf));
    case TMPL_FLOAT:
        return out_ok(j, write_float(j->out, v->u.f));
    case TMPL_STR:
        return out_ok(j, write_string(j->out, v->u.str.s, v->u.str.len, j->o->ensure_ascii));
    case TMPL_LIST:
    case TMPL_TUPLE:
        return encode_seq(j, v, level);
    case TMPL_DICT:
        return encode_map(j, v, level);
    default:
        return tmpl_failb(j->r, MICA_EINVAL, "Object of type %s is not JSON serializable",
                          tmpl_type_name(v));
    }
}

bool tmpl_tojson(tmpl_run *r, core_buf *out, const tmpl_value *v, const tmpl_json_opts *o)
{
    json_ctx j = {r, out, o, false};
    if (encode(&j, v, 0)) return true;
    if (j.full && !r->failed)
        return tmpl_failb(r, MICA_ERANGE, "a string longer than %zu bytes", out->max);
    return false;
}
