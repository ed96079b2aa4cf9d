/*
 * tmpl_filter_seq.c - jinja2's filters over sequences, as jinja2 3.1 runs them with
 * autoescape=False: list, first / last, join, sum, items, dictsort, sort (stable, case-blind
 * by default), min / max, unique, reverse, and the generator filters map, select, reject,
 * selectattr and rejectattr (whose errors jinja2 raises only when they are iterated, see
 * tmpl_defer_error). Looked up through tmpl_filter.c's tables.
 */
#include "tmpl_int.h"

#include <stdlib.h>

static tmpl_value *new_seq(tmpl_run *r, tmpl_kind kind)
{
    return tmpl_or_nomem(r, tmpl_new_seq(&r->budget, kind, 0));
}

static bool push(tmpl_run *r, tmpl_value *seq, tmpl_value *item)
{
    return tmpl_seq_push(seq, item) || (tmpl_fail_nomem(r), false);
}

/* jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0. */
static tmpl_value *attr_get(tmpl_run *r, tmpl_value *item, const tmpl_value *attr)
{
    if (attr->kind != TMPL_STR) return tmpl_getitem(r, item, (tmpl_value *)attr);
    tmpl_value *cur = tmpl_ref(item);
    const char *s = attr->u.str.s, *end = s + attr->u.str.len;
    while (cur) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        size_t n = dot ? (size_t)(dot - s) : (size_t)(end - s);
        bool digits = n > 0;
        for (size_t i = 0; i < n; i++) digits = digits && s[i] >= '0' && s[i] <= '9';
        tmpl_value *key = digits ? tmpl_new_int(&r->budget, strtoll(s, NULL, 10))
                                 : tmpl_new_str(&r->budget, s, n);
        tmpl_value *next = key ? tmpl_getitem(r, cur, key) : tmpl_fail_nomem(r);
        tmpl_unref(key);
        tmpl_unref(cur);
        cur = next;
        if (!dot) break;
        s = dot + 1;
    }
    return cur;
}

/* ---- stable sorting ---------------------------------------------------------------------- */

typedef struct sorter {
    tmpl_run *r;
    tmpl_value **keys;
    bool lower, reverse, failed;
} sorter;

static bool before(sorter *s, size_t x, size_t y) /* keys[y] < keys[x] */
{
    int c = tmpl_order(s->r, s->keys[y], s->keys[x], s->lower);
    if (c == -2) s->failed = true;
    return s->reverse ? c > 0 : c < 0;
}

static void merge_sort(sorter *s, size_t *idx, size_t *tmp, size_t n)
{
    if (n < 2 || s->failed) return;
    size_t mid = n / 2, i = 0, j = mid, k = 0;
    merge_sort(s, idx, tmp, mid);
    merge_sort(s, idx + mid, tmp, n - mid);
    while (i < mid && j < n && !s->failed)
        tmp[k++] = before(s, idx[i], idx[j]) ? idx[j++] : idx[i++];
    while (i < mid) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

/* Returns a new list of items ordered by keys (parallel arrays). */
static tmpl_value *sorted(tmpl_run *r, tmpl_value *const *items, tmpl_value **keys, size_t n,
                          bool lower, bool reverse)
{
    size_t *idx = malloc((n + 1) * sizeof *idx), *tmp = malloc((n + 1) * sizeof *tmp);
    tmpl_value *out = idx && tmp ? tmpl_new_seq(&r->budget, TMPL_LIST, n) : NULL;
    if (!out) {
        free(idx);
        free(tmp);
        return tmpl_fail_nomem(r);
    }
    for (size_t i = 0; i < n; i++) idx[i] = i;
    sorter s = {r, keys, lower, reverse, false};
    merge_sort(&s, idx, tmp, n);
    for (size_t i = 0; !s.failed && i < n; i++) tmpl_seq_push(out, tmpl_ref(items[idx[i]]));
    free(idx);
    free(tmp);
    if (s.failed) {
        tmpl_unref(out);
        return NULL;
    }
    return out;
}

/* The keys of seq's items: the item, or its attribute. Caller frees with free_keys. */
static tmpl_value **keys_of(tmpl_run *r, tmpl_value *seq, const tmpl_value *attr, int pos)
{
    size_t n = seq->u.seq.len;
    tmpl_value **keys = calloc(n + 1, sizeof *keys);
    if (!keys) return tmpl_fail_nomem(r);
    for (size_t i = 0; i < n; i++) {
        tmpl_value *item = seq->u.seq.v[i];
        if (pos >= 0)
            keys[i] = tmpl_ref(item->u.seq.v[pos]);
        else if (attr)
            keys[i] = attr_get(r, item, attr);
        else
            keys[i] = tmpl_ref(item);
        if (!keys[i]) {
            for (size_t k = 0; k < i; k++) tmpl_unref(keys[k]);
            free(keys);
            return NULL;
        }
    }
    return keys;
}

static void free_keys(tmpl_value **keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++) tmpl_unref(keys[i]);
    free(keys);
}

