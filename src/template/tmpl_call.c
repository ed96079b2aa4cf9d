/*
 * tmpl_call.c - what templates can call besides macros: jinja2's globals as transformers
 * sets them up (range with the sandbox's cap, namespace, dict, raise_exception,
 * strftime_now), the methods a value offers (str methods live in tmpl_method.c; dict and list
 * methods here, with the immutable sandbox refusing the mutating ones), loop.cycle, and
 * Python-style argument binding for all builtins. Called by tmpl_eval.c and tmpl_filter.c.
 */
#include "tmpl_int.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_RANGE 100000 /* jinja2.sandbox.MAX_RANGE */

/* ---- argument binding -------------------------------------------------------------------- */

bool tmpl_bind(tmpl_run *r, const char *fname, const char *const *params, size_t n_params,
               const tmpl_args *a, tmpl_value **out)
{
    for (size_t i = 0; i < n_params; i++) out[i] = NULL;
    if (a->n_pos > n_params)
        return tmpl_failb(r, MICA_EINVAL, "%s() takes at most %zu arguments (%zu given)", fname,
                          n_params, a->n_pos);
    for (size_t i = 0; i < a->n_pos; i++) out[i] = a->pos[i];
    for (size_t k = 0; k < a->n_kw; k++) {
        size_t j = 0;
        while (j < n_params && !tmpl_sv_eq(a->kw_names[k], params[j])) j++;
        if (j == n_params)
            return tmpl_failb(r, MICA_EINVAL, "%s() got an unexpected keyword argument '%.*s'",
                              fname, (int)a->kw_names[k].len, a->kw_names[k].s);
        if (out[j])
            return tmpl_failb(r, MICA_EINVAL, "%s() got multiple values for argument '%s'", fname,
                              params[j]);
        out[j] = a->kw[k];
    }
    return true;
}

/* ---- globals ----------------------------------------------------------------------------- */

#define GLOBAL_FN(id)                                                                              \
    {                                                                                              \
        TMPL_IMMORTAL, TMPL_FUNC, 0, NULL, 0, NULL,                                                \
        {                                                                                          \
            .fn = { id, NULL }                                                                     \
        }                                                                                          \
    }
static tmpl_value g_range = GLOBAL_FN(FN_RANGE), g_namespace = GLOBAL_FN(FN_NAMESPACE),
                  g_dict = GLOBAL_FN(FN_DICT), g_raise = GLOBAL_FN(FN_RAISE),
                  g_strftime = GLOBAL_FN(FN_STRFTIME), g_other = GLOBAL_FN(FN_GLOBAL_UNSUPPORTED);

tmpl_value *tmpl_global(tmpl_sv name)
{
    if (tmpl_sv_eq(name, "range")) return &g_range;
    if (tmpl_sv_eq(name, "namespace")) return &g_namespace;
    if (tmpl_sv_eq(name, "dict")) return &g_dict;
    if (tmpl_sv_eq(name, "raise_exception")) return &g_raise;
    if (tmpl_sv_eq(name, "strftime_now")) return &g_strftime;
    if (tmpl_sv_eq(name, "cycler") || tmpl_sv_eq(name, "joiner") || tmpl_sv_eq(name, "lipsum"))
        return &g_other;
    return NULL;
}

static bool want_int(tmpl_run *r, const tmpl_value *v, int64_t *out)
{
    if (v->kind == TMPL_INT || v->kind == TMPL_BOOL) {
        *out = v->kind == TMPL_BOOL ? v->u.b : v->u.i;
        return true;
    }
    if (v->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, v), false;
    return tmpl_failb(r, MICA_EINVAL, "'%s' object cannot be interpreted as an integer",
                      tmpl_type_name(v));
}

