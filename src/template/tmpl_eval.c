/*
 * tmpl_eval.c - evaluates expression trees: names (variables, then jinja2's globals, then a
 * lenient Undefined), attribute and item access with jinja2's sandbox rules (methods first
 * for `.`, items first for `[]`, an Undefined that remembers why), Python slicing, loop
 * variables, calls, filters, tests, boolean and conditional operators, literals; and Python's
 * iteration and len(). Operators are tmpl_ops.c's; called by tmpl_render.c.
 */
#include "tmpl_int.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_ARGS 32

/* ---- Undefined with a reason ------------------------------------------------------------- */

static tmpl_value *undef_attr(tmpl_run *r, const tmpl_value *obj, tmpl_sv name)
{
    char what[64];
    tmpl_object_repr(obj, what, sizeof what);
    tmpl_value *u =
        tmpl_undef_hint(&r->budget, 0, "'%s' has no attribute '%.*s'", what, (int)name.len, name.s);
    return u ? u : tmpl_fail_nomem(r);
}

static tmpl_value *undef_item(tmpl_run *r, const tmpl_value *obj, const tmpl_value *key)
{
    if (key->kind == TMPL_STR) return undef_attr(r, obj, (tmpl_sv){key->u.str.s, key->u.str.len});
    char what[64], k[64];
    tmpl_object_repr(obj, what, sizeof what);
    core_buf b;
    core_buf_init(&b, sizeof k - 1);
    if (!tmpl_write_repr(&b, key))
        snprintf(k, sizeof k, "%s", "...");
    else
        snprintf(k, sizeof k, "%s", b.data);
    core_buf_free(&b);
    tmpl_value *u = tmpl_undef_hint(&r->budget, 0, "%s has no element %s", what, k);
    return u ? u : tmpl_fail_nomem(r);
}

/* ---- loop variables ---------------------------------------------------------------------- */

static tmpl_value *loop_attr(tmpl_run *r, tmpl_value *loop, tmpl_sv name)
{
    size_t i = loop->u.loop.index0, n = loop->u.loop.items->u.seq.len;
    tmpl_value *const *items = loop->u.loop.items->u.seq.v;
    int64_t iv;
    if (tmpl_sv_eq(name, "index0"))
        iv = (int64_t)i;
    else if (tmpl_sv_eq(name, "index"))
        iv = (int64_t)i + 1;
    else if (tmpl_sv_eq(name, "revindex"))
        iv = (int64_t)(n - i);
    else if (tmpl_sv_eq(name, "revindex0"))
        iv = (int64_t)(n - i) - 1;
    else if (tmpl_sv_eq(name, "length"))
        iv = (int64_t)n;
    else if (tmpl_sv_eq(name, "depth"))
        iv = 1;
    else if (tmpl_sv_eq(name, "depth0"))
        iv = 0;
    else if (tmpl_sv_eq(name, "first"))
        return tmpl_bool(i == 0);
    else if (tmpl_sv_eq(name, "last"))
        return tmpl_bool(i + 1 == n);
    else if (tmpl_sv_eq(name, "previtem")) {
        if (i > 0) return tmpl_ref(items[i - 1]);
        tmpl_value *u = tmpl_undef_hint(&r->budget, 0, "there is no previous item");
        return u ? u : tmpl_fail_nomem(r);
    } else if (tmpl_sv_eq(name, "nextitem")) {
        if (i + 1 < n) return tmpl_ref(items[i + 1]);
        tmpl_value *u = tmpl_undef_hint(&r->budget, 0, "there is no next item");
        return u ? u : tmpl_fail_nomem(r);
    } else if (tmpl_sv_eq(name, "cycle")) {
        tmpl_value *f = tmpl_new_fn(&r->budget, FN_LOOP_CYCLE, tmpl_ref(loop));
        return f ? f : tmpl_fail_nomem(r);
    } else
        return undef_attr(r, loop, name);
    tmpl_value *v = tmpl_new_int(&r->budget, iv);
    return v ? v : tmpl_fail_nomem(r);
}

