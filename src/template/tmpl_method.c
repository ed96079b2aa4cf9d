/*
 * tmpl_method.c - Python's str methods that chat templates call (strip / lstrip / rstrip,
 * split / rsplit / splitlines, startswith / endswith, replace, upper / lower / title /
 * capitalize, find / rfind / count, join, the is* tests, a simple format), with Python's
 * results on code points, and the string helpers the filters share (trim, case, replace).
 * Called by tmpl_call.c and tmpl_filter.c.
 */
#include "tmpl_int.h"

#include <stdio.h>
#include <stdlib.h>

static tmpl_value *str_result(tmpl_run *r, const tmpl_value *self, const char *s, size_t n)
{
    tmpl_value *v = tmpl_new_str(&r->budget, s, n);
    if (v) v->flags |= self->flags & TMPL_F_MARKUP;
    return v ? v : tmpl_fail_nomem(r);
}

static tmpl_value *buf_result(tmpl_run *r, const tmpl_value *self, core_buf *b, bool ok)
{
    if (!ok) {
        core_buf_free(b);
        return tmpl_fail(r, MICA_ERANGE, "a string longer than %zu bytes", r->max_output);
    }
    tmpl_value *v = tmpl_new_str_take(&r->budget, b->data, b->len);
    if (v) v->flags |= self->flags & TMPL_F_MARKUP;
    return v ? v : tmpl_fail_nomem(r);
}

static bool in_chars(uint32_t c, const tmpl_value *chars)
{
    if (!chars) return tmpl_is_space(c);
    const char *s = chars->u.str.s;
    size_t n = chars->u.str.len, len;
    for (size_t off = 0; off < n; off += len)
        if (tmpl_decode(s + off, n - off, &len) == c) return true;
    return false;
}

tmpl_value *tmpl_str_strip(tmpl_run *r, tmpl_value *self, const tmpl_value *chars, int sides)
{
    if (chars && chars->kind == TMPL_NONE) chars = NULL;
    if (chars && chars->kind != TMPL_STR)
        return tmpl_fail(r, MICA_EINVAL, "strip arg must be None or str");
    const char *s = self->u.str.s;
    size_t n = self->u.str.len, start = 0, end = n, len;
    if (sides & 1)
        while (start < n && in_chars(tmpl_decode(s + start, n - start, &len), chars)) start += len;
    if (sides & 2) {
        size_t keep = start;
        for (size_t off = start; off < n; off += len)
            if (!in_chars(tmpl_decode(s + off, n - off, &len), chars)) keep = off + len;
        end = keep;
    }
    return str_result(r, self, s + start, end - start);
}

static bool is_cased(uint32_t c)
{
    return tmpl_upper_cp(c) != c || tmpl_lower_cp(c) != c;
}

/* mode: 'u' upper, 'l' lower, 'c' capitalize, 't' Python's str.title */
tmpl_value *tmpl_str_case(tmpl_run *r, tmpl_value *self, char mode)
{
    const char *s = self->u.str.s;
    size_t n = self->u.str.len, len;
    core_buf b;
    core_buf_init(&b, 4 * n + 4);
    bool ok = core_buf_append(&b, "", 0), prev_cased = false;
    for (size_t off = 0; ok && off < n; off += len) {
        uint32_t c = tmpl_decode(s + off, n - off, &len), m;
        if (mode == 'u')
            m = tmpl_upper_cp(c);
        else if (mode == 'l')
            m = tmpl_lower_cp(c);
        else if (mode == 'c')
            m = off == 0 ? tmpl_upper_cp(c) : tmpl_lower_cp(c);
        else
            m = prev_cased ? tmpl_lower_cp(c) : tmpl_upper_cp(c);
        prev_cased = is_cased(c);
        char u[4];
        ok = core_buf_append(&b, u, (size_t)core_utf8_encode(m, u));
    }
    return buf_result(r, self, &b, ok);
}

static const char *find_bytes(const char *s, size_t n, const char *t, size_t m)
{
    if (m == 0) return s;
    for (size_t i = 0; i + m <= n; i++)
        if (s[i] == t[0] && !memcmp(s + i, t, m)) return s + i;
    return NULL;
}

static const char *rfind_bytes(const char *s, size_t n, const char *t, size_t m)
{
    if (m > n) return NULL;
    for (size_t i = n - m + 1; i-- > 0;)
        if (!memcmp(s + i, t, m)) return s + i;
    return NULL;
}

