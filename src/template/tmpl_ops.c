/*
 * tmpl_ops.c - Python's operators on template values: truthiness, ==, ordering (<, sorting),
 * `in`, + - * / // % ** and unary minus with Python's int / float rules and its exact
 * TypeError messages, string and list concatenation (with markupsafe's escaping when one
 * side is Markup), ~ and str(). Called by tmpl_eval.c and the filters.
 */
#include "tmpl_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

bool tmpl_truthy(const tmpl_value *v)
{
    switch ((tmpl_kind)v->kind) {
    case TMPL_UNDEFINED:
    case TMPL_NONE:
        return false;
    case TMPL_BOOL:
        return v->u.b;
    case TMPL_INT:
        return v->u.i != 0;
    case TMPL_FLOAT:
        return v->u.f != 0;
    case TMPL_STR:
        return v->u.str.len != 0;
    case TMPL_LIST:
    case TMPL_TUPLE:
        return v->u.seq.len != 0;
    case TMPL_DICT:
        return v->u.map.len != 0;
    default:
        return true;
    }
}

static double num(const tmpl_value *v)
{
    return v->kind == TMPL_FLOAT ? v->u.f : v->kind == TMPL_BOOL ? (double)v->u.b : (double)v->u.i;
}

static int64_t ival(const tmpl_value *v)
{
    return v->kind == TMPL_BOOL ? v->u.b : v->u.i;
}

#define COMPARE_MAX_DEPTH 200

static bool equal_at(const tmpl_value *a, const tmpl_value *b, int depth)
{
    if (a == b) return true;
    if (tmpl_is_num(a) && tmpl_is_num(b)) {
        if (a->kind != TMPL_FLOAT && b->kind != TMPL_FLOAT) return ival(a) == ival(b);
        return num(a) == num(b);
    }
    if (a->kind != b->kind || depth > COMPARE_MAX_DEPTH) return false;
    switch ((tmpl_kind)a->kind) {
    case TMPL_NONE:
    case TMPL_UNDEFINED:
        return true;
    case TMPL_STR:
        return a->u.str.len == b->u.str.len && !memcmp(a->u.str.s, b->u.str.s, a->u.str.len);
    case TMPL_LIST:
    case TMPL_TUPLE:
        if (a->u.seq.len != b->u.seq.len) return false;
        for (size_t i = 0; i < a->u.seq.len; i++)
            if (!equal_at(a->u.seq.v[i], b->u.seq.v[i], depth + 1)) return false;
        return true;
    case TMPL_DICT:
        if (a->u.map.len != b->u.map.len) return false;
        for (size_t i = 0; i < a->u.map.len; i++) {
            const tmpl_value *w = NULL;
            for (size_t k = 0; !w && k < b->u.map.len; k++)
                if (equal_at(b->u.map.k[k], a->u.map.k[i], depth + 1)) w = b->u.map.v[k];
            if (!w || !equal_at(a->u.map.v[i], w, depth + 1)) return false;
        }
        return true;
    default:
        return false;
    }
}

bool tmpl_equal(const tmpl_value *a, const tmpl_value *b)
{
    return equal_at(a, b, 0);
}

/* ---- ordering ---------------------------------------------------------------------------- */

static int cmp_str(const tmpl_value *a, const tmpl_value *b, bool lower)
{
    const char *s = a->u.str.s, *t = b->u.str.s;
    size_t n = a->u.str.len, m = b->u.str.len;
    if (!lower) {
        int c = memcmp(s, t, n < m ? n : m);
        return c ? (c < 0 ? -1 : 1) : n < m ? -1 : n > m;
    }
    size_t i = 0, j = 0, li, lj;
    while (i < n && j < m) {
        uint32_t x = tmpl_lower_cp(tmpl_decode(s + i, n - i, &li));
        uint32_t y = tmpl_lower_cp(tmpl_decode(t + j, m - j, &lj));
        if (x != y) return x < y ? -1 : 1;
        i += li;
        j += lj;
    }
    return i < n ? 1 : j < m ? -1 : 0;
}