static tmpl_value *fn_range(tmpl_run *r, const tmpl_args *a)
{
    if (a->n_kw) return tmpl_fail(r, MICA_EINVAL, "range() takes no keyword arguments");
    if (a->n_pos < 1 || a->n_pos > 3)
        return tmpl_fail(r, MICA_EINVAL, "range expected 1 to 3 arguments, got %zu", a->n_pos);
    int64_t v[3] = {0, 0, 1};
    for (size_t i = 0; i < a->n_pos; i++)
        if (!want_int(r, a->pos[i], &v[a->n_pos == 1 ? 1 : i])) return NULL;
    if (v[2] == 0) return tmpl_fail(r, MICA_EINVAL, "range() arg 3 must not be zero");
    int64_t n = v[2] > 0 ? (v[1] > v[0] ? (v[1] - v[0] - 1) / v[2] + 1 : 0)
                         : (v[0] > v[1] ? (v[0] - v[1] - 1) / -v[2] + 1 : 0);
    if (n > MAX_RANGE)
        return tmpl_fail(r, MICA_EINVAL,
                         "Range too big. The sandbox blocks ranges larger than "
                         "MAX_RANGE (%d).",
                         MAX_RANGE);
    tmpl_value *list = tmpl_new_seq(&r->budget, TMPL_LIST, (size_t)n);
    for (int64_t i = 0; list && i < n; i++)
        if (!tmpl_seq_push(list, tmpl_new_int(&r->budget, v[0] + i * v[2]))) {
            tmpl_unref(list);
            list = NULL;
        }
    return list ? list : tmpl_fail_nomem(r);
}

/* namespace(...) / dict(...): an optional mapping, then keyword arguments. */
static tmpl_value *fn_mapping(tmpl_run *r, const tmpl_args *a, tmpl_kind kind)
{
    const char *name = kind == TMPL_NAMESPACE ? "namespace" : "dict";
    if (a->n_pos > 1)
        return tmpl_fail(r, MICA_EINVAL, "%s expected at most 1 argument, got %zu", name, a->n_pos);
    tmpl_value *m = tmpl_new_map(&r->budget, kind);
    if (!m) return tmpl_fail_nomem(r);
    if (kind == TMPL_NAMESPACE && !tmpl_track_namespace(r, m)) {
        tmpl_unref(m);
        return NULL;
    }
    const tmpl_value *init = a->n_pos ? a->pos[0] : NULL;
    if (init && init->kind != TMPL_DICT && init->kind != TMPL_NAMESPACE) {
        tmpl_unref(m);
        return tmpl_fail(r, MICA_EUNSUPPORTED, "%s() from a '%s' is not supported", name,
                         tmpl_type_name(init));
    }
    bool ok = true;
    for (size_t i = 0; init && ok && i < init->u.map.len; i++)
        ok = tmpl_map_set(m, tmpl_ref(init->u.map.k[i]), tmpl_ref(init->u.map.v[i]));
    for (size_t k = 0; ok && k < a->n_kw; k++)
        ok = tmpl_map_set(m, tmpl_new_str(&r->budget, a->kw_names[k].s, a->kw_names[k].len),
                          tmpl_ref(a->kw[k]));
    if (!ok) {
        tmpl_unref(m);
        return tmpl_fail_nomem(r);
    }
    return m;
}

static tmpl_value *fn_raise(tmpl_run *r, const tmpl_args *a)
{
    static const char *const params[] = {"message"};
    tmpl_value *msg;
    if (!tmpl_bind(r, "raise_exception", params, 1, a, &msg)) return NULL;
    if (!msg)
        return tmpl_fail(r, MICA_EINVAL,
                         "raise_exception() missing 1 required positional "
                         "argument: 'message'");
    core_buf b;
    core_buf_init(&b, MICA_ERR_MSG_MAX);
    bool ok = core_buf_append(&b, "", 0) && tmpl_write_str(&b, msg);
    tmpl_fail(r, MICA_EINVAL, "%s", ok ? b.data : "(message too long)");
    core_buf_free(&b);
    return NULL;
}