tmpl_value *tmpl_str_replace(tmpl_run *r, tmpl_value *self, const tmpl_value *old,
                             const tmpl_value *new, int64_t count)
{
    if (old->kind != TMPL_STR || new->kind != TMPL_STR)
        return tmpl_fail(r, MICA_EINVAL, "replace() arguments must be str");
    const char *s = self->u.str.s, *o = old->u.str.s;
    size_t n = self->u.str.len, on = old->u.str.len, len;
    core_buf b;
    core_buf_init(&b, r->max_output);
    bool ok = core_buf_append(&b, "", 0);
    size_t off = 0;
    for (int64_t done = 0; ok && (count < 0 || done < count); done++) {
        if (on == 0) { /* "" matches before every character and at the end */
            ok = core_buf_append(&b, new->u.str.s, new->u.str.len);
            if (off >= n) {
                off = n + 1;
                break;
            }
            tmpl_decode(s + off, n - off, &len);
            ok = ok && core_buf_append(&b, s + off, len);
            off += len;
            continue;
        }
        const char *hit = find_bytes(s + off, n - off, o, on);
        if (!hit) break;
        ok = core_buf_append(&b, s + off, (size_t)(hit - s) - off) &&
             core_buf_append(&b, new->u.str.s, new->u.str.len);
        off = (size_t)(hit - s) + on;
    }
    if (ok && off < n) ok = core_buf_append(&b, s + off, n - off);
    return buf_result(r, self, &b, ok);
}

/* ---- split ------------------------------------------------------------------------------- */

static bool push_part(tmpl_run *r, tmpl_value *list, const char *s, size_t n)
{
    return tmpl_seq_push(list, tmpl_new_str(&r->budget, s, n)) || (tmpl_fail_nomem(r), false);
}

/* Splits on runs of whitespace from the left (rsplit: from the right). */
static bool split_ws(tmpl_run *r, tmpl_value *list, const char *s, size_t n, int64_t max,
                     bool right)
{
    size_t len;
    int64_t done = 0;
    if (!right) {
        size_t i = 0;
        for (;;) {
            while (i < n && tmpl_is_space(tmpl_decode(s + i, n - i, &len))) i += len;
            if (i >= n) return true;
            if (max >= 0 && done == max) return push_part(r, list, s + i, n - i);
            size_t j = i;
            while (j < n && !tmpl_is_space(tmpl_decode(s + j, n - j, &len))) j += len;
            if (!push_part(r, list, s + i, j - i)) return false;
            done++;
            i = j;
        }
    }
    /* From the right: collect word boundaries, then emit in order. */
    size_t end = tmpl_rstrip_len(s, n);
    tmpl_value *tmp = tmpl_new_seq(&r->budget, TMPL_LIST, 0);
    if (!tmp) return tmpl_fail_nomem(r), false;
    bool ok = true;
    while (ok && end > 0) {
        if (max >= 0 && done == max) {
            ok = push_part(r, tmp, s, end);
            break;
        }
        size_t start = 0;
        for (size_t off = 0; off < end; off += len)
            if (tmpl_is_space(tmpl_decode(s + off, end - off, &len))) start = off + len;
        ok = push_part(r, tmp, s + start, end - start);
        done++;
        end = tmpl_rstrip_len(s, start);
    }
    for (size_t i = tmp->u.seq.len; ok && i-- > 0;)
        ok = tmpl_seq_push(list, tmpl_ref(tmp->u.seq.v[i])) || (tmpl_fail_nomem(r), false);
    tmpl_unref(tmp);
    return ok;
}

static bool split_sep(tmpl_run *r, tmpl_value *list, const char *s, size_t n, const char *t,
                      size_t m, int64_t max, bool right)
{
    if (!right) {
        size_t off = 0;
        for (int64_t done = 0; max < 0 || done < max; done++) {
            const char *hit = find_bytes(s + off, n - off, t, m);
            if (!hit) break;
            if (!push_part(r, list, s + off, (size_t)(hit - s) - off)) return false;
            off = (size_t)(hit - s) + m;
        }
        return push_part(r, list, s + off, n - off);
    }
    tmpl_value *tmp = tmpl_new_seq(&r->budget, TMPL_LIST, 0);
    if (!tmp) return tmpl_fail_nomem(r), false;
    size_t end = n;
    bool ok = true;
    for (int64_t done = 0; ok && (max < 0 || done < max); done++) {
        const char *hit = rfind_bytes(s, end, t, m);
        if (!hit) break;
        ok = push_part(r, tmp, hit + m, end - (size_t)(hit - s) - m);
        end = (size_t)(hit - s);
    }
    ok = ok && push_part(r, tmp, s, end);
    for (size_t i = tmp->u.seq.len; ok && i-- > 0;)
        ok = tmpl_seq_push(list, tmpl_ref(tmp->u.seq.v[i])) || (tmpl_fail_nomem(r), false);
    tmpl_unref(tmp);
    return ok;
}