/* ---- attribute, item, slice -------------------------------------------------------------- */

tmpl_value *tmpl_getattr(tmpl_run *r, tmpl_value *obj, tmpl_sv name)
{
    switch ((tmpl_kind)obj->kind) {
    case TMPL_UNDEFINED:
        return tmpl_fail_undef(r, obj);
    case TMPL_LOOP:
        return loop_attr(r, obj, name);
    case TMPL_NAMESPACE: {
        tmpl_value *v = tmpl_map_get_sv(obj, name);
        return v ? tmpl_ref(v) : undef_attr(r, obj, name);
    }
    default: {
        bool found = false;
        tmpl_value *m = tmpl_method(r, obj, name, &found);
        if (found) return m;
        if (obj->kind == TMPL_DICT) {
            tmpl_value *v = tmpl_map_get_sv(obj, name);
            if (v) return tmpl_ref(v);
        }
        return undef_attr(r, obj, name);
    }
    }
}

/* Python's index rules for sequences of n items: negative counts from the end. */
static bool seq_index(const tmpl_value *key, size_t n, size_t *out)
{
    if (key->kind != TMPL_INT && key->kind != TMPL_BOOL) return false;
    int64_t i = key->kind == TMPL_BOOL ? key->u.b : key->u.i;
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return false;
    *out = (size_t)i;
    return true;
}

static tmpl_value *str_char(tmpl_run *r, const tmpl_value *s, size_t i)
{
    size_t off = tmpl_str_offset(r, s, i), len;
    tmpl_decode(s->u.str.s + off, s->u.str.len - off, &len);
    tmpl_value *v = tmpl_new_str(&r->budget, s->u.str.s + off, len);
    if (v) v->flags |= s->flags & TMPL_F_MARKUP;
    return v ? v : tmpl_fail_nomem(r);
}

tmpl_value *tmpl_getitem(tmpl_run *r, tmpl_value *obj, tmpl_value *key)
{
    size_t i;
    switch ((tmpl_kind)obj->kind) {
    case TMPL_UNDEFINED:
        return tmpl_fail_undef(r, obj);
    case TMPL_DICT: {
        tmpl_value *v = tmpl_map_get(obj, key);
        if (v) return tmpl_ref(v);
        break;
    }
    case TMPL_LIST:
    case TMPL_TUPLE:
        if (seq_index(key, obj->u.seq.len, &i)) return tmpl_ref(obj->u.seq.v[i]);
        break;
    case TMPL_STR:
        if (seq_index(key, tmpl_str_chars(r, obj), &i)) return str_char(r, obj, i);
        break;
    default:
        break;
    }
    if (key->kind == TMPL_STR) {
        tmpl_sv name = {key->u.str.s, key->u.str.len};
        if (obj->kind == TMPL_NAMESPACE || obj->kind == TMPL_LOOP)
            return tmpl_getattr(r, obj, name);
        bool found = false;
        tmpl_value *m = tmpl_method(r, obj, name, &found);
        if (found) return m;
    }
    return undef_item(r, obj, key);
}

static bool slice_bound(const tmpl_value *v, int64_t *out, bool *given)
{
    *given = false;
    if (!v || v->kind == TMPL_NONE) return true;
    if (v->kind != TMPL_INT && v->kind != TMPL_BOOL) return false;
    *out = v->kind == TMPL_BOOL ? v->u.b : v->u.i;
    *given = true;
    return true;
}

