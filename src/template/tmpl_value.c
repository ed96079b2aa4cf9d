/*
 * tmpl_value.c - the template values: allocation against a render's memory budget,
 * reference counting, lists / tuples / generators, insertion-ordered dicts and namespaces,
 * and the public constructors of template.h that callers use to build variables in C.
 * Does not know Python semantics beyond storage (tmpl_ops.c, tmpl_str.c do).
 */
#include "tmpl_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static tmpl_value v_undef = {TMPL_IMMORTAL, TMPL_UNDEFINED, 0, NULL, 0, NULL, {0}};
static tmpl_value v_none = {TMPL_IMMORTAL, TMPL_NONE, 0, NULL, 0, NULL, {0}};
static tmpl_value v_true = {TMPL_IMMORTAL, TMPL_BOOL, 0, NULL, 0, NULL, {.b = true}};
static tmpl_value v_false = {TMPL_IMMORTAL, TMPL_BOOL, 0, NULL, 0, NULL, {.b = false}};

static bool charge(tmpl_budget *b, size_t n)
{
    if (!b) return true;
    b->work += n;
    if (n > b->max || b->live > b->max - n) {
        b->refused = true;
        return false;
    }
    b->live += n;
    return true;
}

static void refund(tmpl_budget *b, size_t n)
{
    if (b) b->live -= n;
}

static tmpl_value *new_value(tmpl_budget *b, tmpl_kind kind)
{
    if (!charge(b, sizeof(tmpl_value))) return NULL;
    tmpl_value *v = calloc(1, sizeof *v);
    if (!v) {
        refund(b, sizeof(tmpl_value));
        return NULL;
    }
    v->refs = 1;
    v->kind = (uint8_t)kind;
    v->budget = b;
    v->bytes = sizeof *v;
    return v;
}

tmpl_value *tmpl_ref(tmpl_value *v)
{
    if (v && v->refs != TMPL_IMMORTAL) v->refs++;
    return v;
}

/* Drops a reference held by a value being freed; a child that dies joins the work list. */
static void release(tmpl_value *child, tmpl_value **dead)
{
    if (!child || child->refs == TMPL_IMMORTAL || --child->refs) return;
    child->dead_next = *dead;
    *dead = child;
}

static void free_one(tmpl_value *v, tmpl_value **dead)
{
    switch ((tmpl_kind)v->kind) {
    case TMPL_LIST:
    case TMPL_TUPLE:
    case TMPL_GENERATOR:
        for (size_t i = 0; i < v->u.seq.len; i++) release(v->u.seq.v[i], dead);
        free(v->u.seq.v);
        break;
    case TMPL_DICT:
    case TMPL_NAMESPACE:
        for (size_t i = 0; i < v->u.map.len; i++) {
            release(v->u.map.k[i], dead);
            release(v->u.map.v[i], dead);
        }
        free(v->u.map.k);
        free(v->u.map.v);
        break;
    case TMPL_STR:
    case TMPL_UNDEFINED:
        free(v->u.str.s);
        break;
    case TMPL_FUNC:
        release(v->u.fn.self, dead);
        break;
    case TMPL_LOOP:
        release(v->u.loop.items, dead);
        break;
    default:
        break;
    }
    refund(v->budget, v->bytes);
    free(v);
}

/* Iterative, so that freeing a deeply nested value cannot exhaust the stack. */
void tmpl_unref(tmpl_value *v)
{
    if (!v || v->refs == TMPL_IMMORTAL || --v->refs) return;
    v->dead_next = NULL;
    for (tmpl_value *dead = v; dead;) {
        tmpl_value *d = dead;
        dead = d->dead_next;
        free_one(d, &dead);
    }
}

void tmpl_map_clear(tmpl_value *m)
{
    for (size_t i = 0; i < m->u.map.len; i++) {
        tmpl_unref(m->u.map.k[i]);
        tmpl_unref(m->u.map.v[i]);
    }
    m->u.map.len = 0;
}

tmpl_value *tmpl_undef(void)
{
    return &v_undef;
}

tmpl_value *tmpl_undef_hint(tmpl_budget *b, uint8_t flags, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tmpl_value *v = tmpl_new_str(b, msg, strlen(msg));
    if (!v) return NULL;
    v->kind = TMPL_UNDEFINED;
    v->flags = flags;
    return v;
}

tmpl_value *tmpl_new_int(tmpl_budget *b, int64_t i)
{
    tmpl_value *v = new_value(b, TMPL_INT);
    if (v) v->u.i = i;
    return v;
}