static tmpl_value *m_split(tmpl_run *r, tmpl_value *self, const tmpl_args *a, bool right)
{
    static const char *const params[] = {"sep", "maxsplit"};
    tmpl_value *p[2];
    if (!tmpl_bind(r, right ? "rsplit" : "split", params, 2, a, p)) return NULL;
    int64_t max = -1;
    if (p[1] && p[1]->kind != TMPL_INT)
        return tmpl_fail(r, MICA_EINVAL, "maxsplit must be an integer");
    if (p[1]) max = p[1]->u.i;
    tmpl_value *sep = p[0] && p[0]->kind != TMPL_NONE ? p[0] : NULL;
    if (sep && sep->kind != TMPL_STR)
        return tmpl_fail(r, MICA_EINVAL, "must be str or None, not %s", tmpl_type_name(sep));
    if (sep && sep->u.str.len == 0) return tmpl_fail(r, MICA_EINVAL, "empty separator");
    tmpl_value *list = tmpl_new_seq(&r->budget, TMPL_LIST, 0);
    if (!list) return tmpl_fail_nomem(r);
    bool ok = sep ? split_sep(r, list, self->u.str.s, self->u.str.len, sep->u.str.s, sep->u.str.len,
                              max, right)
                  : split_ws(r, list, self->u.str.s, self->u.str.len, max, right);
    if (!ok) {
        tmpl_unref(list);
        return NULL;
    }
    return list;
}

static tmpl_value *m_splitlines(tmpl_run *r, tmpl_value *self, const tmpl_args *a)
{
    static const char *const params[] = {"keepends"};
    tmpl_value *keep;
    if (!tmpl_bind(r, "splitlines", params, 1, a, &keep)) return NULL;
    bool keepends = keep && tmpl_truthy(keep);
    tmpl_value *list = tmpl_new_seq(&r->budget, TMPL_LIST, 0);
    if (!list) return tmpl_fail_nomem(r);
    const char *s = self->u.str.s;
    size_t n = self->u.str.len, start = 0, off = 0, len;
    while (off < n) {
        uint32_t c = tmpl_decode(s + off, n - off, &len);
        if (!tmpl_is_linebreak(c)) {
            off += len;
            continue;
        }
        size_t brk = len + (c == '\r' && off + 1 < n && s[off + 1] == '\n');
        if (!push_part(r, list, s + start, off - start + (keepends ? brk : 0))) {
            tmpl_unref(list);
            return NULL;
        }
        off += brk;
        start = off;
    }
    if (start < n && !push_part(r, list, s + start, n - start)) {
        tmpl_unref(list);
        return NULL;
    }
    return list;
}

/* ---- the rest ---------------------------------------------------------------------------- */

static tmpl_value *m_affix(tmpl_run *r, tmpl_value *self, const tmpl_args *a, bool end)
{
    const char *name = end ? "endswith" : "startswith";
    if (a->n_pos != 1 || a->n_kw)
        return tmpl_fail(r, MICA_EUNSUPPORTED, "%s() with start / end is not supported", name);
    const tmpl_value *arg = a->pos[0];
    tmpl_value *const *cands = &a->pos[0];
    size_t nc = 1;
    if (arg->kind == TMPL_TUPLE) {
        cands = arg->u.seq.v;
        nc = arg->u.seq.len;
    }
    for (size_t i = 0; i < nc; i++) {
        const tmpl_value *c = cands[i];
        if (c->kind != TMPL_STR)
            return tmpl_fail(r, MICA_EINVAL, "%s first arg must be str or a tuple of str, not %s",
                             name, tmpl_type_name(c));
        size_t m = c->u.str.len, n = self->u.str.len;
        if (m <= n && !memcmp(self->u.str.s + (end ? n - m : 0), c->u.str.s, m))
            return tmpl_bool(true);
    }
    return tmpl_bool(false);
}