static int order_op(tmpl_run *r, tmpl_value *a, tmpl_value *b, bool lower, const char *sym,
                    int depth)
{
    if (depth > COMPARE_MAX_DEPTH)
        return tmpl_fail(r, MICA_EINVAL, "maximum recursion depth exceeded in comparison"), -2;
    if (tmpl_is_num(a) && tmpl_is_num(b)) {
        if (a->kind != TMPL_FLOAT && b->kind != TMPL_FLOAT)
            return ival(a) < ival(b) ? -1 : ival(a) > ival(b);
        double x = num(a), y = num(b);
        return x < y ? -1 : x > y;
    }
    if (a->kind == TMPL_STR && b->kind == TMPL_STR) return cmp_str(a, b, lower);
    if (a->kind == b->kind && tmpl_is_seq(a)) {
        size_t n = a->u.seq.len < b->u.seq.len ? a->u.seq.len : b->u.seq.len;
        for (size_t i = 0; i < n; i++) {
            if (tmpl_equal(a->u.seq.v[i], b->u.seq.v[i])) continue;
            return order_op(r, a->u.seq.v[i], b->u.seq.v[i], lower, sym, depth + 1);
        }
        return a->u.seq.len < b->u.seq.len ? -1 : a->u.seq.len > b->u.seq.len;
    }
    if (a->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, a), -2;
    if (b->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, b), -2;
    tmpl_fail(r, MICA_EINVAL, "'%s' not supported between instances of '%s' and '%s'", sym,
              tmpl_type_name(a), tmpl_type_name(b));
    return -2;
}

int tmpl_order(tmpl_run *r, tmpl_value *a, tmpl_value *b, bool lower)
{
    return order_op(r, a, b, lower, "<", 0);
}

static bool str_find(const char *s, size_t n, const char *t, size_t m)
{
    if (m == 0) return true;
    for (size_t i = 0; i + m <= n; i++)
        if (s[i] == t[0] && !memcmp(s + i, t, m)) return true;
    return false;
}

int tmpl_contains(tmpl_run *r, tmpl_value *c, tmpl_value *item)
{
    switch ((tmpl_kind)c->kind) {
    case TMPL_STR:
        if (!tmpl_work(r, c->u.str.len)) return -1;
        if (item->kind != TMPL_STR) {
            tmpl_fail(r, MICA_EINVAL, "'in <string>' requires string as left operand, not %s",
                      tmpl_type_name(item));
            return -1;
        }
        return str_find(c->u.str.s, c->u.str.len, item->u.str.s, item->u.str.len);
    case TMPL_DICT:
        if (!tmpl_hashable(r, item)) return -1;
        return tmpl_map_get(c, item) != NULL;
    case TMPL_UNDEFINED:
        return 0;
    case TMPL_LIST:
    case TMPL_TUPLE:
    case TMPL_GENERATOR: {
        tmpl_value *seq = tmpl_iterate(r, c);
        if (!seq) return -1;
        int found = 0;
        if (!tmpl_work(r, 64 * seq->u.seq.len)) {
            tmpl_unref(seq);
            return -1;
        }
        for (size_t i = 0; !found && i < seq->u.seq.len; i++)
            found = tmpl_equal(seq->u.seq.v[i], item);
        tmpl_unref(seq);
        return found;
    }
    default:
        tmpl_fail(r, MICA_EINVAL, "argument of type '%s' is not iterable", tmpl_type_name(c));
        return -1;
    }
}

bool tmpl_hashable(tmpl_run *r, const tmpl_value *key)
{
    if (key->kind != TMPL_LIST && key->kind != TMPL_DICT) return true;
    return tmpl_failb(r, MICA_EINVAL, "unhashable type: '%s'", tmpl_type_name(key));
}

