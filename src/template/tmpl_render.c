/*
 * tmpl_render.c - runs a parsed template: the render state and its caps (steps, output
 * bytes, memory, macro depth), error reporting with the template line, variable scopes with
 * jinja2's rules (a for loop iteration and a macro call get their own scope, if does not),
 * the statements (text, output, if, for with loop variables / filter / else, set, namespace
 * attribute set, set blocks, macros, break / continue), and tmpl_render itself.
 * Expressions are tmpl_eval.c's.
 */
#define _POSIX_C_SOURCE 200809L
#include "tmpl_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define DEFAULT_MAX_OUTPUT (16u << 20)
#define DEFAULT_MAX_MEMORY (256u << 20)
#define DEFAULT_MAX_STEPS  50000000ull

enum { EX_OK, EX_BREAK, EX_CONTINUE, EX_ERROR };

/* ---- errors and caps --------------------------------------------------------------------- */

static void vfail(tmpl_run *r, mica_status st, const char *fmt, va_list ap)
{
    if (r->failed) return;
    r->failed = true;
    r->status = st;
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    core_fail(r->err, st, "%s:%d: %s", r->t->name, r->line, r->msg);
}

void *tmpl_fail(tmpl_run *r, mica_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(r, st, fmt, ap);
    va_end(ap);
    return NULL;
}

bool tmpl_failb(tmpl_run *r, mica_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(r, st, fmt, ap);
    va_end(ap);
    return false;
}

void *tmpl_fail_nomem(tmpl_run *r)
{
    if (r->budget.refused)
        return tmpl_fail(r, MICA_ERANGE, "the template needs more than %zu bytes of memory",
                         r->budget.max);
    return tmpl_fail(r, MICA_ENOMEM, "out of memory");
}

tmpl_value *tmpl_defer_error(tmpl_run *r)
{
    if (!r->failed || r->status != MICA_EINVAL) return NULL;
    r->failed = false;
    r->status = MICA_OK;
    tmpl_value *g = tmpl_new_seq(&r->budget, TMPL_GENERATOR, 1);
    if (!g || !tmpl_seq_push(g, tmpl_new_str(&r->budget, r->msg, strlen(r->msg)))) {
        tmpl_unref(g);
        return tmpl_fail_nomem(r);
    }
    g->flags |= TMPL_F_RAISES;
    return g;
}

void *tmpl_fail_undef(tmpl_run *r, const tmpl_value *u)
{
    if (u->u.str.s) return tmpl_fail(r, MICA_EINVAL, "%s", u->u.str.s);
    return tmpl_fail(r, MICA_EINVAL, "undefined value");
}

bool tmpl_work(tmpl_run *r, size_t bytes)
{
    r->budget.work += bytes;
    if (r->steps + r->budget.work / 64 <= r->max_steps) return true;
    return tmpl_failb(r, MICA_ERANGE, "the template ran more than %llu steps",
                      (unsigned long long)r->max_steps);
}

size_t tmpl_str_chars(tmpl_run *r, const tmpl_value *s)
{
    if (s->flags & TMPL_F_ASCII) return s->u.str.len;
    tmpl_work(r, s->u.str.len);
    return tmpl_cp_count(s->u.str.s, s->u.str.len);
}

size_t tmpl_str_offset(tmpl_run *r, const tmpl_value *s, size_t i)
{
    if (s->flags & TMPL_F_ASCII) return i < s->u.str.len ? i : s->u.str.len;
    tmpl_work(r, s->u.str.len);
    return tmpl_cp_offset(s->u.str.s, s->u.str.len, i);
}

bool tmpl_step(tmpl_run *r)
{
    if (++r->steps + r->budget.work / 64 <= r->max_steps) return true;
    return tmpl_failb(r, MICA_ERANGE, "the template ran more than %llu steps",
                      (unsigned long long)r->max_steps);
}