static tmpl_value *f_sort(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("sort", "reverse", "case_sensitive", "attribute");
    tmpl_value *seq = tmpl_iterate(r, v);
    if (!seq) return NULL;
    tmpl_value **keys = keys_of(r, seq, p[2] && p[2]->kind != TMPL_NONE ? p[2] : NULL, -1);
    tmpl_value *out = keys ? sorted(r, seq->u.seq.v, keys, seq->u.seq.len, !tmpl_arg_true(p[1]),
                                    tmpl_arg_true(p[0]))
                           : NULL;
    free_keys(keys, seq->u.seq.len);
    tmpl_unref(seq);
    return out;
}

/* dict.items() as a list of (key, value) tuples. */
static tmpl_value *item_pairs(tmpl_run *r, tmpl_value *d, tmpl_kind kind)
{
    tmpl_value *out = tmpl_new_seq(&r->budget, kind, d->u.map.len);
    for (size_t i = 0; out && i < d->u.map.len; i++) {
        tmpl_value *t = tmpl_new_seq(&r->budget, TMPL_TUPLE, 2);
        if (t && (!tmpl_seq_push(t, tmpl_ref(d->u.map.k[i])) ||
                  !tmpl_seq_push(t, tmpl_ref(d->u.map.v[i])))) {
            tmpl_unref(t);
            t = NULL;
        }
        if (!tmpl_seq_push(out, t)) {
            tmpl_unref(out);
            out = NULL;
        }
    }
    return tmpl_or_nomem(r, out);
}

static tmpl_value *f_dictsort(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("dictsort", "case_sensitive", "by", "reverse");
    if (v->kind == TMPL_UNDEFINED) return tmpl_fail_undef(r, v);
    if (v->kind != TMPL_DICT)
        return tmpl_fail(r, MICA_EINVAL, "'%s' object has no attribute 'items'", tmpl_type_name(v));
    int pos = 0;
    if (p[1] && p[1]->kind == TMPL_STR && !strcmp(p[1]->u.str.s, "value"))
        pos = 1;
    else if (p[1] && !(p[1]->kind == TMPL_STR && !strcmp(p[1]->u.str.s, "key")))
        return tmpl_fail(r, MICA_EINVAL, "You can only sort by either \"key\" or \"value\"");
    tmpl_value *pairs = item_pairs(r, v, TMPL_LIST);
    if (!pairs) return NULL;
    tmpl_value **keys = keys_of(r, pairs, NULL, pos);
    tmpl_value *out = keys ? sorted(r, pairs->u.seq.v, keys, pairs->u.seq.len, !tmpl_arg_true(p[0]),
                                    tmpl_arg_true(p[2]))
                           : NULL;
    free_keys(keys, pairs->u.seq.len);
    tmpl_unref(pairs);
    return out;
}

static tmpl_value *f_items(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("items", "_");
    (void)p;
    if (v->kind == TMPL_UNDEFINED) return new_seq(r, TMPL_GENERATOR);
    if (v->kind == TMPL_DICT) return item_pairs(r, v, TMPL_GENERATOR);
    /* jinja2's do_items is a generator: the TypeError comes when it is iterated */
    tmpl_value *g = new_seq(r, TMPL_GENERATOR), *msg;
    if (!g) return NULL;
    g->flags |= TMPL_F_RAISES;
    msg = tmpl_new_str(&r->budget, "Can only get item pairs from a mapping.", 39);
    if (!push(r, g, msg)) {
        tmpl_unref(g);
        return NULL;
    }
    return g;
}