static tmpl_value *new_int(tmpl_run *r, int64_t i)
{
    tmpl_value *v = tmpl_new_int(&r->budget, i);
    return v ? v : tmpl_fail_nomem(r);
}

static tmpl_value *m_find(tmpl_run *r, tmpl_value *self, const tmpl_args *a, int id)
{
    if (a->n_pos != 1 || a->n_kw || a->pos[0]->kind != TMPL_STR)
        return tmpl_fail(r, MICA_EUNSUPPORTED, "find / rfind / count take one string here");
    const tmpl_value *t = a->pos[0];
    const char *s = self->u.str.s;
    size_t n = self->u.str.len, m = t->u.str.len;
    tmpl_work(r, n);
    if (id == FN_STR_COUNT) {
        if (m == 0) return new_int(r, (int64_t)tmpl_cp_count(s, n) + 1);
        int64_t count = 0;
        for (const char *hit = find_bytes(s, n, t->u.str.s, m); hit;
             hit = find_bytes(hit + m, n - (size_t)(hit + m - s), t->u.str.s, m))
            count++;
        return new_int(r, count);
    }
    const char *hit =
        id == FN_STR_FIND ? find_bytes(s, n, t->u.str.s, m) : rfind_bytes(s, n, t->u.str.s, m);
    return new_int(r, hit ? (int64_t)tmpl_cp_count(s, (size_t)(hit - s)) : -1);
}

static tmpl_value *m_join(tmpl_run *r, tmpl_value *self, const tmpl_args *a)
{
    if (a->n_pos != 1 || a->n_kw) return tmpl_fail(r, MICA_EINVAL, "join() takes one argument");
    tmpl_value *seq = tmpl_iterate(r, a->pos[0]);
    if (!seq) return NULL;
    core_buf b;
    core_buf_init(&b, r->max_output);
    bool ok = core_buf_append(&b, "", 0);
    for (size_t i = 0; ok && i < seq->u.seq.len; i++) {
        const tmpl_value *item = seq->u.seq.v[i];
        if (item->kind != TMPL_STR) {
            tmpl_fail(r, MICA_EINVAL, "sequence item %zu: expected str instance, %s found", i,
                      tmpl_type_name(item));
            core_buf_free(&b);
            tmpl_unref(seq);
            return NULL;
        }
        ok = (!i || core_buf_append(&b, self->u.str.s, self->u.str.len)) &&
             core_buf_append(&b, item->u.str.s, item->u.str.len);
    }
    tmpl_unref(seq);
    return buf_result(r, self, &b, ok);
}

static tmpl_value *m_is(tmpl_run *r, tmpl_value *self, int id)
{
    const char *s = self->u.str.s;
    size_t n = self->u.str.len, len;
    bool any = false, all = n > 0, upper = false, lower = false;
    for (size_t off = 0; off < n; off += len) {
        uint32_t c = tmpl_decode(s + off, n - off, &len);
        if (id == FN_STR_ISDIGIT) all = all && c >= '0' && c <= '9';
        if (id == FN_STR_ISALPHA) all = all && (is_cased(c) || c > 0x2E7F);
        if (id == FN_STR_ISSPACE) all = all && tmpl_is_space(c);
        if (is_cased(c)) {
            any = true;
            upper = upper || tmpl_lower_cp(c) != c;
            lower = lower || tmpl_upper_cp(c) != c;
        }
    }
    (void)r;
    if (id == FN_STR_ISUPPER) return tmpl_bool(any && !lower);
    if (id == FN_STR_ISLOWER) return tmpl_bool(any && !upper);
    return tmpl_bool(all);
}