int tmpl_compare(tmpl_run *r, int op, tmpl_value *a, tmpl_value *b)
{
    if (op == OP_EQ || op == OP_NE) {
        size_t n = tmpl_value_len(a) < tmpl_value_len(b) ? tmpl_value_len(a) : tmpl_value_len(b);
        if (!tmpl_work(r, 64 * n)) return -1;
        return tmpl_equal(a, b) == (op == OP_EQ);
    }
    switch (op) {
    case OP_IN:
        return tmpl_contains(r, b, a);
    case OP_NOTIN: {
        int c = tmpl_contains(r, b, a);
        return c < 0 ? -1 : !c;
    }
    default: {
        static const char *const sym[] = {"<", "<=", ">", ">="};
        int c = order_op(r, a, b, false, sym[op - OP_LT], 0);
        if (c == -2) return -1;
        if (op == OP_LT) return c < 0;
        if (op == OP_LE) return c <= 0;
        if (op == OP_GT) return c > 0;
        return c >= 0;
    }
    }
}

/* ---- arithmetic -------------------------------------------------------------------------- */

static tmpl_value *new_int(tmpl_run *r, int64_t i)
{
    tmpl_value *v = tmpl_new_int(&r->budget, i);
    return v ? v : tmpl_fail_nomem(r);
}

static tmpl_value *new_float(tmpl_run *r, double f)
{
    tmpl_value *v = tmpl_new_float(&r->budget, f);
    return v ? v : tmpl_fail_nomem(r);
}

static tmpl_value *overflow(tmpl_run *r)
{
    return tmpl_fail(r, MICA_EUNSUPPORTED, "integer overflow (template integers are 64-bit)");
}

static const char *op_symbol(int op)
{
    static const char *const s[] = {"+", "-", "*", "/", "//", "%", "** or pow()", "~"};
    return op >= OP_ADD && op <= OP_TILDE ? s[op] : "?";
}

static tmpl_value *int_pow(tmpl_run *r, int64_t base, int64_t e)
{
    if (e < 0) {
        if (base == 0) return tmpl_fail(r, MICA_EINVAL, "0.0 cannot be raised to a negative power");
        return new_float(r, pow((double)base, (double)e));
    }
    int64_t acc = 1;
    while (e-- > 0)
        if (__builtin_mul_overflow(acc, base, &acc)) return overflow(r);
    return new_int(r, acc);
}