/* PySlice_AdjustIndices: start / stop clamped for n items; returns the number selected. */
static size_t adjust_slice(int64_t n, int64_t *start, bool has_start, int64_t *stop, bool has_stop,
                           int64_t step)
{
    if (!has_start)
        *start = step < 0 ? n - 1 : 0;
    else if (*start < 0 && (*start += n) < 0)
        *start = step < 0 ? -1 : 0;
    else if (*start >= n)
        *start = step < 0 ? n - 1 : n;
    if (!has_stop)
        *stop = step < 0 ? -1 : n;
    else if (*stop < 0 && (*stop += n) < 0)
        *stop = step < 0 ? -1 : 0;
    else if (*stop >= n)
        *stop = step < 0 ? n - 1 : n;
    if (step > 0) return *start < *stop ? (size_t)((*stop - *start - 1) / step + 1) : 0;
    return *stop < *start ? (size_t)((*start - *stop - 1) / -step + 1) : 0;
}

static tmpl_value *slice_str(tmpl_run *r, const tmpl_value *s, int64_t start, int64_t step,
                             size_t count, size_t n_chars)
{
    size_t *offs = NULL; /* byte offset of every code point, for non-ASCII text */
    if (!(s->flags & TMPL_F_ASCII)) {
        if (!(offs = malloc((n_chars + 1) * sizeof *offs))) return tmpl_fail_nomem(r);
        size_t off = 0, len, k = 0;
        for (; off < s->u.str.len; off += len, k++) {
            offs[k] = off;
            tmpl_decode(s->u.str.s + off, s->u.str.len - off, &len);
        }
        offs[k] = off;
    }
    core_buf b;
    core_buf_init(&b, s->u.str.len);
    bool ok = core_buf_append(&b, "", 0);
    for (size_t k = 0; ok && k < count; k++) {
        size_t i = (size_t)(start + (int64_t)k * step);
        size_t off = offs ? offs[i] : i, end = offs ? offs[i + 1] : i + 1;
        ok = core_buf_append(&b, s->u.str.s + off, end - off);
    }
    free(offs);
    tmpl_value *v = ok ? tmpl_new_str_take(&r->budget, b.data, b.len) : NULL;
    if (!ok) core_buf_free(&b);
    if (v) v->flags |= s->flags & TMPL_F_MARKUP;
    return v ? v : tmpl_fail_nomem(r);
}

tmpl_value *tmpl_slice(tmpl_run *r, tmpl_value *obj, tmpl_value *start_v, tmpl_value *stop_v,
                       tmpl_value *step_v)
{
    if (obj->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, obj);
    int64_t start = 0, stop = 0, step = 1;
    bool has_start, has_stop, has_step;
    bool ints = slice_bound(start_v, &start, &has_start) && slice_bound(stop_v, &stop, &has_stop) &&
                slice_bound(step_v, &step, &has_step);
    bool seq = tmpl_is_seq(obj) || obj->kind == TMPL_STR;
    if (!ints || !seq) {
        char what[64];
        tmpl_object_repr(obj, what, sizeof what);
        tmpl_value *u = tmpl_undef_hint(&r->budget, 0, "%s has no element slice(...)", what);
        return u ? u : tmpl_fail_nomem(r);
    }
    if (step == 0) return tmpl_fail(r, MICA_EINVAL, "slice step cannot be zero");
    bool is_str = obj->kind == TMPL_STR;
    int64_t n = (int64_t)(is_str ? tmpl_str_chars(r, obj) : obj->u.seq.len);
    size_t count = adjust_slice(n, &start, has_start, &stop, has_stop, step);
    if (is_str) return slice_str(r, obj, start, step, count, (size_t)n);
    tmpl_value *v = tmpl_new_seq(&r->budget, (tmpl_kind)obj->kind, count);
    for (size_t k = 0; v && k < count; k++)
        if (!tmpl_seq_push(v, tmpl_ref(obj->u.seq.v[start + (int64_t)k * step]))) {
            tmpl_unref(v);
            v = NULL;
        }
    return v ? v : tmpl_fail_nomem(r);
}

/* ---- iteration and len() ----------------------------------------------------------------- */

