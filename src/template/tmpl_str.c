/*
 * tmpl_str.c - text as Python sees it, for the template renderer: code points over UTF-8,
 * str.isspace / splitlines boundaries, upper/lower case mapping (ASCII, Latin-1, Latin
 * Extended-A, Greek, Cyrillic), and Python's str() / repr() of every template value
 * (including the shortest round-trip repr of floats). Called by the other tmpl_*.c files.
 */
#include "tmpl_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

bool tmpl_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

bool tmpl_is_linebreak(uint32_t c)
{
    return (c >= 0x0A && c <= 0x0D) || (c >= 0x1C && c <= 0x1E) || c == 0x85 || c == 0x2028 ||
           c == 0x2029;
}

/* Python's str.isprintable for a code point above ASCII (a table of the common
 * non-printable ranges: C1 controls, format characters, separators, surrogates, private use). */
static bool is_printable_high(uint32_t c)
{
    static const uint32_t bad[][2] = {
        {0x80, 0xA0},       {0xAD, 0xAD},       {0x600, 0x605},      {0x61C, 0x61C},
        {0x6DD, 0x6DD},     {0x70F, 0x70F},     {0x180E, 0x180E},    {0x1680, 0x1680},
        {0x2000, 0x200F},   {0x2028, 0x202F},   {0x205F, 0x2064},    {0x2066, 0x206F},
        {0x3000, 0x3000},   {0xD800, 0xF8FF},   {0xFEFF, 0xFEFF},    {0xFFF9, 0xFFFB},
        {0xFFFE, 0xFFFF},   {0x110BD, 0x110BD}, {0x1BCA0, 0x1BCA3},  {0x1D173, 0x1D17A},
        {0xE0001, 0xE0001}, {0xE0020, 0xE007F}, {0xF0000, 0x10FFFF},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (c >= bad[i][0] && c <= bad[i][1]) return false;
    return true;
}

uint32_t tmpl_upper_cp(uint32_t c)
{
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c < 0x80) return c;
    if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c == 0xB5) return 0x39C;
    if (c >= 0x100 && c <= 0x17F) {
        bool odd_lower = (c <= 0x137) || (c >= 0x14A && c <= 0x177);
        if (odd_lower && (c & 1)) return c - 1;
        if (!odd_lower && c != 0x138 && c != 0x178 && !(c & 1)) return c - 1;
        return c == 0x17F ? 'S' : c;
    }
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
    if (c == 0x3C2) return 0x3A3;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    return c;
}

uint32_t tmpl_lower_cp(uint32_t c)
{
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0x80) return c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if (c >= 0x100 && c <= 0x17F) {
        bool even_upper = (c <= 0x137) || (c >= 0x14A && c <= 0x177);
        if (even_upper && !(c & 1)) return c + 1;
        if (!even_upper && c != 0x138 && c != 0x149 && c != 0x17F && (c & 1)) return c + 1;
        return c;
    }
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

uint32_t tmpl_decode(const char *s, size_t n, size_t *len)
{
    if ((unsigned char)s[0] < 0x80) {
        *len = 1;
        return (unsigned char)s[0];
    }
    int l = 1;
    uint32_t cp = core_utf8_decode(s, n, &l);
    *len = (size_t)l;
    return cp;
}

size_t tmpl_cp_count(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) count++;
    return count;
}

size_t tmpl_cp_offset(const char *s, size_t n, size_t i)
{
    size_t off = 0, len;
    while (i-- > 0 && off < n) {
        tmpl_decode(s + off, n - off, &len);
        off += len;
    }
    return off < n ? off : n;
}

size_t tmpl_lstrip_len(const char *s, size_t n)
{
    size_t off = 0, len;
    while (off < n && tmpl_is_space(tmpl_decode(s + off, n - off, &len))) off += len;
    return off;
}

size_t tmpl_rstrip_len(const char *s, size_t n)
{
    size_t keep = 0, off = 0, len;
    while (off < n) {
        uint32_t c = tmpl_decode(s + off, n - off, &len);
        off += len;
        if (!tmpl_is_space(c)) keep = off;
    }
    return keep;
}