/* str.format with {} / {0} / {name} fields (no format specs). */
static tmpl_value *m_format(tmpl_run *r, tmpl_value *self, const tmpl_args *a)
{
    const char *s = self->u.str.s;
    size_t n = self->u.str.len, auto_idx = 0;
    core_buf b;
    core_buf_init(&b, r->max_output);
    bool ok = core_buf_append(&b, "", 0);
    for (size_t i = 0; ok && i < n; i++) {
        if ((s[i] == '{' || s[i] == '}') && i + 1 < n && s[i + 1] == s[i]) {
            ok = core_buf_append(&b, s + i++, 1);
            continue;
        }
        if (s[i] != '{') {
            ok = core_buf_append(&b, s + i, 1);
            continue;
        }
        const char *close = memchr(s + i, '}', n - i);
        if (!close) break;
        tmpl_sv field = {s + i + 1, (size_t)(close - s) - i - 1};
        const tmpl_value *v = NULL;
        if (field.len == 0 && auto_idx < a->n_pos)
            v = a->pos[auto_idx++];
        else if (field.len && field.s[0] >= '0' && field.s[0] <= '9') {
            size_t k = (size_t)strtoul(field.s, NULL, 10);
            v = k < a->n_pos ? a->pos[k] : NULL;
        } else
            for (size_t k = 0; k < a->n_kw; k++)
                if (a->kw_names[k].len == field.len &&
                    !memcmp(a->kw_names[k].s, field.s, field.len))
                    v = a->kw[k];
        if (!v) {
            core_buf_free(&b);
            return tmpl_fail(r, MICA_EUNSUPPORTED, "str.format field '{%.*s}' is not supported",
                             (int)field.len, field.s);
        }
        ok = tmpl_write_str(&b, v);
        i = (size_t)(close - s);
    }
    return buf_result(r, self, &b, ok);
}

tmpl_value *tmpl_str_method(tmpl_run *r, int id, tmpl_value *self, const tmpl_args *a)
{
    switch (id) {
    case FN_STR_STRIP:
    case FN_STR_LSTRIP:
    case FN_STR_RSTRIP: {
        static const char *const params[] = {"chars"};
        tmpl_value *chars;
        if (!tmpl_bind(r, "strip", params, 1, a, &chars)) return NULL;
        return tmpl_str_strip(r, self, chars, id == FN_STR_STRIP ? 3 : id == FN_STR_LSTRIP ? 1 : 2);
    }
    case FN_STR_SPLIT:
    case FN_STR_RSPLIT:
        return m_split(r, self, a, id == FN_STR_RSPLIT);
    case FN_STR_SPLITLINES:
        return m_splitlines(r, self, a);
    case FN_STR_STARTSWITH:
    case FN_STR_ENDSWITH:
        return m_affix(r, self, a, id == FN_STR_ENDSWITH);
    case FN_STR_REPLACE: {
        static const char *const params[] = {"old", "new", "count"};
        tmpl_value *p[3];
        if (!tmpl_bind(r, "replace", params, 3, a, p)) return NULL;
        if (!p[0] || !p[1]) return tmpl_fail(r, MICA_EINVAL, "replace expected 2 arguments");
        return tmpl_str_replace(r, self, p[0], p[1],
                                p[2] && p[2]->kind == TMPL_INT ? p[2]->u.i : -1);
    }
    case FN_STR_UPPER:
    case FN_STR_LOWER:
    case FN_STR_TITLE:
    case FN_STR_CAPITALIZE:
        if (a->n_pos || a->n_kw) return tmpl_fail(r, MICA_EINVAL, "method takes no arguments");
        return tmpl_str_case(r, self,
                             id == FN_STR_UPPER   ? 'u'
                             : id == FN_STR_LOWER ? 'l'
                             : id == FN_STR_TITLE ? 't'
                                                  : 'c');
    case FN_STR_FIND:
    case FN_STR_RFIND:
    case FN_STR_COUNT:
        return m_find(r, self, a, id);
    case FN_STR_JOIN:
        return m_join(r, self, a);
    case FN_STR_FORMAT:
        return m_format(r, self, a);
    default:
        return m_is(r, self, id);
    }
}

/* ---- printf-style formatting: fmt % args ------------------------------------------------- */

typedef struct pct_spec {
    char flags[8], conv;
    int width, prec; /* -1: not given */
} pct_spec;

/* Parses flags, width, precision and the conversion after a '%' at fmt[*i]. */
static bool parse_spec(tmpl_run *r, const tmpl_value *fmt, size_t *i, pct_spec *sp)
{
    const char *s = fmt->u.str.s;
    size_t n = fmt->u.str.len, nf = 0;
    sp->width = sp->prec = -1;
    while (*i < n && strchr("-+ #0", s[*i]) && nf < sizeof sp->flags - 1)
        sp->flags[nf++] = s[(*i)++];
    sp->flags[nf] = '\0';
    if (*i < n && s[*i] == '*')
        return tmpl_failb(r, MICA_EUNSUPPORTED, "'*' widths are not supported");
    for (; *i < n && s[*i] >= '0' && s[*i] <= '9' && sp->width < 10000; (*i)++)
        sp->width = (sp->width < 0 ? 0 : sp->width * 10) + (s[*i] - '0');
    if (*i < n && s[*i] == '.') {
        (*i)++;
        sp->prec = 0;
        for (; *i < n && s[*i] >= '0' && s[*i] <= '9' && sp->prec < 10000; (*i)++)
            sp->prec = sp->prec * 10 + (s[*i] - '0');
    }
    while (*i < n && strchr("hlL", s[*i])) (*i)++;
    if (*i >= n) return tmpl_failb(r, MICA_EINVAL, "incomplete format");
    sp->conv = s[(*i)++];
    return true;
}