static tmpl_value *fn_strftime(tmpl_run *r, const tmpl_args *a)
{
    static const char *const params[] = {"format"};
    tmpl_value *fmt;
    if (!tmpl_bind(r, "strftime_now", params, 1, a, &fmt)) return NULL;
    if (!fmt || fmt->kind != TMPL_STR)
        return tmpl_fail(r, MICA_EINVAL, "strftime_now() needs a format string");
    if (fmt->u.str.len == 0) return tmpl_ref(fmt);
    char out[1024];
    size_t n = strftime(out, sizeof out, fmt->u.str.s, &r->now);
    if (n == 0) return tmpl_fail(r, MICA_EUNSUPPORTED, "strftime_now(): result too long");
    tmpl_value *v = tmpl_new_str(&r->budget, out, n);
    return v ? v : tmpl_fail_nomem(r);
}

/* ---- dict, list and loop methods --------------------------------------------------------- */

static tmpl_value *dict_method(tmpl_run *r, int id, tmpl_value *d, const tmpl_args *a)
{
    if (id == FN_DICT_GET) {
        static const char *const params[] = {"key", "default"};
        tmpl_value *p[2];
        if (!tmpl_bind(r, "get", params, 2, a, p)) return NULL;
        if (!p[0]) return tmpl_fail(r, MICA_EINVAL, "get expected at least 1 argument, got 0");
        tmpl_value *v = tmpl_map_get(d, p[0]);
        return tmpl_ref(v ? v : p[1] ? p[1] : tmpl_none());
    }
    if (a->n_pos || a->n_kw) return tmpl_fail(r, MICA_EINVAL, "dict method takes no arguments");
    if (id == FN_DICT_COPY) {
        tmpl_args one = {&d, 1, NULL, NULL, 0};
        return fn_mapping(r, &one, TMPL_DICT);
    }
    tmpl_value *list = tmpl_new_seq(&r->budget, TMPL_LIST, d->u.map.len);
    for (size_t i = 0; list && i < d->u.map.len; i++) {
        tmpl_value *item;
        if (id == FN_DICT_KEYS) {
            item = tmpl_ref(d->u.map.k[i]);
        } else if (id == FN_DICT_VALUES) {
            item = tmpl_ref(d->u.map.v[i]);
        } else {
            item = tmpl_new_seq(&r->budget, TMPL_TUPLE, 2);
            if (item && (!tmpl_seq_push(item, tmpl_ref(d->u.map.k[i])) ||
                         !tmpl_seq_push(item, tmpl_ref(d->u.map.v[i])))) {
                tmpl_unref(item);
                item = NULL;
            }
        }
        if (!tmpl_seq_push(list, item)) {
            tmpl_unref(list);
            list = NULL;
        }
    }
    return list ? list : tmpl_fail_nomem(r);
}

static tmpl_value *list_method(tmpl_run *r, int id, tmpl_value *l, const tmpl_args *a)
{
    if (a->n_pos != 1 || a->n_kw)
        return tmpl_fail(r, MICA_EINVAL, "%s() takes exactly one argument",
                         id == FN_LIST_INDEX ? "index" : "count");
    int64_t count = 0;
    for (size_t i = 0; i < l->u.seq.len; i++) {
        if (!tmpl_equal(l->u.seq.v[i], a->pos[0])) continue;
        if (id == FN_LIST_INDEX) {
            tmpl_value *v = tmpl_new_int(&r->budget, (int64_t)i);
            return v ? v : tmpl_fail_nomem(r);
        }
        count++;
    }
    if (id == FN_LIST_INDEX) return tmpl_fail(r, MICA_EINVAL, "value is not in list");
    tmpl_value *v = tmpl_new_int(&r->budget, count);
    return v ? v : tmpl_fail_nomem(r);
}

static tmpl_value *loop_cycle(tmpl_run *r, tmpl_value *loop, const tmpl_args *a)
{
    if (!a->n_pos) return tmpl_fail(r, MICA_EINVAL, "no items for cycling given");
    return tmpl_ref(a->pos[loop->u.loop.index0 % a->n_pos]);
}