/* min / max: the first extreme item (by attribute, case-insensitive unless asked). */
static tmpl_value *extreme(tmpl_run *r, tmpl_value *v, const tmpl_args *a, bool max)
{
    TMPL_BIND(max ? "max" : "min", "case_sensitive", "attribute");
    tmpl_value *seq = tmpl_iterate(r, v);
    if (!seq) return NULL;
    size_t n = seq->u.seq.len;
    tmpl_value *out = NULL;
    if (n == 0) {
        tmpl_unref(seq);
        return tmpl_or_nomem(
            r, tmpl_undef_hint(&r->budget, 0, "No aggregated item, sequence was empty."));
    }
    tmpl_value **keys = keys_of(r, seq, p[1] && p[1]->kind != TMPL_NONE ? p[1] : NULL, -1);
    if (keys) {
        size_t best = 0;
        bool ok = true;
        for (size_t i = 1; ok && i < n; i++) {
            int c = tmpl_order(r, keys[i], keys[best], !tmpl_arg_true(p[0]));
            ok = c != -2;
            if (ok && (max ? c > 0 : c < 0)) best = i;
        }
        if (ok) out = tmpl_ref(seq->u.seq.v[best]);
    }
    free_keys(keys, n);
    tmpl_unref(seq);
    return out;
}

static tmpl_value *f_max(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return extreme(r, v, a, true);
}

static tmpl_value *f_min(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return extreme(r, v, a, false);
}

static tmpl_value *f_unique(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("unique", "case_sensitive", "attribute");
    tmpl_value *seq = tmpl_iterate(r, v);
    if (!seq) return NULL;
    size_t n = seq->u.seq.len;
    tmpl_value **keys = keys_of(r, seq, p[1] && p[1]->kind != TMPL_NONE ? p[1] : NULL, -1);
    tmpl_value *out = keys ? new_seq(r, TMPL_GENERATOR) : NULL;
    for (size_t i = 0; out && i < n; i++) {
        bool seen = false;
        if (!tmpl_work(r, 64 * i)) {
            tmpl_unref(out);
            out = NULL;
            break;
        }
        for (size_t k = 0; !seen && k < i; k++)
            seen = tmpl_arg_true(p[0]) || keys[i]->kind != TMPL_STR || keys[k]->kind != TMPL_STR
                       ? tmpl_equal(keys[k], keys[i])
                       : tmpl_order(r, keys[k], keys[i], true) == 0;
        if (!seen && !push(r, out, tmpl_ref(seq->u.seq.v[i]))) {
            tmpl_unref(out);
            out = NULL;
        }
    }
    free_keys(keys, n);
    tmpl_unref(seq);
    return out;
}

/* ---- sequences --------------------------------------------------------------------------- */

static tmpl_value *f_list(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("list", "_");
    (void)p;
    tmpl_value *seq = tmpl_iterate(r, v), *out = seq ? new_seq(r, TMPL_LIST) : NULL;
    for (size_t i = 0; out && i < seq->u.seq.len; i++)
        if (!push(r, out, tmpl_ref(seq->u.seq.v[i]))) {
            tmpl_unref(out);
            out = NULL;
        }
    tmpl_unref(seq);
    return out;
}

static tmpl_value *f_first(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("first", "_");
    (void)p;
    tmpl_value *seq = tmpl_iterate(r, v), *out = NULL;
    if (!seq) return NULL;
    if (seq->u.seq.len)
        out = tmpl_ref(seq->u.seq.v[0]);
    else
        out =
            tmpl_or_nomem(r, tmpl_undef_hint(&r->budget, 0, "No first item, sequence was empty."));
    tmpl_unref(seq);
    return out;
}

