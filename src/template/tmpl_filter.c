/*
 * tmpl_filter.c - jinja2's builtin filters on single values, with jinja2 3.1's behaviour
 * under autoescape=False (Markup kept where markupsafe keeps it): default, length, attr,
 * string, safe / escape, trim, upper / lower / title / capitalize, replace, indent, tojson,
 * int / float / abs / round, wordcount, format; the filter tables (these, then
 * tmpl_filter_seq.c's) and the dispatch with jinja2's messages for unknown filters.
 * Called by tmpl_eval.c (and by map() through tmpl_filter_by_name).
 */
#include "tmpl_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- values ------------------------------------------------------------------------------ */

static tmpl_value *f_default(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("default", "default_value", "boolean");
    bool use = v->kind == TMPL_UNDEFINED || (tmpl_arg_true(p[1]) && !tmpl_truthy(v));
    if (!use) return tmpl_ref(v);
    return p[0] ? tmpl_ref(p[0]) : tmpl_or_nomem(r, tmpl_new_str(&r->budget, "", 0));
}

static tmpl_value *f_length(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("length", "_");
    (void)p;
    int64_t n = tmpl_len(r, v);
    return n < 0 ? NULL : tmpl_or_nomem(r, tmpl_new_int(&r->budget, n));
}

static tmpl_value *f_attr(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("attr", "name");
    if (!p[0] || p[0]->kind != TMPL_STR) return tmpl_fail(r, MICA_EINVAL, "attr() needs a name");
    return tmpl_getattr(r, v, (tmpl_sv){p[0]->u.str.s, p[0]->u.str.len});
}

static tmpl_value *f_string(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("string", "_");
    (void)p;
    return tmpl_to_str(r, v);
}

static tmpl_value *f_safe(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("safe", "_");
    (void)p;
    if (v->kind == TMPL_STR && (v->flags & TMPL_F_MARKUP)) return tmpl_ref(v);
    tmpl_value *s = tmpl_to_str(r, v);
    if (!s) return NULL;
    tmpl_value *m = tmpl_or_nomem(r, tmpl_new_str(&r->budget, s->u.str.s, s->u.str.len));
    tmpl_unref(s);
    if (m) m->flags |= TMPL_F_MARKUP;
    return m;
}

static tmpl_value *f_escape(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("escape", "_");
    (void)p;
    if (v->kind == TMPL_STR && (v->flags & TMPL_F_MARKUP)) return tmpl_ref(v);
    tmpl_value *s = tmpl_to_str(r, v);
    if (!s) return NULL;
    core_buf b;
    core_buf_init(&b, r->max_output);
    bool ok = core_buf_append(&b, "", 0) && tmpl_write_escaped(&b, s->u.str.s, s->u.str.len);
    tmpl_unref(s);
    if (!ok) {
        core_buf_free(&b);
        return tmpl_fail(r, MICA_ERANGE, "a string longer than %zu bytes", b.max);
    }
    tmpl_value *m = tmpl_or_nomem(r, tmpl_new_str_take(&r->budget, b.data, b.len));
    if (m) m->flags |= TMPL_F_MARKUP;
    return m;
}

/* Filters that work on str(value): trim, upper, lower, capitalize, title. */
static tmpl_value *on_str(tmpl_run *r, tmpl_value *v,
                          tmpl_value *(*fn)(tmpl_run *, tmpl_value *, const tmpl_value *),
                          const tmpl_value *arg)
{
    tmpl_value *s = tmpl_to_str(r, v);
    if (!s) return NULL;
    tmpl_value *out = fn(r, s, arg);
    tmpl_unref(s);
    return out;
}

static tmpl_value *strip_both(tmpl_run *r, tmpl_value *s, const tmpl_value *chars)
{
    return tmpl_str_strip(r, s, chars, 3);
}
static tmpl_value *to_upper(tmpl_run *r, tmpl_value *s, const tmpl_value *x)
{
    (void)x;
    return tmpl_str_case(r, s, 'u');
}
static tmpl_value *to_lower(tmpl_run *r, tmpl_value *s, const tmpl_value *x)
{
    (void)x;
    return tmpl_str_case(r, s, 'l');
}
static tmpl_value *to_capital(tmpl_run *r, tmpl_value *s, const tmpl_value *x)
{
    (void)x;
    return tmpl_str_case(r, s, 'c');
}