/* ---- str() and repr() -------------------------------------------------------------------- */

static bool put(core_buf *out, const char *s)
{
    return core_buf_append(out, s, strlen(s));
}

bool tmpl_write_float(core_buf *out, double f)
{
    if (isnan(f)) return put(out, "nan");
    if (isinf(f)) return put(out, f < 0 ? "-inf" : "inf");
    char buf[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    /* buf: [-]d[.ddd]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *p = buf;
    bool neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    char s[64];
    size_t k = 0;
    if (neg) s[k++] = '-';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            for (int i = 0; i <= exp10; i++) s[k++] = (size_t)i < nd ? digits[i] : '0';
            s[k++] = '.';
            if ((size_t)exp10 + 1 < nd)
                for (size_t i = (size_t)exp10 + 1; i < nd; i++) s[k++] = digits[i];
            else
                s[k++] = '0';
        } else {
            s[k++] = '0';
            s[k++] = '.';
            for (int i = 0; i < -exp10 - 1; i++) s[k++] = '0';
            for (size_t i = 0; i < nd; i++) s[k++] = digits[i];
        }
        s[k] = '\0';
    } else {
        s[k++] = digits[0];
        if (nd > 1) {
            s[k++] = '.';
            for (size_t i = 1; i < nd; i++) s[k++] = digits[i];
        }
        snprintf(s + k, sizeof s - k, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    return put(out, s);
}

static bool write_str_repr(core_buf *out, const char *s, size_t n)
{
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    if (!core_buf_append(out, &q, 1)) return false;
    size_t off = 0, len;
    while (off < n) {
        uint32_t c = tmpl_decode(s + off, n - off, &len);
        char esc[16];
        const char *e = NULL;
        if (c == (uint32_t)q || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", (char)c), e = esc;
        else if (c == '\t')
            e = "\\t";
        else if (c == '\n')
            e = "\\n";
        else if (c == '\r')
            e = "\\r";
        else if (c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0xFF && !is_printable_high(c)))
            snprintf(esc, sizeof esc, "\\x%02x", (unsigned)c), e = esc;
        else if (c > 0xFF && !is_printable_high(c))
            snprintf(esc, sizeof esc, c <= 0xFFFF ? "\\u%04x" : "\\U%08x", (unsigned)c), e = esc;
        if (e ? !put(out, e) : !core_buf_append(out, s + off, len)) return false;
        off += len;
    }
    return core_buf_append(out, &q, 1);
}

/* Containers deeper than this print as "..." (jinja2 would raise RecursionError, or print
 * {...} for a namespace that contains itself); printing never recurses without bound. */
#define PRINT_MAX_DEPTH 200

static bool write_repr(core_buf *out, const tmpl_value *v, int depth);
static bool write_str(core_buf *out, const tmpl_value *v, int depth);

static bool write_items(core_buf *out, tmpl_value *const *v, size_t n, const char *open,
                        const char *close, int depth)
{
    if (!put(out, open)) return false;
    for (size_t i = 0; i < n; i++)
        if ((i && !put(out, ", ")) || !write_repr(out, v[i], depth + 1)) return false;
    return put(out, close);
}

static bool write_map(core_buf *out, const tmpl_value *m, int depth)
{
    if (!put(out, "{")) return false;
    for (size_t i = 0; i < m->u.map.len; i++)
        if ((i && !put(out, ", ")) || !write_repr(out, m->u.map.k[i], depth + 1) ||
            !put(out, ": ") || !write_repr(out, m->u.map.v[i], depth + 1))
            return false;
    return put(out, "}");
}

static bool write_repr(core_buf *out, const tmpl_value *v, int depth)
{
    switch ((tmpl_kind)v->kind) {
    case TMPL_STR:
        if ((v->flags & TMPL_F_MARKUP) && !put(out, "Markup(")) return false;
        return write_str_repr(out, v->u.str.s, v->u.str.len) &&
               (!(v->flags & TMPL_F_MARKUP) || put(out, ")"));
    case TMPL_UNDEFINED:
        return put(out, "Undefined");
    default:
        return write_str(out, v, depth);
    }
}

static bool write_str(core_buf *out, const tmpl_value *v, int depth)
{
    char buf[64];
    if (depth > PRINT_MAX_DEPTH) return put(out, "...");
    switch ((tmpl_kind)v->kind) {
    case TMPL_UNDEFINED:
        return true;
    case TMPL_NONE:
        return put(out, "None");
    case TMPL_BOOL:
        return put(out, v->u.b ? "True" : "False");
    case TMPL_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v->u.i);
        return put(out, buf);
    case TMPL_FLOAT:
        return tmpl_write_float(out, v->u.f);
    case TMPL_STR:
        return core_buf_append(out, v->u.str.s, v->u.str.len);
    case TMPL_LIST:
        return write_items(out, v->u.seq.v, v->u.seq.len, "[", "]", depth);
    case TMPL_TUPLE:
        return write_items(out, v->u.seq.v, v->u.seq.len, "(", v->u.seq.len == 1 ? ",)" : ")",
                           depth);
    case TMPL_DICT:
        return write_map(out, v, depth);
    case TMPL_NAMESPACE:
        return put(out, "<Namespace ") && write_map(out, v, depth) && put(out, ">");
    case TMPL_GENERATOR:
        return put(out, "<generator object>");
    case TMPL_MACRO:
        return put(out, "<Macro '") &&
               core_buf_append(out, v->u.macro->name.s, v->u.macro->name.len) && put(out, "'>");
    case TMPL_FUNC:
        return put(out, "<built-in method>");
    case TMPL_LOOP:
        snprintf(buf, sizeof buf, "<LoopContext %zu/%zu>", v->u.loop.index0 + 1,
                 v->u.loop.items->u.seq.len);
        return put(out, buf);
    }
    return true;
}

bool tmpl_write_repr(core_buf *out, const tmpl_value *v)
{
    return write_repr(out, v, 0);
}

bool tmpl_write_str(core_buf *out, const tmpl_value *v)
{
    return write_str(out, v, 0);
}

const char *tmpl_type_name(const tmpl_value *v)
{
    static const char *const names[] = {
        "Undefined",
        "NoneType",
        "bool",
        "int",
        "float",
        "str",
        "list",
        "tuple",
        "dict",
        "Namespace",
        "generator",
        "Macro",
        "builtin_function_or_method",
        "LoopContext",
    };
    if (v->kind == TMPL_STR && (v->flags & TMPL_F_MARKUP)) return "Markup";
    return names[v->kind];
}

void tmpl_object_repr(const tmpl_value *v, char *buf, size_t cap)
{
    static const char *const names[] = {
        "jinja2.runtime.Undefined object",
        "None",
        "bool object",
        "int object",
        "float object",
        "str object",
        "list object",
        "tuple object",
        "dict object",
        "jinja2.utils.Namespace object",
        "generator object",
        "jinja2.runtime.Macro object",
        "builtin_function_or_method object",
        "jinja2.runtime.LoopContext object",
    };
    if (v->kind == TMPL_STR && (v->flags & TMPL_F_MARKUP))
        snprintf(buf, cap, "markupsafe.Markup object");
    else
        snprintf(buf, cap, "%s", names[v->kind]);
}

bool tmpl_write_escaped(core_buf *out, const char *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = NULL;
        switch (s[i]) {
        case '&':
            e = "&amp;";
            break;
        case '<':
            e = "&lt;";
            break;
        case '>':
            e = "&gt;";
            break;
        case '"':
            e = "&#34;";
            break;
        case '\'':
            e = "&#39;";
            break;
        default:
            continue;
        }
        if (!core_buf_append(out, s + start, i - start) || !put(out, e)) return false;
        start = i + 1;
    }
    return core_buf_append(out, s + start, n - start);
}