static tmpl_value *f_last(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("last", "_");
    (void)p;
    if (!tmpl_is_seq(v) && v->kind != TMPL_STR && v->kind != TMPL_DICT && v->kind != TMPL_UNDEFINED)
        return tmpl_fail(r, MICA_EINVAL, "'%s' object is not reversible", tmpl_type_name(v));
    tmpl_value *seq = tmpl_iterate(r, v), *out = NULL;
    if (!seq) return NULL;
    if (seq->u.seq.len)
        out = tmpl_ref(seq->u.seq.v[seq->u.seq.len - 1]);
    else
        out = tmpl_or_nomem(r, tmpl_undef_hint(&r->budget, 0, "No last item, sequence was empty."));
    tmpl_unref(seq);
    return out;
}

static tmpl_value *f_reverse(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("reverse", "_");
    (void)p;
    if (v->kind == TMPL_STR) {
        tmpl_value *m1 = tmpl_new_int(&r->budget, -1);
        tmpl_value *out = m1 ? tmpl_slice(r, v, NULL, NULL, m1) : tmpl_fail_nomem(r);
        tmpl_unref(m1);
        return out;
    }
    tmpl_value *seq = tmpl_iterate(r, v);
    if (!seq) return NULL;
    tmpl_value *out = new_seq(r, tmpl_is_seq(v) ? TMPL_GENERATOR : TMPL_LIST);
    for (size_t i = seq->u.seq.len; out && i-- > 0;)
        if (!push(r, out, tmpl_ref(seq->u.seq.v[i]))) {
            tmpl_unref(out);
            out = NULL;
        }
    tmpl_unref(seq);
    return out;
}

static tmpl_value *f_join(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("join", "d", "attribute");
    tmpl_value *seq = tmpl_iterate(r, v);
    if (!seq) return NULL;
    core_buf b;
    core_buf_init(&b, r->max_output);
    bool ok = core_buf_append(&b, "", 0), failed = false;
    for (size_t i = 0; ok && i < seq->u.seq.len; i++) {
        tmpl_value *item = p[1] ? attr_get(r, seq->u.seq.v[i], p[1]) : tmpl_ref(seq->u.seq.v[i]);
        if (!item) {
            failed = true;
            break;
        }
        ok = (!i || !p[0] || tmpl_write_str(&b, p[0])) && tmpl_write_str(&b, item);
        tmpl_unref(item);
    }
    tmpl_unref(seq);
    if (failed || !ok) {
        core_buf_free(&b);
        return failed ? NULL : tmpl_fail(r, MICA_ERANGE, "a string longer than %zu bytes", b.max);
    }
    return tmpl_or_nomem(r, tmpl_new_str_take(&r->budget, b.data, b.len));
}

static tmpl_value *f_sum(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    TMPL_BIND("sum", "attribute", "start");
    tmpl_value *seq = tmpl_iterate(r, v);
    if (!seq) return NULL;
    tmpl_value *acc = p[1] ? tmpl_ref(p[1]) : tmpl_or_nomem(r, tmpl_new_int(&r->budget, 0));
    for (size_t i = 0; acc && i < seq->u.seq.len; i++) {
        tmpl_value *item = p[0] ? attr_get(r, seq->u.seq.v[i], p[0]) : tmpl_ref(seq->u.seq.v[i]);
        tmpl_value *next = item ? tmpl_binop(r, OP_ADD, acc, item) : NULL;
        tmpl_unref(item);
        tmpl_unref(acc);
        acc = next;
    }
    tmpl_unref(seq);
    return acc;
}