static bool out_fail(tmpl_run *r, const core_buf *b)
{
    if (b->len + 64 >= b->max)
        return tmpl_failb(r, MICA_ERANGE, "the rendering is longer than %zu bytes", b->max);
    return tmpl_failb(r, MICA_ENOMEM, "out of memory");
}

/* ---- scopes ------------------------------------------------------------------------------ */

static tmpl_value **scope_find(tmpl_scope *s, tmpl_sv name)
{
    for (size_t i = 0; i < s->len; i++)
        if (s->names[i].len == name.len && !memcmp(s->names[i].s, name.s, name.len))
            return &s->vals[i];
    return NULL;
}

tmpl_value *tmpl_lookup(tmpl_run *r, tmpl_sv name)
{
    for (tmpl_scope *s = r->scope; s; s = s->parent) {
        tmpl_value **v = scope_find(s, name);
        if (v) return *v;
    }
    return NULL;
}

bool tmpl_scope_set(tmpl_run *r, tmpl_scope *s, tmpl_sv name, tmpl_value *v)
{
    if (!v) return false;
    tmpl_value **slot = scope_find(s, name);
    if (slot) {
        tmpl_unref(*slot);
        *slot = v;
        return true;
    }
    if (s->len == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        tmpl_sv *nn = realloc(s->names, ncap * sizeof *nn);
        if (nn) s->names = nn;
        tmpl_value **nv = nn ? realloc(s->vals, ncap * sizeof *nv) : NULL;
        if (nv) s->vals = nv;
        if (!nn || !nv) {
            tmpl_unref(v);
            tmpl_fail_nomem(r);
            return false;
        }
        s->cap = ncap;
    }
    s->names[s->len] = name;
    s->vals[s->len++] = v;
    return true;
}

static void scope_free(tmpl_scope *s)
{
    for (size_t i = 0; i < s->len; i++) tmpl_unref(s->vals[i]);
    free(s->names);
    free(s->vals);
    s->names = NULL;
    s->vals = NULL;
    s->len = s->cap = 0;
}

bool tmpl_track_namespace(tmpl_run *r, tmpl_value *ns)
{
    if (r->n_ns == r->cap_ns) {
        size_t ncap = r->cap_ns ? r->cap_ns * 2 : 16;
        tmpl_value **nv = realloc(r->namespaces, ncap * sizeof *nv);
        if (!nv) return tmpl_fail_nomem(r), false;
        r->namespaces = nv;
        r->cap_ns = ncap;
    }
    r->namespaces[r->n_ns++] = tmpl_ref(ns);
    return true;
}

/* ---- assignment -------------------------------------------------------------------------- */

/* Binds names to v (steals v); more than one name unpacks v as Python does. */
static bool bind_targets(tmpl_run *r, tmpl_scope *s, const tmpl_sv *names, size_t n, tmpl_value *v)
{
    if (!v) return false;
    if (n == 1) return tmpl_scope_set(r, s, names[0], v);
    bool iterable = tmpl_is_seq(v) || v->kind == TMPL_STR || v->kind == TMPL_DICT ||
                    v->kind == TMPL_GENERATOR || v->kind == TMPL_UNDEFINED;
    if (!iterable) {
        tmpl_fail(r, MICA_EINVAL, "cannot unpack non-iterable %s object", tmpl_type_name(v));
        tmpl_unref(v);
        return false;
    }
    tmpl_value *seq = tmpl_iterate(r, v);
    tmpl_unref(v);
    if (!seq) return false;
    bool ok = false;
    size_t got = seq->u.seq.len;
    if (got > n)
        tmpl_fail(r, MICA_EINVAL, "too many values to unpack (expected %zu)", n);
    else if (got < n)
        tmpl_fail(r, MICA_EINVAL, "not enough values to unpack (expected %zu, got %zu)", n, got);
    else
        for (ok = true; ok && got-- > 0;)
            ok = tmpl_scope_set(r, s, names[n - 1 - got], tmpl_ref(seq->u.seq.v[n - 1 - got]));
    tmpl_unref(seq);
    return ok;
}