/* jinja2's do_title: each word (after -, whitespace, (, {, [ or <) capitalised. */
static tmpl_value *to_title(tmpl_run *r, tmpl_value *s, const tmpl_value *x)
{
    (void)x;
    core_buf b;
    core_buf_init(&b, 4 * s->u.str.len + 4);
    bool ok = core_buf_append(&b, "", 0), start = true;
    size_t len;
    for (size_t off = 0; ok && off < s->u.str.len; off += len) {
        uint32_t c = tmpl_decode(s->u.str.s + off, s->u.str.len - off, &len);
        bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || tmpl_is_space(c);
        uint32_t m = sep ? c : start ? tmpl_upper_cp(c) : tmpl_lower_cp(c);
        start = sep;
        char u[4];
        ok = core_buf_append(&b, u, (size_t)core_utf8_encode(m, u));
    }
    tmpl_value *out = ok ? tmpl_new_str_take(&r->budget, b.data, b.len) : NULL;
    if (!ok) core_buf_free(&b);
    if (out) out->flags |= s->flags & TMPL_F_MARKUP;
    return tmpl_or_nomem(r, out);
}

static tmpl_value *f_trim(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("trim", "chars");
    return on_str(r, v, strip_both, p[0]);
}
static tmpl_value *f_upper(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("upper", "_");
    (void)p;
    return on_str(r, v, to_upper, NULL);
}
static tmpl_value *f_lower(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("lower", "_");
    (void)p;
    return on_str(r, v, to_lower, NULL);
}
static tmpl_value *f_capitalize(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("capitalize", "_");
    (void)p;
    return on_str(r, v, to_capital, NULL);
}
static tmpl_value *f_title(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("title", "_");
    (void)p;
    return on_str(r, v, to_title, NULL);
}

static tmpl_value *f_replace(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("replace", "old", "new", "count");
    if (!p[0] || !p[1]) return tmpl_fail(r, MICA_EINVAL, "replace() needs old and new");
    tmpl_value *s = tmpl_to_str(r, v), *o = s ? tmpl_to_str(r, p[0]) : NULL,
               *n = o ? tmpl_to_str(r, p[1]) : NULL, *out = NULL;
    if (n) {
        int64_t count = p[2] && p[2]->kind == TMPL_INT ? p[2]->u.i : -1;
        out = tmpl_str_replace(r, s, o, n, count);
        if (out) out->flags &= (uint8_t)~TMPL_F_MARKUP; /* without autoescape: a plain str */
    }
    tmpl_unref(s);
    tmpl_unref(o);
    tmpl_unref(n);
    return out;
}

/* jinja2 3.1's do_indent. */
static tmpl_value *f_indent(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("indent", "width", "first", "blank");
    if (v->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, v);
    if (v->kind != TMPL_STR)
        return tmpl_fail(r, MICA_EINVAL, "unsupported operand type(s) for +=: '%s' and 'str'",
                         tmpl_type_name(v));
    tmpl_value *s = tmpl_ref(v);
    core_buf ind, b;
    core_buf_init(&ind, 4096);
    core_buf_init(&b, r->max_output);
    bool ok = core_buf_append(&ind, "", 0) && core_buf_append(&b, "", 0);
    if (p[0] && p[0]->kind == TMPL_STR)
        ok = ok && core_buf_append(&ind, p[0]->u.str.s, p[0]->u.str.len);
    else
        for (int64_t i = 0; ok && i < (p[0] && p[0]->kind == TMPL_INT ? p[0]->u.i : 4); i++)
            ok = core_buf_append(&ind, " ", 1);
    if (ok && tmpl_arg_true(p[1])) ok = core_buf_append(&b, ind.data, ind.len);
    const char *t = s->u.str.s;
    size_t n = s->u.str.len, start = 0, off = 0, len;
    bool first_line = true;
    /* s + "\n" split into lines; every line but the first gets the indent (blank lines only
     * with blank=True); joined with "\n". */
    while (ok && off <= n) {
        uint32_t c = off < n ? tmpl_decode(t + off, n - off, &len) : '\n';
        if (off == n) len = 1;
        if (!tmpl_is_linebreak(c)) {
            off += len;
            continue;
        }
        size_t line_len = off - start;
        if (!first_line) {
            ok = core_buf_append(&b, "\n", 1);
            if (ok && (line_len || tmpl_arg_true(p[2])))
                ok = core_buf_append(&b, ind.data, ind.len);
        }
        ok = ok && core_buf_append(&b, t + start, line_len);
        first_line = false;
        if (c == '\r' && off + 1 < n && t[off + 1] == '\n') len++;
        off += len;
        start = off;
        if (start > n) break;
    }
    core_buf_free(&ind);
    tmpl_value *out = ok ? tmpl_new_str_take(&r->budget, b.data, b.len) : NULL;
    if (!ok) core_buf_free(&b);
    if (out) out->flags |= s->flags & TMPL_F_MARKUP;
    tmpl_unref(s);
    return ok ? tmpl_or_nomem(r, out)
              : tmpl_fail(r, MICA_ERANGE, "a string longer than %zu bytes", r->max_output);
}

