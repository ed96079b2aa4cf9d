/*
 * tmpl_test.c - jinja2's tests (`x is defined`, `x is not none`, `x is string`, ...) with
 * Python's notions behind them: what is a number, a mapping, an iterable, a sequence (an
 * Undefined is iterable and a sequence, as in jinja2), identity for sameas, and the
 * comparison aliases (eq, ==, lt, ...). Called by tmpl_eval.c and the select filters.
 */
#include "tmpl_int.h"

typedef int (*test_fn)(tmpl_run *r, tmpl_value *v, const tmpl_args *a);

/* The one argument of a test such as divisibleby(3) / sameas x; NULL after an error. */
static tmpl_value *one_arg(tmpl_run *r, const char *name, const tmpl_args *a)
{
    static const char *const params[] = {"other"};
    tmpl_value *p;
    if (!tmpl_bind(r, name, params, 1, a, &p)) return NULL;
    if (!p) tmpl_fail(r, MICA_EINVAL, "%s() missing 1 required positional argument", name);
    return p;
}

static int t_defined(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind != TMPL_UNDEFINED;
}
static int t_undefined(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_UNDEFINED;
}
static int t_none(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_NONE;
}
static int t_boolean(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_BOOL;
}
static int t_false(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_BOOL && !v->u.b;
}
static int t_true(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_BOOL && v->u.b;
}
static int t_integer(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_INT;
}
static int t_float(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_FLOAT;
}
static int t_number(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return tmpl_is_num(v);
}
static int t_string(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_STR;
}
static int t_mapping(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_DICT;
}
static int t_iterable(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return tmpl_is_seq(v) || v->kind == TMPL_STR || v->kind == TMPL_DICT ||
           v->kind == TMPL_GENERATOR || v->kind == TMPL_UNDEFINED || v->kind == TMPL_LOOP;
}
static int t_sequence(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return tmpl_is_seq(v) || v->kind == TMPL_STR || v->kind == TMPL_DICT ||
           v->kind == TMPL_UNDEFINED;
}
static int t_callable(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_MACRO || v->kind == TMPL_FUNC;
}
static int t_escaped(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_STR && (v->flags & TMPL_F_MARKUP);
}

static int t_sameas(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    tmpl_value *o = one_arg(r, "sameas", a);
    if (!o) return -1;
    if (v == o) return 1;
    if (v->kind != o->kind) return 0;
    /* None, True, False and small ints are singletons in CPython */
    if (v->kind == TMPL_NONE) return 1;
    if (v->kind == TMPL_BOOL) return v->u.b == o->u.b;
    if (v->kind == TMPL_INT) return v->u.i == o->u.i && v->u.i >= -5 && v->u.i <= 256;
    return 0;
}

static int compare_test(tmpl_run *r, tmpl_value *v, const tmpl_args *a, int op, const char *name)
{
    tmpl_value *o = one_arg(r, name, a);
    return o ? tmpl_compare(r, op, v, o) : -1;
}
static int t_eq(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return compare_test(r, v, a, OP_EQ, "eq");
}
static int t_ne(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return compare_test(r, v, a, OP_NE, "ne");
}
static int t_lt(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return compare_test(r, v, a, OP_LT, "lt");
}
static int t_le(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return compare_test(r, v, a, OP_LE, "le");
}
static int t_gt(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return compare_test(r, v, a, OP_GT, "gt");
}
static int t_ge(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return compare_test(r, v, a, OP_GE, "ge");
}
static int t_in(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return compare_test(r, v, a, OP_IN, "in");
}

/* value % by compared with want, with Python's % (so its TypeErrors) */
static int mod_is(tmpl_run *r, tmpl_value *v, tmpl_value *by, int64_t want)
{
    tmpl_value *m = tmpl_binop(r, OP_MOD, v, by);
    if (!m) return -1;
    int eq = tmpl_is_num(m) &&
             (m->kind == TMPL_FLOAT ? m->u.f == (double)want
                                    : (m->kind == TMPL_BOOL ? m->u.b : m->u.i) == want);
    tmpl_unref(m);
    return eq;
}