static bool exec_set(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *v = tmpl_eval(r, n->a);
    if (!v) return false;
    r->line = n->line;
    if (!n->attr.s) return bind_targets(r, r->scope, n->names, n->n_names, v);
    tmpl_value *ns = tmpl_lookup(r, n->name);
    if (!ns || ns->kind != TMPL_NAMESPACE) {
        tmpl_unref(v);
        return tmpl_failb(r, MICA_EINVAL, "cannot assign attribute on non-namespace object");
    }
    tmpl_value *key = tmpl_new_str(&r->budget, n->attr.s, n->attr.len);
    if (!key) {
        tmpl_unref(v);
        return tmpl_fail_nomem(r), false;
    }
    return tmpl_map_set(ns, key, v) || (tmpl_fail_nomem(r), false);
}

/* ---- statements -------------------------------------------------------------------------- */

static int exec_body(tmpl_run *r, tmpl_node *const *body, size_t n);

/* Renders body into a new string value (set blocks, macro calls). */
static tmpl_value *capture(tmpl_run *r, tmpl_node *const *body, size_t n)
{
    core_buf buf, *saved = r->out;
    core_buf_init(&buf, r->max_output);
    if (!core_buf_append(&buf, "", 0)) return tmpl_fail_nomem(r);
    r->out = &buf;
    int rc = exec_body(r, body, n);
    r->out = saved;
    if (rc == EX_ERROR) {
        core_buf_free(&buf);
        return NULL;
    }
    tmpl_value *v = tmpl_new_str_take(&r->budget, buf.data, buf.len);
    return v ? v : tmpl_fail_nomem(r);
}

static int exec_iteration(tmpl_run *r, const tmpl_node *n, tmpl_value *loop, tmpl_value *item)
{
    tmpl_scope s = {.parent = r->scope};
    r->scope = &s;
    int rc = EX_ERROR;
    if (tmpl_scope_set(r, &s, (tmpl_sv){"loop", 4}, tmpl_ref(loop)) &&
        bind_targets(r, &s, n->names, n->n_names, tmpl_ref(item)))
        rc = exec_body(r, n->kids, n->n_kids);
    r->scope = s.parent;
    scope_free(&s);
    return rc;
}

/* for x in xs if cond: the items for which cond holds (evaluated with x bound). */
static tmpl_value *loop_filter(tmpl_run *r, const tmpl_node *n, tmpl_value *seq)
{
    tmpl_value *kept = tmpl_new_seq(&r->budget, TMPL_LIST, 0);
    if (!kept) return tmpl_fail_nomem(r);
    for (size_t i = 0; i < seq->u.seq.len; i++) {
        tmpl_scope s = {.parent = r->scope};
        r->scope = &s;
        tmpl_value *c = NULL;
        if (bind_targets(r, &s, n->names, n->n_names, tmpl_ref(seq->u.seq.v[i])))
            c = tmpl_eval(r, n->b);
        r->scope = s.parent;
        scope_free(&s);
        if (!c) {
            tmpl_unref(kept);
            return NULL;
        }
        bool keep = tmpl_truthy(c);
        tmpl_unref(c);
        if (keep && !tmpl_seq_push(kept, tmpl_ref(seq->u.seq.v[i]))) {
            tmpl_unref(kept);
            return tmpl_fail_nomem(r);
        }
    }
    return kept;
}