static tmpl_value *int_arith(tmpl_run *r, int op, int64_t x, int64_t y)
{
    int64_t z;
    switch (op) {
    case OP_ADD:
        return __builtin_add_overflow(x, y, &z) ? overflow(r) : new_int(r, z);
    case OP_SUB:
        return __builtin_sub_overflow(x, y, &z) ? overflow(r) : new_int(r, z);
    case OP_MUL:
        return __builtin_mul_overflow(x, y, &z) ? overflow(r) : new_int(r, z);
    case OP_DIV:
        if (y == 0) return tmpl_fail(r, MICA_EINVAL, "division by zero");
        return new_float(r, (double)x / (double)y);
    case OP_FLOORDIV:
    case OP_MOD:
        if (y == 0)
            return tmpl_fail(r, MICA_EINVAL,
                             op == OP_MOD ? "integer modulo by zero"
                                          : "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) return op == OP_MOD ? new_int(r, 0) : overflow(r);
        z = op == OP_MOD ? x % y : x / y;
        if (op == OP_MOD && z != 0 && ((z < 0) != (y < 0))) z += y;
        if (op == OP_FLOORDIV && (x % y != 0) && ((x < 0) != (y < 0))) z--;
        return new_int(r, z);
    default:
        return int_pow(r, x, y);
    }
}

static tmpl_value *float_arith(tmpl_run *r, int op, double x, double y)
{
    switch (op) {
    case OP_ADD:
        return new_float(r, x + y);
    case OP_SUB:
        return new_float(r, x - y);
    case OP_MUL:
        return new_float(r, x * y);
    case OP_DIV:
        if (y == 0) return tmpl_fail(r, MICA_EINVAL, "float division by zero");
        return new_float(r, x / y);
    case OP_FLOORDIV:
        if (y == 0) return tmpl_fail(r, MICA_EINVAL, "float floor division by zero");
        return new_float(r, floor(x / y));
    case OP_MOD: {
        if (y == 0) return tmpl_fail(r, MICA_EINVAL, "float modulo");
        double m = fmod(x, y);
        if (m != 0 && ((m < 0) != (y < 0))) m += y;
        return new_float(r, m);
    }
    default:
        if (x == 0 && y < 0)
            return tmpl_fail(r, MICA_EINVAL, "0.0 cannot be raised to a negative power");
        return new_float(r, pow(x, y));
    }
}

/* str + str; markupsafe escapes the plain side when the other is Markup. */
static tmpl_value *concat_str(tmpl_run *r, const tmpl_value *a, const tmpl_value *b)
{
    bool markup = (a->flags | b->flags) & TMPL_F_MARKUP;
    core_buf buf;
    core_buf_init(&buf, r->max_output);
    bool ok = core_buf_append(&buf, "", 0);
    const tmpl_value *parts[2] = {a, b};
    for (int i = 0; ok && i < 2; i++) {
        const tmpl_value *p = parts[i];
        ok = markup && !(p->flags & TMPL_F_MARKUP)
                 ? tmpl_write_escaped(&buf, p->u.str.s, p->u.str.len)
                 : core_buf_append(&buf, p->u.str.s, p->u.str.len);
    }
    if (!ok) {
        core_buf_free(&buf);
        return tmpl_fail(r, MICA_ERANGE, "a string longer than %zu bytes", r->max_output);
    }
    tmpl_value *v = tmpl_new_str_take(&r->budget, buf.data, buf.len);
    if (v && markup) v->flags |= TMPL_F_MARKUP;
    return v ? v : tmpl_fail_nomem(r);
}

static tmpl_value *concat_seq(tmpl_run *r, const tmpl_value *a, const tmpl_value *b)
{
    tmpl_value *v = tmpl_new_seq(&r->budget, (tmpl_kind)a->kind, a->u.seq.len + b->u.seq.len);
    for (size_t i = 0; v && i < a->u.seq.len + b->u.seq.len; i++) {
        tmpl_value *item = i < a->u.seq.len ? a->u.seq.v[i] : b->u.seq.v[i - a->u.seq.len];
        if (!tmpl_seq_push(v, tmpl_ref(item))) {
            tmpl_unref(v);
            v = NULL;
        }
    }
    return v ? v : tmpl_fail_nomem(r);
}

/* str * n, list * n */
static tmpl_value *repeat(tmpl_run *r, const tmpl_value *s, int64_t n)
{
    if (n < 0) n = 0;
    if (s->kind == TMPL_STR) {
        if (s->u.str.len && (uint64_t)n > r->max_output / s->u.str.len)
            return tmpl_fail(r, MICA_ERANGE, "a string longer than %zu bytes", r->max_output);
        core_buf buf;
        core_buf_init(&buf, r->max_output);
        bool ok = core_buf_append(&buf, "", 0);
        for (int64_t i = 0; ok && i < n; i++) ok = core_buf_append(&buf, s->u.str.s, s->u.str.len);
        tmpl_value *v = ok ? tmpl_new_str_take(&r->budget, buf.data, buf.len) : NULL;
        if (!ok) core_buf_free(&buf);
        if (v) v->flags |= s->flags & TMPL_F_MARKUP;
        return v ? v : tmpl_fail_nomem(r);
    }
    if (s->u.seq.len && (uint64_t)n > r->budget.max / s->u.seq.len) return tmpl_fail_nomem(r);
    tmpl_value *v = tmpl_new_seq(&r->budget, (tmpl_kind)s->kind, 0);
    for (int64_t i = 0; v && i < n; i++)
        for (size_t k = 0; v && k < s->u.seq.len; k++)
            if (!tmpl_seq_push(v, tmpl_ref(s->u.seq.v[k]))) {
                tmpl_unref(v);
                v = NULL;
            }
    return v ? v : tmpl_fail_nomem(r);
}

static tmpl_value *type_error(tmpl_run *r, int op, const tmpl_value *a, const tmpl_value *b)
{
    if (op == OP_ADD && (a->kind == TMPL_STR || tmpl_is_seq(a))) {
        const char *t = a->kind == TMPL_STR ? "str" : a->kind == TMPL_LIST ? "list" : "tuple";
        return tmpl_fail(r, MICA_EINVAL, "can only concatenate %s (not \"%s\") to %s", t,
                         tmpl_type_name(b), t);
    }
    bool a_seq = a->kind == TMPL_STR || tmpl_is_seq(a),
         b_seq = b->kind == TMPL_STR || tmpl_is_seq(b);
    if (op == OP_MUL && (a_seq || b_seq))
        return tmpl_fail(r, MICA_EINVAL, "can't multiply sequence by non-int of type '%s'",
                         tmpl_type_name(a_seq ? b : a));
    return tmpl_fail(r, MICA_EINVAL, "unsupported operand type(s) for %s: '%s' and '%s'",
                     op_symbol(op), tmpl_type_name(a), tmpl_type_name(b));
}

static tmpl_value *tilde(tmpl_run *r, const tmpl_value *a, const tmpl_value *b)
{
    core_buf buf;
    core_buf_init(&buf, r->max_output);
    if (!core_buf_append(&buf, "", 0) || !tmpl_write_str(&buf, a) || !tmpl_write_str(&buf, b)) {
        core_buf_free(&buf);
        return tmpl_fail(r, MICA_ERANGE, "a string longer than %zu bytes", r->max_output);
    }
    tmpl_value *v = tmpl_new_str_take(&r->budget, buf.data, buf.len);
    return v ? v : tmpl_fail_nomem(r);
}

tmpl_value *tmpl_binop(tmpl_run *r, int op, tmpl_value *a, tmpl_value *b)
{
    if (op == OP_TILDE) return tilde(r, a, b);
    if (op == OP_MOD && a->kind == TMPL_STR) return tmpl_str_percent(r, a, b);
    if (a->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, a);
    if (b->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, b);
    if (tmpl_is_num(a) && tmpl_is_num(b)) {
        if (a->kind == TMPL_FLOAT || b->kind == TMPL_FLOAT)
            return float_arith(r, op, num(a), num(b));
        return int_arith(r, op, ival(a), ival(b));
    }
    if (op == OP_ADD && a->kind == TMPL_STR && b->kind == TMPL_STR) return concat_str(r, a, b);
    if (op == OP_ADD && a->kind == b->kind && tmpl_is_seq(a)) return concat_seq(r, a, b);
    if (op == OP_MUL) {
        bool a_rep = a->kind == TMPL_STR || tmpl_is_seq(a),
             b_rep = b->kind == TMPL_STR || tmpl_is_seq(b);
        if (a_rep && (b->kind == TMPL_INT || b->kind == TMPL_BOOL)) return repeat(r, a, ival(b));
        if (b_rep && (a->kind == TMPL_INT || a->kind == TMPL_BOOL)) return repeat(r, b, ival(a));
    }
    return type_error(r, op, a, b);
}

tmpl_value *tmpl_negate(tmpl_run *r, tmpl_value *v, bool minus)
{
    if (v->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, v);
    if (v->kind == TMPL_FLOAT) return new_float(r, minus ? -v->u.f : v->u.f);
    if (v->kind == TMPL_INT || v->kind == TMPL_BOOL) {
        int64_t i = ival(v);
        if (minus && i == INT64_MIN) return overflow(r);
        return new_int(r, minus ? -i : i);
    }
    return tmpl_fail(r, MICA_EINVAL, "bad operand type for unary %s: '%s'", minus ? "-" : "+",
                     tmpl_type_name(v));
}

tmpl_value *tmpl_to_str(tmpl_run *r, tmpl_value *v)
{
    if (v->kind == TMPL_STR) return tmpl_ref(v);
    core_buf buf;
    core_buf_init(&buf, r->max_output);
    if (!core_buf_append(&buf, "", 0) || !tmpl_write_str(&buf, v)) {
        core_buf_free(&buf);
        return tmpl_fail(r, MICA_ERANGE, "a string longer than %zu bytes", r->max_output);
    }
    tmpl_value *s = tmpl_new_str_take(&r->budget, buf.data, buf.len);
    return s ? s : tmpl_fail_nomem(r);
}