static int t_odd(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    tmpl_value two = {TMPL_IMMORTAL, TMPL_INT, 0, NULL, 0, NULL, {.i = 2}};
    return mod_is(r, v, &two, 1);
}
static int t_even(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    tmpl_value two = {TMPL_IMMORTAL, TMPL_INT, 0, NULL, 0, NULL, {.i = 2}};
    return mod_is(r, v, &two, 0);
}
static int t_divisibleby(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    tmpl_value *o = one_arg(r, "divisibleby", a);
    return o ? mod_is(r, v, o, 0) : -1;
}

static int case_test(tmpl_run *r, tmpl_value *v, char mode)
{
    tmpl_value *s = tmpl_to_str(r, v);
    if (!s) return -1;
    bool any = false, bad = false;
    size_t len;
    for (size_t off = 0; off < s->u.str.len; off += len) {
        uint32_t c = tmpl_decode(s->u.str.s + off, s->u.str.len - off, &len);
        uint32_t up = tmpl_upper_cp(c), lo = tmpl_lower_cp(c);
        if (up == c && lo == c) continue;
        any = true;
        bad = bad || (mode == 'u' ? up != c : lo != c);
    }
    tmpl_unref(s);
    return any && !bad;
}
static int t_lower(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return case_test(r, v, 'l');
}
static int t_upper(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return case_test(r, v, 'u');
}

static int t_filter(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_STR && tmpl_filter_id((tmpl_sv){v->u.str.s, v->u.str.len}) >= 0;
}
static int t_test(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return v->kind == TMPL_STR && tmpl_test_id((tmpl_sv){v->u.str.s, v->u.str.len}) >= 0;
}

static const struct {
    const char *name;
    test_fn fn;
} tests[] = {
    {"defined", t_defined},
    {"undefined", t_undefined},
    {"none", t_none},
    {"boolean", t_boolean},
    {"false", t_false},
    {"true", t_true},
    {"integer", t_integer},
    {"float", t_float},
    {"number", t_number},
    {"string", t_string},
    {"mapping", t_mapping},
    {"iterable", t_iterable},
    {"sequence", t_sequence},
    {"callable", t_callable},
    {"sameas", t_sameas},
    {"escaped", t_escaped},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"==", t_eq},
    {"ne", t_ne},
    {"!=", t_ne},
    {"lt", t_lt},
    {"lessthan", t_lt},
    {"<", t_lt},
    {"le", t_le},
    {"<=", t_le},
    {"gt", t_gt},
    {"greaterthan", t_gt},
    {">", t_gt},
    {"ge", t_ge},
    {">=", t_ge},
    {"in", t_in},
    {"odd", t_odd},
    {"even", t_even},
    {"divisibleby", t_divisibleby},
    {"lower", t_lower},
    {"upper", t_upper},
    {"filter", t_filter},
    {"test", t_test},
};

int tmpl_test_id(tmpl_sv name)
{
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (tmpl_sv_eq(name, tests[i].name)) return (int)i;
    return -1;
}

static int unknown_test(tmpl_run *r, tmpl_sv name, bool by_name)
{
    tmpl_fail(r, MICA_EINVAL, "No test named '%.*s'%s.", (int)name.len, name.s,
              by_name ? "" : " found");
    return -1;
}

int tmpl_test_by_name(tmpl_run *r, tmpl_sv name, tmpl_value *v, const tmpl_args *a)
{
    int id = tmpl_test_id(name);
    return id < 0 ? unknown_test(r, name, true) : tests[id].fn(r, v, a);
}

int tmpl_test(tmpl_run *r, const tmpl_node *n, tmpl_value *v, const tmpl_args *a)
{
    return n->id < 0 ? unknown_test(r, n->name, false) : tests[n->id].fn(r, v, a);
}