static tmpl_value *chars_of(tmpl_run *r, const tmpl_value *s)
{
    tmpl_value *list = tmpl_new_seq(&r->budget, TMPL_LIST, tmpl_cp_count(s->u.str.s, s->u.str.len));
    for (size_t off = 0, len; list && off < s->u.str.len; off += len) {
        tmpl_decode(s->u.str.s + off, s->u.str.len - off, &len);
        tmpl_value *c = tmpl_new_str(&r->budget, s->u.str.s + off, len);
        if (c) c->flags |= s->flags & TMPL_F_MARKUP;
        if (!tmpl_seq_push(list, c)) {
            tmpl_unref(list);
            list = NULL;
        }
    }
    return list ? list : tmpl_fail_nomem(r);
}

tmpl_value *tmpl_iterate(tmpl_run *r, tmpl_value *v)
{
    switch ((tmpl_kind)v->kind) {
    case TMPL_LIST:
    case TMPL_TUPLE:
        return tmpl_ref(v);
    case TMPL_GENERATOR:
        if (v->flags & TMPL_F_RAISES)
            return tmpl_fail(r, MICA_EINVAL, "%s", v->u.seq.v[0]->u.str.s);
        if (v->flags & TMPL_F_CONSUMED) {
            tmpl_value *e = tmpl_new_seq(&r->budget, TMPL_LIST, 0);
            return e ? e : tmpl_fail_nomem(r);
        }
        v->flags |= TMPL_F_CONSUMED;
        return tmpl_ref(v);
    case TMPL_DICT: {
        tmpl_value *keys = tmpl_new_seq(&r->budget, TMPL_LIST, v->u.map.len);
        for (size_t i = 0; keys && i < v->u.map.len; i++)
            if (!tmpl_seq_push(keys, tmpl_ref(v->u.map.k[i]))) {
                tmpl_unref(keys);
                keys = NULL;
            }
        return keys ? keys : tmpl_fail_nomem(r);
    }
    case TMPL_STR:
        return chars_of(r, v);
    case TMPL_UNDEFINED: {
        tmpl_value *e = tmpl_new_seq(&r->budget, TMPL_LIST, 0);
        return e ? e : tmpl_fail_nomem(r);
    }
    default:
        return tmpl_fail(r, MICA_EINVAL, "'%s' object is not iterable", tmpl_type_name(v));
    }
}

int64_t tmpl_len(tmpl_run *r, tmpl_value *v)
{
    switch ((tmpl_kind)v->kind) {
    case TMPL_STR:
        return (int64_t)tmpl_str_chars(r, v);
    case TMPL_LIST:
    case TMPL_TUPLE:
        return (int64_t)v->u.seq.len;
    case TMPL_DICT:
        return (int64_t)v->u.map.len;
    case TMPL_UNDEFINED:
        return 0;
    default:
        tmpl_fail(r, MICA_EINVAL, "object of type '%s' has no len()", tmpl_type_name(v));
        return -1;
    }
}

/* ---- calls, filters, tests --------------------------------------------------------------- */

tmpl_value *tmpl_call(tmpl_run *r, tmpl_value *callee, const tmpl_args *a)
{
    switch ((tmpl_kind)callee->kind) {
    case TMPL_MACRO:
        return tmpl_call_macro(r, callee, a);
    case TMPL_FUNC:
        return tmpl_call_fn(r, callee, a);
    case TMPL_UNDEFINED:
        return tmpl_fail_undef(r, callee);
    default:
        return tmpl_fail(r, MICA_EINVAL, "'%s' object is not callable", tmpl_type_name(callee));
    }
}

/* Evaluates n's positional kids and keyword kids2 into a (values owned by the caller). */
static bool eval_args(tmpl_run *r, const tmpl_node *n, tmpl_value **pos, tmpl_value **kw,
                      tmpl_args *a)
{
    if (n->n_kids > MAX_ARGS || n->n_kids2 > MAX_ARGS)
        return tmpl_failb(r, MICA_EUNSUPPORTED, "more than %d arguments in a call", MAX_ARGS);
    *a = (tmpl_args){pos, 0, n->names, kw, 0};
    for (; a->n_pos < n->n_kids; a->n_pos++)
        if (!(pos[a->n_pos] = tmpl_eval(r, n->kids[a->n_pos]))) return false;
    for (; a->n_kw < n->n_kids2; a->n_kw++)
        if (!(kw[a->n_kw] = tmpl_eval(r, n->kids2[a->n_kw]))) return false;
    return true;
}