tmpl_value *tmpl_new_float(tmpl_budget *b, double f)
{
    tmpl_value *v = new_value(b, TMPL_FLOAT);
    if (v) v->u.f = f;
    return v;
}

tmpl_value *tmpl_new_str_take(tmpl_budget *b, char *data, size_t len)
{
    if (!charge(b, len + 1)) {
        free(data);
        return NULL;
    }
    tmpl_value *v = new_value(b, TMPL_STR);
    if (!v) {
        refund(b, len + 1);
        free(data);
        return NULL;
    }
    v->u.str.s = data;
    v->u.str.len = len;
    v->bytes += len + 1;
    size_t i = 0;
    while (i < len && (unsigned char)data[i] < 0x80) i++;
    if (i == len) v->flags |= TMPL_F_ASCII;
    return v;
}

tmpl_value *tmpl_new_str(tmpl_budget *b, const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (!d) return NULL;
    if (len) memcpy(d, s, len);
    d[len] = '\0';
    return tmpl_new_str_take(b, d, len);
}

tmpl_value *tmpl_new_seq(tmpl_budget *b, tmpl_kind kind, size_t cap)
{
    tmpl_value *v = new_value(b, kind);
    if (!v || !cap) return v;
    if (!charge(b, cap * sizeof(tmpl_value *))) goto fail;
    v->u.seq.v = malloc(cap * sizeof(tmpl_value *));
    if (!v->u.seq.v) {
        refund(b, cap * sizeof(tmpl_value *));
        goto fail;
    }
    v->u.seq.cap = cap;
    v->bytes += cap * sizeof(tmpl_value *);
    return v;
fail:
    tmpl_unref(v);
    return NULL;
}

/* Grows an array of pointers (one or two in parallel) charged to v's budget. */
static bool grow(tmpl_value *v, tmpl_value ***a, tmpl_value ***b2, size_t *cap)
{
    size_t ncap = *cap ? *cap * 2 : 4;
    size_t per = b2 ? 2 * sizeof(tmpl_value *) : sizeof(tmpl_value *);
    if (ncap > SIZE_MAX / per / 2) return false;
    if (!charge(v->budget, (ncap - *cap) * per)) return false;
    tmpl_value **na = realloc(*a, ncap * sizeof(tmpl_value *));
    if (na) *a = na;
    tmpl_value **nb = NULL;
    if (na && b2) {
        nb = realloc(*b2, ncap * sizeof(tmpl_value *));
        if (nb) *b2 = nb;
    }
    if (!na || (b2 && !nb)) {
        refund(v->budget, (ncap - *cap) * per);
        return false;
    }
    v->bytes += (ncap - *cap) * per;
    *cap = ncap;
    return true;
}

bool tmpl_seq_push(tmpl_value *seq, tmpl_value *item)
{
    if (!item) return false;
    if (seq->u.seq.len == seq->u.seq.cap && !grow(seq, &seq->u.seq.v, NULL, &seq->u.seq.cap)) {
        tmpl_unref(item);
        return false;
    }
    seq->u.seq.v[seq->u.seq.len++] = item;
    return true;
}

tmpl_value *tmpl_new_map(tmpl_budget *b, tmpl_kind kind)
{
    return new_value(b, kind);
}

static bool key_is(const tmpl_value *k, tmpl_sv key)
{
    return k->kind == TMPL_STR && k->u.str.len == key.len && !memcmp(k->u.str.s, key.s, key.len);
}

tmpl_value *tmpl_map_get_sv(const tmpl_value *m, tmpl_sv key)
{
    for (size_t i = 0; i < m->u.map.len; i++)
        if (key_is(m->u.map.k[i], key)) return m->u.map.v[i];
    return NULL;
}

tmpl_value *tmpl_map_get(const tmpl_value *m, const tmpl_value *key)
{
    if (key->kind == TMPL_STR) return tmpl_map_get_sv(m, (tmpl_sv){key->u.str.s, key->u.str.len});
    for (size_t i = 0; i < m->u.map.len; i++)
        if (tmpl_equal(m->u.map.k[i], key)) return m->u.map.v[i];
    return NULL;
}