static int exec_for(tmpl_run *r, const tmpl_node *n)
{
    tmpl_value *it = tmpl_eval(r, n->a);
    if (!it) return EX_ERROR;
    r->line = n->line;
    tmpl_value *seq = tmpl_iterate(r, it);
    tmpl_unref(it);
    if (seq && n->b) {
        tmpl_value *kept = loop_filter(r, n, seq);
        tmpl_unref(seq);
        seq = kept;
    }
    if (!seq) return EX_ERROR;
    tmpl_value *loop = tmpl_new_loop(&r->budget, tmpl_ref(seq));
    if (!loop) {
        tmpl_unref(seq);
        tmpl_fail_nomem(r);
        return EX_ERROR;
    }
    int rc = EX_OK;
    size_t count = seq->u.seq.len;
    for (size_t i = 0; i < count && rc != EX_ERROR; i++) {
        if (!tmpl_step(r)) {
            rc = EX_ERROR;
            break;
        }
        loop->u.loop.index0 = i;
        rc = exec_iteration(r, n, loop, seq->u.seq.v[i]);
        if (rc == EX_BREAK) break;
        if (rc == EX_CONTINUE) rc = EX_OK;
    }
    tmpl_unref(loop);
    tmpl_unref(seq);
    if (rc == EX_ERROR) return EX_ERROR;
    if (count == 0 && n->n_kids2) return exec_body(r, n->kids2, n->n_kids2);
    return EX_OK;
}

static int exec_node(tmpl_run *r, const tmpl_node *n);

static int exec_stmt(tmpl_run *r, const tmpl_node *n)
{
    if (!tmpl_step(r)) return EX_ERROR;
    if (r->nesting >= TMPL_MAX_NESTING) {
        tmpl_fail(r, MICA_ERANGE, "the template nests deeper than %d levels", TMPL_MAX_NESTING);
        return EX_ERROR;
    }
    r->nesting++;
    int rc = exec_node(r, n);
    r->nesting--;
    return rc;
}

static int exec_node(tmpl_run *r, const tmpl_node *n)
{
    r->line = n->line;
    switch (n->kind) {
    case N_TEXT:
        if (core_buf_append(r->out, n->name.s, n->name.len)) return EX_OK;
        return out_fail(r, r->out), EX_ERROR;
    case N_OUTPUT: {
        tmpl_value *v = tmpl_eval(r, n->a);
        if (!v) return EX_ERROR;
        bool ok = tmpl_write_str(r->out, v);
        tmpl_unref(v);
        return ok ? EX_OK : (out_fail(r, r->out), EX_ERROR);
    }
    case N_IF: {
        tmpl_value *c = tmpl_eval(r, n->a);
        if (!c) return EX_ERROR;
        bool t = tmpl_truthy(c);
        tmpl_unref(c);
        return t ? exec_body(r, n->kids, n->n_kids) : exec_body(r, n->kids2, n->n_kids2);
    }
    case N_FOR:
        return exec_for(r, n);
    case N_SET:
        return exec_set(r, n) ? EX_OK : EX_ERROR;
    case N_SET_BLOCK:
        return bind_targets(r, r->scope, n->names, 1, capture(r, n->kids, n->n_kids)) ? EX_OK
                                                                                      : EX_ERROR;
    case N_MACRO: {
        tmpl_value *m = tmpl_new_macro(&r->budget, n);
        if (!m) return tmpl_fail_nomem(r), EX_ERROR;
        return tmpl_scope_set(r, r->scope, n->name, m) ? EX_OK : EX_ERROR;
    }
    case N_BREAK:
        return EX_BREAK;
    case N_CONTINUE:
        return EX_CONTINUE;
    case N_BLOCK:
        return exec_body(r, n->kids, n->n_kids);
    default:
        tmpl_fail(r, MICA_EINVAL, "internal error: statement kind %d", n->kind);
        return EX_ERROR;
    }
}

static int exec_body(tmpl_run *r, tmpl_node *const *body, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = exec_stmt(r, body[i]);
        if (rc != EX_OK) return rc;
    }
    return EX_OK;
}

/* ---- macros ------------------------------------------------------------------------------ */