tmpl_value *tmpl_call_fn(tmpl_run *r, const tmpl_value *fn, const tmpl_args *a)
{
    int id = fn->u.fn.id;
    tmpl_value *self = fn->u.fn.self;
    switch (id) {
    case FN_RANGE:
        return fn_range(r, a);
    case FN_NAMESPACE:
        return fn_mapping(r, a, TMPL_NAMESPACE);
    case FN_DICT:
        return fn_mapping(r, a, TMPL_DICT);
    case FN_RAISE:
        return fn_raise(r, a);
    case FN_STRFTIME:
        return fn_strftime(r, a);
    case FN_GLOBAL_UNSUPPORTED:
        return tmpl_fail(r, MICA_EUNSUPPORTED, "cycler, joiner and lipsum are not supported");
    case FN_LOOP_CYCLE:
        return loop_cycle(r, self, a);
    case FN_LIST_INDEX:
    case FN_LIST_COUNT:
        return list_method(r, id, self, a);
    default:
        if (id >= FN_STR_FIRST && id <= FN_STR_LAST) return tmpl_str_method(r, id, self, a);
        return dict_method(r, id, self, a);
    }
}

/* ---- method lookup ----------------------------------------------------------------------- */

typedef struct method_name {
    const char *name;
    int id; /* -1: refused by the immutable sandbox */
} method_name;

static const method_name str_methods[] = {
    {"strip", FN_STR_STRIP},
    {"lstrip", FN_STR_LSTRIP},
    {"rstrip", FN_STR_RSTRIP},
    {"split", FN_STR_SPLIT},
    {"rsplit", FN_STR_RSPLIT},
    {"splitlines", FN_STR_SPLITLINES},
    {"startswith", FN_STR_STARTSWITH},
    {"endswith", FN_STR_ENDSWITH},
    {"replace", FN_STR_REPLACE},
    {"upper", FN_STR_UPPER},
    {"lower", FN_STR_LOWER},
    {"title", FN_STR_TITLE},
    {"capitalize", FN_STR_CAPITALIZE},
    {"find", FN_STR_FIND},
    {"rfind", FN_STR_RFIND},
    {"count", FN_STR_COUNT},
    {"join", FN_STR_JOIN},
    {"isdigit", FN_STR_ISDIGIT},
    {"isalpha", FN_STR_ISALPHA},
    {"isspace", FN_STR_ISSPACE},
    {"isupper", FN_STR_ISUPPER},
    {"islower", FN_STR_ISLOWER},
    {"format", FN_STR_FORMAT},
    {NULL, 0},
};

static const method_name dict_methods[] = {
    {"items", FN_DICT_ITEMS},
    {"keys", FN_DICT_KEYS},
    {"values", FN_DICT_VALUES},
    {"get", FN_DICT_GET},
    {"copy", FN_DICT_COPY},
    {"pop", -1},
    {"popitem", -1},
    {"setdefault", -1},
    {"update", -1},
    {"clear", -1},
    {NULL, 0},
};

static const method_name list_methods[] = {
    {"index", FN_LIST_INDEX},
    {"count", FN_LIST_COUNT},
    {"append", -1},
    {"extend", -1},
    {"insert", -1},
    {"pop", -1},
    {"remove", -1},
    {"reverse", -1},
    {"sort", -1},
    {"clear", -1},
    {NULL, 0},
};

static const method_name tuple_methods[] = {
    {"index", FN_LIST_INDEX},
    {"count", FN_LIST_COUNT},
    {NULL, 0},
};

tmpl_value *tmpl_method(tmpl_run *r, tmpl_value *obj, tmpl_sv name, bool *found)
{
    const method_name *table = obj->kind == TMPL_STR     ? str_methods
                               : obj->kind == TMPL_DICT  ? dict_methods
                               : obj->kind == TMPL_LIST  ? list_methods
                               : obj->kind == TMPL_TUPLE ? tuple_methods
                                                         : NULL;
    *found = false;
    for (; table && table->name; table++) {
        if (!tmpl_sv_eq(name, table->name)) continue;
        *found = true;
        tmpl_value *v;
        if (table->id < 0)
            v = tmpl_undef_hint(&r->budget, TMPL_F_UNSAFE,
                                "access to attribute '%s' of '%s' object is unsafe.", table->name,
                                tmpl_type_name(obj));
        else
            v = tmpl_new_fn(&r->budget, table->id, tmpl_ref(obj));
        return v ? v : tmpl_fail_nomem(r);
    }
    return NULL;
}