static bool pad_text(core_buf *b, const pct_spec *sp, const char *t, size_t len)
{
    if (sp->prec >= 0 && (size_t)sp->prec < tmpl_cp_count(t, len))
        len = tmpl_cp_offset(t, len, (size_t)sp->prec);
    size_t chars = tmpl_cp_count(t, len);
    bool left = strchr(sp->flags, '-') != NULL, ok = true;
    for (size_t k = chars; !left && ok && (int)k < sp->width; k++) ok = core_buf_append(b, " ", 1);
    ok = ok && core_buf_append(b, t, len);
    for (size_t k = chars; left && ok && (int)k < sp->width; k++) ok = core_buf_append(b, " ", 1);
    return ok;
}

/* One conversion of arg into b. */
static bool convert_one(tmpl_run *r, core_buf *b, const pct_spec *sp, const tmpl_value *arg)
{
    char spec[48], out[400];
    bool is_num = tmpl_is_num(arg);
    if (sp->conv == 's' || sp->conv == 'r' || sp->conv == 'a') {
        core_buf t;
        core_buf_init(&t, r->max_output);
        bool ok = core_buf_append(&t, "", 0) &&
                  (sp->conv == 's' ? tmpl_write_str(&t, arg) : tmpl_write_repr(&t, arg));
        ok = ok && pad_text(b, sp, t.data, t.len);
        core_buf_free(&t);
        return ok || tmpl_failb(r, MICA_ERANGE, "a string longer than %zu bytes", r->max_output);
    }
    if (sp->conv == 'c') {
        if (arg->kind == TMPL_STR && tmpl_cp_count(arg->u.str.s, arg->u.str.len) == 1)
            return pad_text(b, sp, arg->u.str.s, arg->u.str.len);
        if (arg->kind != TMPL_INT || arg->u.i < 0 || arg->u.i > 0x10FFFF)
            return tmpl_failb(r, MICA_EINVAL, "%%c requires int or char");
        int n = core_utf8_encode((uint32_t)arg->u.i, out);
        return pad_text(b, sp, out, (size_t)n);
    }
    const char *ints = "diuxXo", *floats = "fFeEgG";
    if (!strchr(ints, sp->conv) && !strchr(floats, sp->conv))
        return tmpl_failb(r, MICA_EINVAL, "unsupported format character '%c' (0x%x)", sp->conv,
                          (unsigned char)sp->conv);
    if (!is_num || (arg->kind == TMPL_FLOAT && strchr("xXo", sp->conv)))
        return tmpl_failb(r, MICA_EINVAL, "%%%c format: %s is required, not %s", sp->conv,
                          strchr("diu", sp->conv)    ? "a real number"
                          : strchr(floats, sp->conv) ? "a real number"
                                                     : "an integer",
                          tmpl_type_name(arg));
    if (strchr("xXo", sp->conv) && arg->kind == TMPL_INT && arg->u.i < 0)
        return tmpl_failb(r, MICA_EUNSUPPORTED, "%%%c of a negative number is not supported",
                          sp->conv);
    double f = arg->kind == TMPL_FLOAT  ? arg->u.f
               : arg->kind == TMPL_BOOL ? arg->u.b
                                        : (double)arg->u.i;
    int64_t i = arg->kind == TMPL_FLOAT  ? (int64_t)arg->u.f
                : arg->kind == TMPL_BOOL ? arg->u.b
                                         : arg->u.i;
    int w = sp->width, p = sp->prec;
    if (strchr(ints, sp->conv)) {
        char c = sp->conv == 'i' || sp->conv == 'u' ? 'd' : sp->conv;
        snprintf(spec, sizeof spec, "%%%s%s%s%sll%c", sp->flags, w >= 0 ? "*" : "",
                 p >= 0 ? ".*" : "", "", c);
    } else {
        snprintf(spec, sizeof spec, "%%%s%s%s%c", sp->flags, w >= 0 ? "*" : "", p >= 0 ? ".*" : "",
                 sp->conv);
    }
    int n;
    bool integer = strchr(ints, sp->conv) != NULL;
    if (w >= 0 && p >= 0)
        n = integer ? snprintf(out, sizeof out, spec, w, p, (long long)i)
                    : snprintf(out, sizeof out, spec, w, p, f);
    else if (w >= 0)
        n = integer ? snprintf(out, sizeof out, spec, w, (long long)i)
                    : snprintf(out, sizeof out, spec, w, f);
    else if (p >= 0)
        n = integer ? snprintf(out, sizeof out, spec, p, (long long)i)
                    : snprintf(out, sizeof out, spec, p, f);
    else
        n = integer ? snprintf(out, sizeof out, spec, (long long)i)
                    : snprintf(out, sizeof out, spec, f);
    if (n < 0 || (size_t)n >= sizeof out)
        return tmpl_failb(r, MICA_EUNSUPPORTED, "format too wide");
    return core_buf_append(b, out, (size_t)n) ||
           tmpl_failb(r, MICA_ERANGE, "a string longer than %zu bytes", r->max_output);
}