static tmpl_value *find_kw(const tmpl_args *a, tmpl_sv name, bool *used)
{
    for (size_t k = 0; k < a->n_kw; k++)
        if (a->kw_names[k].len == name.len && !memcmp(a->kw_names[k].s, name.s, name.len)) {
            used[k] = true;
            return a->kw[k];
        }
    return NULL;
}

/* Parameters: positional, then keyword, then the default (evaluated in the macro's scope,
 * so it may use earlier parameters); extra arguments go to varargs / kwargs. */
static bool bind_params(tmpl_run *r, const tmpl_node *m, const tmpl_args *a, tmpl_scope *s)
{
    bool used[64] = {false};
    if (a->n_kw > 64) return tmpl_failb(r, MICA_EINVAL, "too many keyword arguments");
    for (size_t i = 0; i < m->n_names; i++) {
        tmpl_value *v =
            i < a->n_pos ? tmpl_ref(a->pos[i]) : tmpl_ref(find_kw(a, m->names[i], used));
        if (!v && m->kids2[i]) {
            r->line = m->line;
            if (!(v = tmpl_eval(r, m->kids2[i]))) return false;
        }
        if (!v && !(v = tmpl_undef_hint(&r->budget, 0, "parameter '%.*s' was not provided",
                                        (int)m->names[i].len, m->names[i].s)))
            return tmpl_fail_nomem(r), false;
        if (!tmpl_scope_set(r, s, m->names[i], v)) return false;
    }
    if (a->n_pos > m->n_names) {
        tmpl_value *extra = tmpl_new_seq(&r->budget, TMPL_TUPLE, 0);
        for (size_t i = m->n_names; extra && i < a->n_pos; i++)
            if (!tmpl_seq_push(extra, tmpl_ref(a->pos[i]))) extra = NULL;
        if (!tmpl_scope_set(r, s, (tmpl_sv){"varargs", 7}, extra ? extra : tmpl_fail_nomem(r)))
            return false;
    }
    tmpl_value *kwargs = NULL;
    for (size_t k = 0; k < a->n_kw; k++) {
        if (used[k]) continue;
        if (!kwargs && !(kwargs = tmpl_new_map(&r->budget, TMPL_DICT))) return tmpl_fail_nomem(r);
        if (!tmpl_map_set(kwargs, tmpl_new_str(&r->budget, a->kw_names[k].s, a->kw_names[k].len),
                          tmpl_ref(a->kw[k]))) {
            tmpl_unref(kwargs);
            return tmpl_fail_nomem(r), false;
        }
    }
    return !kwargs || tmpl_scope_set(r, s, (tmpl_sv){"kwargs", 6}, kwargs);
}

tmpl_value *tmpl_call_macro(tmpl_run *r, const tmpl_value *macro, const tmpl_args *a)
{
    const tmpl_node *m = macro->u.macro;
    if (r->depth >= TMPL_MAX_CALL_DEPTH)
        return tmpl_fail(r, MICA_ERANGE, "macro calls nested deeper than %d", TMPL_MAX_CALL_DEPTH);
    int line = r->line;
    tmpl_scope s = {.parent = r->root}, *saved = r->scope;
    r->scope = &s;
    r->depth++;
    tmpl_value *v = bind_params(r, m, a, &s) ? capture(r, m->kids, m->n_kids) : NULL;
    r->depth--;
    r->scope = saved;
    scope_free(&s);
    if (v) r->line = line;
    return v;
}

/* ---- the render -------------------------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* "YYYY-MM-DD HH:MM:SS" into a struct tm with weekday and day of the year. */
static bool parse_now(const char *s, struct tm *tm)
{
    int y, mo, d, h, mi, sec;
    char tail;
    if (sscanf(s, "%4d-%2d-%2d %2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &sec, &tail) != 6)
        return false;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 59 ||
        h < 0 || mi < 0 || sec < 0)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap) return false;
    memset(tm, 0, sizeof *tm);
    tm->tm_year = y - 1900;
    tm->tm_mon = mo - 1;
    tm->tm_mday = d;
    tm->tm_hour = h;
    tm->tm_min = mi;
    tm->tm_sec = sec;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    tm->tm_wday = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
    tm->tm_yday = (int)(days - days_from_civil(y, 1, 1));
    tm->tm_isdst = -1;
    return true;
}