static tmpl_value *f_tojson(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
    tmpl_json_opts o = {tmpl_arg_true(p[0]), tmpl_arg_true(p[3]), -1, ", ", ": "};
    if (p[1] && p[1]->kind != TMPL_NONE) {
        if (p[1]->kind != TMPL_INT)
            return tmpl_fail(r, MICA_EUNSUPPORTED, "tojson: indent must be an integer");
        o.indent = p[1]->u.i < 0 ? 0 : p[1]->u.i > 64 ? 64 : (int)p[1]->u.i;
        o.item_sep = ",";
    }
    if (p[2] && p[2]->kind != TMPL_NONE) {
        const tmpl_value *sep = p[2];
        if (!tmpl_is_seq(sep) || sep->u.seq.len != 2 || sep->u.seq.v[0]->kind != TMPL_STR ||
            sep->u.seq.v[1]->kind != TMPL_STR)
            return tmpl_fail(r, MICA_EINVAL, "tojson: separators must be two strings");
        o.item_sep = sep->u.seq.v[0]->u.str.s;
        o.key_sep = sep->u.seq.v[1]->u.str.s;
    }
    core_buf b;
    core_buf_init(&b, r->max_output);
    if (!core_buf_append(&b, "", 0) || !tmpl_tojson(r, &b, v, &o)) {
        core_buf_free(&b);
        return r->failed ? NULL : tmpl_fail_nomem(r);
    }
    return tmpl_or_nomem(r, tmpl_new_str_take(&r->budget, b.data, b.len));
}

/* ---- numbers ----------------------------------------------------------------------------- */

/* Python's float(str): surrounding whitespace, underscores between digits, inf / nan. */
static bool parse_float(const tmpl_value *s, double *out)
{
    size_t start = tmpl_lstrip_len(s->u.str.s, s->u.str.len);
    size_t end = tmpl_rstrip_len(s->u.str.s, s->u.str.len);
    char buf[128];
    size_t k = 0;
    for (size_t i = start; i < end && k + 1 < sizeof buf; i++) {
        char c = s->u.str.s[i];
        if (c == 'x' || c == 'X' || c == 'p' || c == 'P') return false;
        if (c != '_') buf[k++] = c;
    }
    if (k == 0 || end - start >= sizeof buf) return false;
    buf[k] = '\0';
    char *e;
    *out = strtod(buf, &e);
    return *e == '\0';
}

static tmpl_value *f_float(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("float", "default");
    if (v->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, v);
    double f = 0;
    bool ok = true;
    if (v->kind == TMPL_FLOAT)
        f = v->u.f;
    else if (v->kind == TMPL_INT)
        f = (double)v->u.i;
    else if (v->kind == TMPL_BOOL)
        f = v->u.b;
    else
        ok = v->kind == TMPL_STR && parse_float(v, &f);
    if (!ok) return p[0] ? tmpl_ref(p[0]) : tmpl_or_nomem(r, tmpl_new_float(&r->budget, 0.0));
    return tmpl_or_nomem(r, tmpl_new_float(&r->budget, f));
}

static tmpl_value *f_int(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("int", "default", "base");
    if (v->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, v);
    int64_t base = p[1] && p[1]->kind == TMPL_INT ? p[1]->u.i : 10;
    if (v->kind == TMPL_INT || v->kind == TMPL_BOOL)
        return tmpl_or_nomem(r, tmpl_new_int(&r->budget, v->kind == TMPL_BOOL ? v->u.b : v->u.i));
    double f;
    bool ok = false;
    int64_t i = 0;
    if (v->kind == TMPL_STR) {
        char buf[80], *e;
        size_t s = tmpl_lstrip_len(v->u.str.s, v->u.str.len),
               t = tmpl_rstrip_len(v->u.str.s, v->u.str.len), k = 0;
        for (size_t j = s; j < t && k + 1 < sizeof buf; j++)
            if (v->u.str.s[j] != '_') buf[k++] = v->u.str.s[j];
        buf[k] = '\0';
        i = strtoll(buf, &e, (int)base);
        ok = k > 0 && *e == '\0' && base >= 2 && base <= 36;
    }
    if (!ok && (v->kind == TMPL_FLOAT || (v->kind == TMPL_STR && parse_float(v, &f)))) {
        if (v->kind == TMPL_FLOAT) f = v->u.f;
        if (isnan(f) || isinf(f) || fabs(f) > 9.2e18)
            return tmpl_fail(r, MICA_EINVAL, "cannot convert float %s to integer",
                             isnan(f) ? "NaN" : "infinity");
        i = (int64_t)f;
        ok = true;
    }
    if (!ok) return p[0] ? tmpl_ref(p[0]) : tmpl_or_nomem(r, tmpl_new_int(&r->budget, 0));
    return tmpl_or_nomem(r, tmpl_new_int(&r->budget, i));
}