/* The value for one conversion: %(key)s from a mapping, else the next positional. */
static const tmpl_value *pct_arg(tmpl_run *r, const tmpl_value *fmt, size_t *i,
                                 const tmpl_value *args, tmpl_value *const *items, size_t n_items,
                                 size_t *next)
{
    const char *s = fmt->u.str.s;
    if (*i < fmt->u.str.len && s[*i] == '(') {
        const char *close = memchr(s + *i, ')', fmt->u.str.len - *i);
        if (!close) return tmpl_fail(r, MICA_EINVAL, "incomplete format key");
        if (args->kind != TMPL_DICT) return tmpl_fail(r, MICA_EINVAL, "format requires a mapping");
        tmpl_sv key = {s + *i + 1, (size_t)(close - s) - *i - 1};
        *i = (size_t)(close - s) + 1;
        const tmpl_value *v = tmpl_map_get_sv(args, key);
        return v ? v : tmpl_fail(r, MICA_EINVAL, "'%.*s'", (int)key.len, key.s);
    }
    if (*next >= n_items)
        return tmpl_fail(r, MICA_EINVAL, "not enough arguments for format string");
    return items[(*next)++];
}

tmpl_value *tmpl_str_percent(tmpl_run *r, const tmpl_value *fmt, const tmpl_value *args)
{
    tmpl_value *const *items =
        args->kind == TMPL_TUPLE ? args->u.seq.v : (tmpl_value *const *)&args;
    size_t n_items = args->kind == TMPL_TUPLE ? args->u.seq.len : 1, next = 0;
    const char *s = fmt->u.str.s;
    size_t n = fmt->u.str.len;
    core_buf b;
    core_buf_init(&b, r->max_output);
    bool ok = core_buf_append(&b, "", 0);
    for (size_t i = 0; ok && i < n;) {
        const char *pct = memchr(s + i, '%', n - i);
        size_t run = pct ? (size_t)(pct - s) - i : n - i;
        ok = core_buf_append(&b, s + i, run);
        i += run;
        if (!ok || i >= n) break;
        i++; /* % */
        if (i < n && s[i] == '%') {
            ok = core_buf_append(&b, "%", 1);
            i++;
            continue;
        }
        const tmpl_value *arg = pct_arg(r, fmt, &i, args, items, n_items, &next);
        pct_spec sp;
        ok = arg && parse_spec(r, fmt, &i, &sp) && convert_one(r, &b, &sp, arg);
        if (!ok) {
            core_buf_free(&b);
            return NULL;
        }
    }
    /* like CPython, an argument with __getitem__ (dict, list, Undefined) is not checked for
     * leftovers */
    bool getitem =
        args->kind == TMPL_DICT || args->kind == TMPL_LIST || args->kind == TMPL_UNDEFINED;
    if (ok && !getitem && next < n_items) {
        core_buf_free(&b);
        return tmpl_fail(r, MICA_EINVAL, "not all arguments converted during string formatting");
    }
    return buf_result(r, fmt, &b, ok);
}