bool tmpl_map_set(tmpl_value *m, tmpl_value *key, tmpl_value *v)
{
    if (!key || !v) goto fail;
    for (size_t i = 0; i < m->u.map.len; i++) {
        if (tmpl_equal(m->u.map.k[i], key)) {
            tmpl_unref(m->u.map.v[i]);
            m->u.map.v[i] = v;
            tmpl_unref(key);
            return true;
        }
    }
    if (m->u.map.len == m->u.map.cap && !grow(m, &m->u.map.k, &m->u.map.v, &m->u.map.cap))
        goto fail;
    m->u.map.k[m->u.map.len] = key;
    m->u.map.v[m->u.map.len++] = v;
    return true;
fail:
    tmpl_unref(key);
    tmpl_unref(v);
    return false;
}

tmpl_value *tmpl_new_fn(tmpl_budget *b, int id, tmpl_value *self)
{
    tmpl_value *v = new_value(b, TMPL_FUNC);
    if (!v) {
        tmpl_unref(self);
        return NULL;
    }
    v->u.fn.id = id;
    v->u.fn.self = self;
    return v;
}

tmpl_value *tmpl_new_macro(tmpl_budget *b, const tmpl_node *n)
{
    tmpl_value *v = new_value(b, TMPL_MACRO);
    if (v) v->u.macro = n;
    return v;
}

tmpl_value *tmpl_new_loop(tmpl_budget *b, tmpl_value *items)
{
    tmpl_value *v = new_value(b, TMPL_LOOP);
    if (!v) {
        tmpl_unref(items);
        return NULL;
    }
    v->u.loop.items = items;
    return v;
}

/* ---- public constructors (template.h) ---------------------------------------------------- */

tmpl_value *tmpl_none(void)
{
    return &v_none;
}

tmpl_value *tmpl_bool(bool b)
{
    return b ? &v_true : &v_false;
}

tmpl_value *tmpl_int(int64_t i)
{
    return tmpl_new_int(NULL, i);
}

tmpl_value *tmpl_float(double f)
{
    return tmpl_new_float(NULL, f);
}

tmpl_value *tmpl_str(const char *s, size_t len)
{
    return tmpl_new_str(NULL, s, len);
}

tmpl_value *tmpl_cstr(const char *s)
{
    return tmpl_new_str(NULL, s, strlen(s));
}

tmpl_value *tmpl_list(void)
{
    return tmpl_new_seq(NULL, TMPL_LIST, 0);
}

tmpl_value *tmpl_dict(void)
{
    return tmpl_new_map(NULL, TMPL_DICT);
}

mica_status tmpl_list_push(tmpl_value *list, tmpl_value *item, mica_err *err)
{
    if (!list || list->kind != TMPL_LIST || !item) {
        tmpl_unref(item);
        return core_fail(err, MICA_EINVAL, "tmpl_list_push: not a list or no item");
    }
    if (!tmpl_seq_push(list, item))
        return core_fail(err, MICA_ENOMEM, "template list: out of memory");
    return MICA_OK;
}

mica_status tmpl_dict_set(tmpl_value *dict, const char *key, size_t key_len, tmpl_value *v,
                          mica_err *err)
{
    if (!dict || dict->kind != TMPL_DICT || !v) {
        tmpl_unref(v);
        return core_fail(err, MICA_EINVAL, "tmpl_dict_set: not a dict or no value");
    }
    tmpl_value *k = tmpl_new_str(NULL, key, key_len);
    if (!k || !tmpl_map_set(dict, k, v)) {
        if (!k) tmpl_unref(v);
        return core_fail(err, MICA_ENOMEM, "template dict: out of memory");
    }
    return MICA_OK;
}

void tmpl_value_free(tmpl_value *v)
{
    tmpl_unref(v);
}

tmpl_value *tmpl_value_ref(tmpl_value *v)
{
    return tmpl_ref(v);
}

tmpl_value *tmpl_dict_get(const tmpl_value *dict, const char *key)
{
    if (!dict || dict->kind != TMPL_DICT) return NULL;
    return tmpl_map_get_sv(dict, (tmpl_sv){key, strlen(key)});
}

tmpl_kind tmpl_value_kind(const tmpl_value *v)
{
    return (tmpl_kind)v->kind;
}

size_t tmpl_value_len(const tmpl_value *v)
{
    switch ((tmpl_kind)v->kind) {
    case TMPL_STR:
        return v->u.str.len;
    case TMPL_LIST:
    case TMPL_TUPLE:
    case TMPL_GENERATOR:
        return v->u.seq.len;
    case TMPL_DICT:
    case TMPL_NAMESPACE:
        return v->u.map.len;
    default:
        return 0;
    }
}

const char *tmpl_value_str(const tmpl_value *v, size_t *len)
{
    if (v->kind != TMPL_STR) return NULL;
    if (len) *len = v->u.str.len;
    return v->u.str.s;
}