static void free_args(tmpl_args *a)
{
    for (size_t i = 0; i < a->n_pos; i++) tmpl_unref(a->pos[i]);
    for (size_t i = 0; i < a->n_kw; i++) tmpl_unref(a->kw[i]);
}

/* Calls, filters and tests: evaluate the callee / operand and the arguments, then apply. */
static tmpl_value *eval_applied(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *pos[MAX_ARGS], *kw[MAX_ARGS];
    tmpl_args a = {0};
    tmpl_value *subject = tmpl_eval(r, n->a), *v = NULL;
    if (!subject) return NULL;
    if (eval_args(r, n, pos, kw, &a)) {
        r->line = n->line;
        if (n->kind == N_CALL) {
            v = tmpl_call(r, subject, &a);
        } else if (n->kind == N_FILTER) {
            v = tmpl_filter(r, n, subject, &a);
        } else {
            int t = tmpl_test(r, n, subject, &a);
            v = t < 0 ? NULL : tmpl_bool(t);
        }
    }
    free_args(&a);
    tmpl_unref(subject);
    return v;
}

/* ---- the evaluator ----------------------------------------------------------------------- */

static tmpl_value *eval_name(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *v = tmpl_lookup(r, n->name);
    if (v) return tmpl_ref(v);
    if ((v = tmpl_global(n->name))) return v;
    v = tmpl_undef_hint(&r->budget, 0, "'%.*s' is undefined", (int)n->name.len, n->name.s);
    return v ? v : tmpl_fail_nomem(r);
}

static tmpl_value *eval_compare(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *left = tmpl_eval(r, n->a);
    for (size_t i = 0; left && i < n->n_kids; i++) {
        tmpl_value *right = tmpl_eval(r, n->kids[i]);
        if (!right) {
            tmpl_unref(left);
            return NULL;
        }
        r->line = n->line;
        int c = tmpl_compare(r, n->ops[i], left, right);
        tmpl_unref(left);
        left = right;
        if (c <= 0) {
            tmpl_unref(left);
            return c < 0 ? NULL : tmpl_bool(false);
        }
    }
    if (!left) return NULL;
    tmpl_unref(left);
    return tmpl_bool(true);
}

static tmpl_value *eval_literal(tmpl_run *r, const tmpl_node *n)
{
    tmpl_kind kind = n->kind == N_LIST ? TMPL_LIST : n->kind == N_TUPLE ? TMPL_TUPLE : TMPL_DICT;
    tmpl_value *v = kind == TMPL_DICT ? tmpl_new_map(&r->budget, kind)
                                      : tmpl_new_seq(&r->budget, kind, n->n_kids);
    if (!v) return tmpl_fail_nomem(r);
    for (size_t i = 0; i < n->n_kids; i++) {
        tmpl_value *item = tmpl_eval(r, n->kids[i]), *val = NULL;
        bool ok = item != NULL;
        if (ok && kind == TMPL_DICT) {
            ok = tmpl_hashable(r, item) && (val = tmpl_eval(r, n->kids2[i])) != NULL;
            if (ok && !tmpl_map_set(v, item, val))
                ok = tmpl_fail_nomem(r) != NULL;
            else if (!ok)
                tmpl_unref(item);
        } else if (ok && !tmpl_seq_push(v, item)) {
            ok = tmpl_fail_nomem(r) != NULL;
        }
        if (!ok) {
            tmpl_unref(v);
            return NULL;
        }
    }
    return v;
}