/* map(attribute=..., default=...) or map('filter', args...): a generator. */
static tmpl_value *f_map(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    const tmpl_value *attr = NULL, *def = NULL;
    tmpl_args rest = *a;
    if (a->n_pos == 0) {
        for (size_t k = 0; k < a->n_kw; k++) {
            if (tmpl_sv_eq(a->kw_names[k], "attribute"))
                attr = a->kw[k];
            else if (tmpl_sv_eq(a->kw_names[k], "default"))
                def = a->kw[k];
            else
                return tmpl_fail(r, MICA_EINVAL, "Unexpected keyword argument '%.*s'",
                                 (int)a->kw_names[k].len, a->kw_names[k].s);
        }
        if (!attr) return tmpl_fail(r, MICA_EINVAL, "map requires a filter argument");
    } else {
        if (a->pos[0]->kind != TMPL_STR)
            return tmpl_fail(r, MICA_EINVAL, "map: the filter name must be a string");
        rest.pos++;
        rest.n_pos--;
    }
    if (!tmpl_truthy(v)) return new_seq(r, TMPL_GENERATOR); /* jinja2: `if value:` */
    tmpl_value *seq = tmpl_iterate(r, v), *out = seq ? new_seq(r, TMPL_GENERATOR) : NULL;
    for (size_t i = 0; out && i < seq->u.seq.len; i++) {
        tmpl_value *item = seq->u.seq.v[i], *m;
        if (attr) {
            m = attr_get(r, item, attr);
            if (m && def && m->kind == TMPL_UNDEFINED) {
                tmpl_unref(m);
                m = tmpl_ref((tmpl_value *)def);
            }
        } else {
            m = tmpl_filter_by_name(r, (tmpl_sv){a->pos[0]->u.str.s, a->pos[0]->u.str.len}, item,
                                    &rest);
        }
        if (!m || !push(r, out, m)) {
            tmpl_unref(out);
            out = NULL;
        }
    }
    tmpl_unref(seq);
    return out;
}

/* select / reject / selectattr / rejectattr: a generator of the items a test keeps. */
static tmpl_value *select_items(tmpl_run *r, tmpl_value *v, const tmpl_args *a, bool by_attr,
                                bool keep)
{
    tmpl_args rest = *a;
    const tmpl_value *attr = NULL;
    if (by_attr) {
        if (!rest.n_pos) return tmpl_fail(r, MICA_EINVAL, "Missing parameter for attribute name");
        attr = rest.pos[0];
        rest.pos++;
        rest.n_pos--;
    }
    const tmpl_value *test = rest.n_pos ? rest.pos[0] : NULL;
    if (test && test->kind != TMPL_STR)
        return tmpl_fail(r, MICA_EINVAL, "select: the test name must be a string");
    if (test) {
        rest.pos++;
        rest.n_pos--;
    }
    if (!tmpl_truthy(v)) return new_seq(r, TMPL_GENERATOR); /* jinja2: `if value:` */
    tmpl_value *seq = tmpl_iterate(r, v), *out = seq ? new_seq(r, TMPL_GENERATOR) : NULL;
    for (size_t i = 0; out && i < seq->u.seq.len; i++) {
        tmpl_value *item = seq->u.seq.v[i];
        tmpl_value *x = attr ? attr_get(r, item, attr) : tmpl_ref(item);
        int t = !x     ? -1
                : test ? tmpl_test_by_name(r, (tmpl_sv){test->u.str.s, test->u.str.len}, x, &rest)
                       : tmpl_truthy(x);
        tmpl_unref(x);
        if (t < 0 || (t == keep && !push(r, out, tmpl_ref(item)))) {
            tmpl_unref(out);
            out = NULL;
        }
    }
    tmpl_unref(seq);
    return out;
}

static tmpl_value *f_select(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return select_items(r, v, a, false, true);
}

static tmpl_value *f_reject(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return select_items(r, v, a, false, false);
}

static tmpl_value *f_selectattr(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return select_items(r, v, a, true, true);
}

static tmpl_value *f_rejectattr(tmpl_run *r, tmpl_value *v, const tmpl_args *a)
{
    return select_items(r, v, a, true, false);
}

/* ---- the table (tmpl_filter.c looks names up here too) ------------------------------------ */

const tmpl_filter_def tmpl_seq_filters[] = {
    {"dictsort", f_dictsort, false},
    {"first", f_first, false},
    {"items", f_items, false},
    {"join", f_join, false},
    {"last", f_last, false},
    {"list", f_list, false},
    {"map", f_map, true},
    {"max", f_max, false},
    {"min", f_min, false},
    {"reject", f_reject, true},
    {"rejectattr", f_rejectattr, true},
    {"reverse", f_reverse, false},
    {"select", f_select, true},
    {"selectattr", f_selectattr, true},
    {"sort", f_sort, false},
    {"sum", f_sum, false},
    {"unique", f_unique, true},
};

const size_t tmpl_n_seq_filters = sizeof tmpl_seq_filters / sizeof tmpl_seq_filters[0];