static tmpl_value *f_abs(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("abs", "_");
    (void)p;
    if (v->kind == TMPL_FLOAT) return tmpl_or_nomem(r, tmpl_new_float(&r->budget, fabs(v->u.f)));
    if (v->kind == TMPL_INT || v->kind == TMPL_BOOL) {
        int64_t i = v->kind == TMPL_BOOL ? v->u.b : v->u.i;
        if (i == INT64_MIN) return tmpl_fail(r, MICA_EUNSUPPORTED, "integer overflow");
        return tmpl_or_nomem(r, tmpl_new_int(&r->budget, i < 0 ? -i : i));
    }
    return tmpl_fail(r, MICA_EINVAL, "bad operand type for abs(): '%s'", tmpl_type_name(v));
}

static tmpl_value *f_round(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("round", "precision", "method");
    int64_t prec = p[0] && p[0]->kind == TMPL_INT ? p[0]->u.i : 0;
    const char *method = p[1] && p[1]->kind == TMPL_STR ? p[1]->u.str.s : "common";
    if (!tmpl_is_num(v))
        return tmpl_fail(r, MICA_EINVAL, "type %s doesn't define __round__ method",
                         tmpl_type_name(v));
    if (prec < 0 || prec > 30)
        return tmpl_fail(r, MICA_EUNSUPPORTED, "round: precision %lld", (long long)prec);
    if (strcmp(method, "common") && strcmp(method, "ceil") && strcmp(method, "floor"))
        return tmpl_fail(r, MICA_EINVAL, "method must be common, ceil or floor");
    if (v->kind != TMPL_FLOAT && !strcmp(method, "common")) /* round(int) is that int */
        return tmpl_or_nomem(r, tmpl_new_int(&r->budget, v->kind == TMPL_BOOL ? v->u.b : v->u.i));
    double x = v->kind == TMPL_FLOAT ? v->u.f : v->kind == TMPL_BOOL ? v->u.b : (double)v->u.i;
    double scale = pow(10.0, (double)prec), y;
    if (!strcmp(method, "ceil"))
        y = ceil(x * scale) / scale;
    else if (!strcmp(method, "floor"))
        y = floor(x * scale) / scale;
    else {
        char buf[400]; /* correctly rounded, ties to even, like Python's round() */
        snprintf(buf, sizeof buf, "%.*f", (int)prec, x);
        y = strtod(buf, NULL);
    }
    return tmpl_or_nomem(r, tmpl_new_float(&r->budget, y));
}

static tmpl_value *f_wordcount(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("wordcount", "_");
    (void)p;
    tmpl_value *s = tmpl_to_str(r, v);
    if (!s) return NULL;
    int64_t words = 0;
    bool in_word = false;
    size_t len;
    for (size_t off = 0; off < s->u.str.len; off += len) {
        uint32_t c = tmpl_decode(s->u.str.s + off, s->u.str.len - off, &len);
        bool w = c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                 (c >= 'A' && c <= 'Z') || (c > 0x7F && !tmpl_is_space(c));
        if (w && !in_word) words++;
        in_word = w;
    }
    tmpl_unref(s);
    return tmpl_or_nomem(r, tmpl_new_int(&r->budget, words));
}