static bool set_str(tmpl_run *r, const char *name, const char *value)
{
    if (!value) return true;
    tmpl_value *v = tmpl_new_str(&r->budget, value, strlen(value));
    return tmpl_scope_set(r, r->root, (tmpl_sv){name, strlen(name)}, v ? v : tmpl_fail_nomem(r));
}

static bool set_vars(tmpl_run *r, const tmpl_render_params *p)
{
    tmpl_scope *s = r->root;
    if (p->messages && !tmpl_scope_set(r, s, (tmpl_sv){"messages", 8}, tmpl_ref(p->messages)))
        return false;
    if (!tmpl_scope_set(r, s, (tmpl_sv){"tools", 5}, tmpl_ref(p->tools ? p->tools : tmpl_none())) ||
        !tmpl_scope_set(r, s, (tmpl_sv){"documents", 9}, tmpl_none()) ||
        !tmpl_scope_set(r, s, (tmpl_sv){"add_generation_prompt", 21},
                        tmpl_bool(p->add_generation_prompt)) ||
        !set_str(r, "bos_token", p->bos_token) || !set_str(r, "eos_token", p->eos_token))
        return false;
    for (size_t i = 0; i < p->n_vars; i++) {
        const tmpl_var *v = &p->vars[i];
        if (!v->name || !v->value)
            return tmpl_failb(r, MICA_EINVAL, "variable %zu has no name or no value", i);
        if (!tmpl_scope_set(r, s, (tmpl_sv){v->name, strlen(v->name)}, tmpl_ref(v->value)))
            return false;
    }
    return true;
}

static void run_free(tmpl_run *r)
{
    scope_free(r->root);
    /* Namespaces are the only mutable values, so every reference cycle passes through one. */
    for (size_t i = 0; i < r->n_ns; i++) tmpl_map_clear(r->namespaces[i]);
    for (size_t i = 0; i < r->n_ns; i++) tmpl_unref(r->namespaces[i]);
    free(r->namespaces);
}

mica_status tmpl_render(const tmpl_template *t, const tmpl_render_params *p, char **out,
                        size_t *out_len, mica_err *err)
{
    if (!t || !p || !out) return core_fail(err, MICA_EINVAL, "tmpl_render: missing argument");
    *out = NULL;
    if (out_len) *out_len = 0;
    tmpl_scope root = {0};
    tmpl_run r = {.t = t, .err = err, .scope = &root, .root = &root, .line = 1};
    r.budget.max = p->max_memory ? p->max_memory : DEFAULT_MAX_MEMORY;
    r.max_steps = p->max_steps ? p->max_steps : DEFAULT_MAX_STEPS;
    r.max_output = p->max_output ? p->max_output : DEFAULT_MAX_OUTPUT;
    if (p->now && !parse_now(p->now, &r.now))
        return core_fail(err, MICA_EINVAL, "%s: the frozen time '%s' is not YYYY-MM-DD HH:MM:SS",
                         t->name, p->now);
    if (!p->now) {
        time_t now = time(NULL);
        localtime_r(&now, &r.now);
    }
    core_buf buf;
    core_buf_init(&buf, r.max_output);
    r.out = &buf;
    int rc = EX_ERROR;
    if (!core_buf_append(&buf, "", 0))
        tmpl_fail_nomem(&r);
    else if (set_vars(&r, p))
        rc = exec_body(&r, t->body, t->n_body);
    run_free(&r);
    if (rc == EX_ERROR) {
        core_buf_free(&buf);
        return r.status ? r.status : MICA_EINVAL;
    }
    *out = buf.data;
    if (out_len) *out_len = buf.len;
    return MICA_OK;
}