static tmpl_value *eval_cond(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *c = tmpl_eval(r, n->b);
    if (!c) return NULL;
    bool t = tmpl_truthy(c);
    tmpl_unref(c);
    if (t) return tmpl_eval(r, n->a);
    if (n->c) return tmpl_eval(r, n->c);
    tmpl_value *u = tmpl_undef_hint(&r->budget, 0,
                                    "the inline if-expression on line %d evaluated to false and "
                                    "no else section was defined.",
                                    n->line);
    return u ? u : tmpl_fail_nomem(r);
}

static tmpl_value *eval_access(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *obj = tmpl_eval(r, n->a), *v = NULL, *b = NULL, *c = NULL, *d = NULL;
    if (!obj) return NULL;
    bool ok = true;
    if (n->kind != N_GETATTR) {
        ok = (!n->b || (b = tmpl_eval(r, n->b))) && (!n->c || (c = tmpl_eval(r, n->c))) &&
             (!n->d || (d = tmpl_eval(r, n->d)));
    }
    if (ok) {
        r->line = n->line;
        if (n->kind == N_GETATTR)
            v = tmpl_getattr(r, obj, n->name);
        else if (n->kind == N_GETITEM)
            v = tmpl_getitem(r, obj, b);
        else
            v = tmpl_slice(r, obj, b, c, d);
    }
    tmpl_unref(b);
    tmpl_unref(c);
    tmpl_unref(d);
    tmpl_unref(obj);
    return v;
}

static tmpl_value *eval_logic(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *a = tmpl_eval(r, n->a);
    if (!a) return NULL;
    if (n->kind == N_NOT) {
        bool t = tmpl_truthy(a);
        tmpl_unref(a);
        return tmpl_bool(!t);
    }
    if (tmpl_truthy(a) == (n->kind == N_OR)) return a;
    tmpl_unref(a);
    return tmpl_eval(r, n->b);
}

static tmpl_value *eval_arith(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *a = tmpl_eval(r, n->a), *b = NULL, *v = NULL;
    if (!a) return NULL;
    if (n->kind == N_NEG || n->kind == N_POS) {
        r->line = n->line;
        v = tmpl_negate(r, a, n->kind == N_NEG);
    } else if ((b = tmpl_eval(r, n->b))) {
        r->line = n->line;
        v = tmpl_binop(r, n->op, a, b);
    }
    tmpl_unref(a);
    tmpl_unref(b);
    return v;
}

static tmpl_value *eval_node(tmpl_run *r, const tmpl_node *n);

tmpl_value *tmpl_eval(tmpl_run *r, const tmpl_node *n)
{
    if (!tmpl_step(r)) return NULL;
    if (r->nesting >= TMPL_MAX_NESTING)
        return tmpl_fail(r, MICA_ERANGE, "the template nests deeper than %d levels",
                         TMPL_MAX_NESTING);
    r->nesting++;
    tmpl_value *v = eval_node(r, n);
    r->nesting--;
    return v;
}

static tmpl_value *eval_node(tmpl_run *r, const tmpl_node *n)
{
    r->line = n->line;
    switch (n->kind) {
    case N_CONST:
        return tmpl_ref(n->value);
    case N_NAME:
        return eval_name(r, n);
    case N_GETATTR:
    case N_GETITEM:
    case N_SLICE:
        return eval_access(r, n);
    case N_CALL:
    case N_FILTER:
    case N_TEST:
        return eval_applied(r, n);
    case N_NOT:
    case N_AND:
    case N_OR:
        return eval_logic(r, n);
    case N_NEG:
    case N_POS:
    case N_BIN:
        return eval_arith(r, n);
    case N_CMP:
        return eval_compare(r, n);
    case N_COND:
        return eval_cond(r, n);
    case N_LIST:
    case N_TUPLE:
    case N_DICT:
        return eval_literal(r, n);
    default:
        return tmpl_fail(r, MICA_EINVAL, "internal error: expression kind %d", n->kind);
    }
}