/* jinja2's do_format: str(value) % args (or % kwargs). */
static tmpl_value *f_format(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    if (a->n_pos && a->n_kw)
        return tmpl_fail(r, MICA_EINVAL,
                         "can't handle positional and keyword arguments at the same time");
    tmpl_value *s = tmpl_to_str(r, v), *args = NULL, *out = NULL;
    if (!s) return NULL;
    if (a->n_kw) {
        args = tmpl_new_map(&r->budget, TMPL_DICT);
        for (size_t k = 0; args && k < a->n_kw; k++)
            if (!tmpl_map_set(args, tmpl_new_str(&r->budget, a->kw_names[k].s, a->kw_names[k].len),
                              tmpl_ref(a->kw[k]))) {
                tmpl_unref(args);
                args = NULL;
            }
    } else {
        args = tmpl_new_seq(&r->budget, TMPL_TUPLE, a->n_pos);
        for (size_t k = 0; args && k < a->n_pos; k++)
            if (!tmpl_seq_push(args, tmpl_ref(a->pos[k]))) {
                tmpl_unref(args);
                args = NULL;
            }
    }
    out = args ? tmpl_str_percent(r, s, args) : tmpl_fail_nomem(r);
    tmpl_unref(args);
    tmpl_unref(s);
    return out;
}

/* ---- the table ------------------------------------------------------------------------- */

static const tmpl_filter_def value_filters[] = {
    {"abs", f_abs, false},
    {"attr", f_attr, false},
    {"capitalize", f_capitalize, false},
    {"count", f_length, false},
    {"d", f_default, false},
    {"default", f_default, false},
    {"e", f_escape, false},
    {"escape", f_escape, false},
    {"float", f_float, false},
    {"format", f_format, false},
    {"indent", f_indent, false},
    {"int", f_int, false},
    {"length", f_length, false},
    {"lower", f_lower, false},
    {"replace", f_replace, false},
    {"round", f_round, false},
    {"safe", f_safe, false},
    {"string", f_string, false},
    {"title", f_title, false},
    {"tojson", f_tojson, false},
    {"trim", f_trim, false},
    {"upper", f_upper, false},
    {"wordcount", f_wordcount, false},
};

#define N_VALUE_FILTERS (sizeof value_filters / sizeof value_filters[0])

/* Filter ids: value_filters first, then tmpl_seq_filters. */
static const tmpl_filter_def *filter_def(int id)
{
    return (size_t)id < N_VALUE_FILTERS ? &value_filters[id]
                                        : &tmpl_seq_filters[(size_t)id - N_VALUE_FILTERS];
}

/* jinja2's generator filters raise only when iterated. */
static tmpl_value *apply(tmpl_run *r, const tmpl_filter_def *f, tmpl_value *v, const tmpl_args *a)
{
    tmpl_value *out = f->fn(r, v, a);
    return out || !f->lazy ? out : tmpl_defer_error(r);
}

/* jinja2 builtins mica does not implement: a clearer message than "no filter named". */
static const char *const unsupported[] = {
    "batch",  "center",   "filesizeformat", "forceescape", "format",   "groupby",
    "pprint", "random",   "slice",          "striptags",   "truncate", "urlencode",
    "urlize", "wordwrap", "xmlattr",        NULL,
};

int tmpl_filter_id(tmpl_sv name)
{
    for (size_t i = 0; i < N_VALUE_FILTERS + tmpl_n_seq_filters; i++)
        if (tmpl_sv_eq(name, filter_def((int)i)->name)) return (int)i;
    return -1;
}

bool tmpl_filter_unsupported(tmpl_sv name)
{
    for (const char *const *u = unsupported; *u; u++)
        if (tmpl_sv_eq(name, *u)) return true;
    return false;
}

/* jinja2 words it "No filter named 'x' found." in a compiled template, and without "found"
 * when a filter is looked up by name (map('x')). */
static tmpl_value *unknown_filter(tmpl_run *r, tmpl_sv name, bool by_name)
{
    if (tmpl_filter_unsupported(name))
        return tmpl_fail(r, MICA_EUNSUPPORTED, "the filter '%.*s' is not supported", (int)name.len,
                         name.s);
    return tmpl_fail(r, MICA_EINVAL, "No filter named '%.*s'%s.", (int)name.len, name.s,
                     by_name ? "" : " found");
}

tmpl_value *tmpl_filter(tmpl_run *r, const tmpl_node *n, tmpl_value *v, const tmpl_args *a)
{
    if (n->id < 0) return unknown_filter(r, n->name, false);
    return apply(r, filter_def(n->id), v, a);
}

tmpl_value *tmpl_filter_by_name(tmpl_run *r, tmpl_sv name, tmpl_value *v, const tmpl_args *a)
{
    int id = tmpl_filter_id(name);
    if (id < 0) return unknown_filter(r, name, true);
    return apply(r, filter_def(id), v, a);
}
