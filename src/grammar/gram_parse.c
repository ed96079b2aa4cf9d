/*
 * gram_parse.c - GBNF text to rules (see grammar.h). Follows llama.cpp's grammar syntax: a
 * rule ends at a newline unless inside parentheses or right after `|`; repetitions of a
 * symbol become generated rules (`x*` -> `r ::= x r |`, `x{0,n}` nests n optional copies),
 * and a group becomes a rule of its own. After parsing, the rules are flattened into one
 * array and checked (undefined rules, left recursion, rules that never finish), and each
 * class gets its end position and an ASCII bitmap so that matching is one bit test.
 * Called by gram_api.c and the JSON-schema compiler; does not match anything itself.
 */
#include "grammar.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRAM_MAX_ELEMS  (1 << 22)
#define GRAM_MAX_RULES  (1 << 18)
#define GRAM_MAX_REPEAT 10000

typedef struct prule {
    char name[GRAM_NAME_MAX];
    gram_elem *e;
    int32_t n, cap;
    bool defined;
} prule;

typedef struct parser {
    const char *src, *end, *p;
    prule *rules;
    int32_t n_rules, cap_rules;
    int64_t n_elems; /* over all rules, against GRAM_MAX_ELEMS */
    mica_err *err;
    char *bad_rule;
    bool failed;
} parser;

static int line_of(const parser *ps, const char *at)
{
    int line = 1;
    for (const char *q = ps->src; q < at && q < ps->end; q++) line += *q == '\n';
    return line;
}

static bool perr(parser *ps, const char *fmt, ...) CORE_PRINTF(2, 3);
static bool perr(parser *ps, const char *fmt, ...)
{
    if (ps->failed) return false;
    ps->failed = true;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    core_fail(ps->err, MICA_EINVAL, "grammar: line %d: %s", line_of(ps, ps->p), msg);
    return false;
}

/* ---- rules under construction -------------------------------------------------------- */

static int32_t rule_find(const parser *ps, const char *name, size_t n)
{
    for (int32_t i = 0; i < ps->n_rules; i++)
        if (strlen(ps->rules[i].name) == n && !memcmp(ps->rules[i].name, name, n)) return i;
    return -1;
}

static int32_t rule_add(parser *ps, const char *name, size_t n)
{
    if (n >= GRAM_NAME_MAX) return perr(ps, "rule name too long"), -1;
    if (ps->n_rules >= GRAM_MAX_RULES) return perr(ps, "more than %d rules", GRAM_MAX_RULES), -1;
    if (ps->n_rules == ps->cap_rules) {
        int32_t cap = ps->cap_rules ? ps->cap_rules * 2 : 32;
        prule *r = realloc(ps->rules, (size_t)cap * sizeof *r);
        if (!r) return perr(ps, "out of memory"), -1;
        ps->rules = r;
        ps->cap_rules = cap;
    }
    prule *r = &ps->rules[ps->n_rules];
    memset(r, 0, sizeof *r);
    memcpy(r->name, name, n);
    r->name[n] = '\0';
    return ps->n_rules++;
}

static int32_t rule_get(parser *ps, const char *name, size_t n)
{
    int32_t id = rule_find(ps, name, n);
    return id >= 0 ? id : rule_add(ps, name, n);
}

/* A fresh rule named after its parent: "parent_1", "parent_2", ... */
static int32_t rule_generated(parser *ps, int32_t parent)
{
    char name[GRAM_NAME_MAX];
    for (int k = 1;; k++) {
        snprintf(name, sizeof name, "%.*s_%d", GRAM_NAME_MAX - 16, ps->rules[parent].name, k);
        if (rule_find(ps, name, strlen(name)) < 0) break;
    }
    const int32_t id = rule_add(ps, name, strlen(name));
    if (id >= 0) ps->rules[id].defined = true;
    return id;
}

/* Growable element lists: the rule being built is a local list until it is stored. */
typedef struct elist {
    gram_elem *e;
    int32_t n, cap;
} elist;

static bool push(parser *ps, elist *l, uint32_t type, uint32_t value)
{
    if (++ps->n_elems > GRAM_MAX_ELEMS) return perr(ps, "more than %d elements", GRAM_MAX_ELEMS);
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 16;
        gram_elem *e = realloc(l->e, (size_t)cap * sizeof *e);
        if (!e) return perr(ps, "out of memory");
        l->e = e;
        l->cap = cap;
    }
    l->e[l->n++] = (gram_elem){type, value};
    return true;
}

static bool push_all(parser *ps, elist *l, const gram_elem *e, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if (!push(ps, l, e[i].type, e[i].value)) return false;
    return true;
}

static void rule_store(parser *ps, int32_t id, elist *l)
{
    prule *r = &ps->rules[id];
    free(r->e);
    r->e = l->e;
    r->n = l->n;
    r->cap = l->cap;
    *l = (elist){0};
}

/* ---- lexical pieces ------------------------------------------------------------------ */

static bool is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Skips blanks and comments; newlines only when newline_ok. */
static void skip_space(parser *ps, bool newline_ok)
{
    while (ps->p < ps->end) {
        const char c = *ps->p;
        if (c == '#') {
            while (ps->p < ps->end && *ps->p != '\n') ps->p++;
        } else if (c == ' ' || c == '\t' || ((c == '\r' || c == '\n') && newline_ok)) {
            ps->p++;
        } else {
            return;
        }
    }
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool parse_hex(parser *ps, int n, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        const int h = ps->p < ps->end ? hex_val(*ps->p) : -1;
        if (h < 0) return perr(ps, "expected %d hex digits", n);
        v = v * 16 + (uint32_t)h;
        ps->p++;
    }
    if (v > 0x10FFFF) return perr(ps, "code point U+%X out of range", v);
    *out = v;
    return true;
}

/* One character of a literal or class: an escape or a UTF-8 code point. */
static bool parse_char(parser *ps, uint32_t *out)
{
    if (ps->p >= ps->end) return perr(ps, "unexpected end of grammar");
    if (*ps->p != '\\') {
        int n;
        *out = core_utf8_decode(ps->p, (size_t)(ps->end - ps->p), &n);
        if (*out == 0xFFFD && (unsigned char)*ps->p != 0xEF) return perr(ps, "invalid UTF-8");
        ps->p += n;
        return true;
    }
    if (++ps->p >= ps->end) return perr(ps, "unexpected end after '\\'");
    const char c = *ps->p++;
    switch (c) {
    case 'x':
        return parse_hex(ps, 2, out);
    case 'u':
        return parse_hex(ps, 4, out);
    case 'U':
        return parse_hex(ps, 8, out);
    case 't':
        *out = '\t';
        return true;
    case 'r':
        *out = '\r';
        return true;
    case 'n':
        *out = '\n';
        return true;
    case '\\':
    case '"':
    case '[':
    case ']':
    case '-':
    case '^':
    case '/':
        *out = (uint32_t)c;
        return true;
    default:
        return perr(ps, "unknown escape '\\%c'", c);
    }
}

/* ---- symbols ------------------------------------------------------------------------- */

static bool parse_literal(parser *ps, elist *l)
{
    const char *start = ps->p++; /* '"' */
    while (ps->p < ps->end && *ps->p != '"') {
        uint32_t c;
        if (!parse_char(ps, &c) || !push(ps, l, GRAM_CHAR, c)) return false;
    }
    if (ps->p >= ps->end) {
        ps->p = start; /* the line where it starts */
        return perr(ps, "unterminated string literal");
    }
    ps->p++;
    return true;
}

static bool parse_class(parser *ps, elist *l)
{
    ps->p++; /* '[' */
    uint32_t first = GRAM_CHAR;
    if (ps->p < ps->end && *ps->p == '^') {
        first = GRAM_CHAR_NOT;
        ps->p++;
    }
    const int32_t start = l->n;
    while (ps->p < ps->end && *ps->p != ']') {
        uint32_t c;
        if (!parse_char(ps, &c)) return false;
        if (!push(ps, l, l->n == start ? first : GRAM_CHAR_ALT, c)) return false;
        if (ps->p + 1 < ps->end && *ps->p == '-' && ps->p[1] != ']') {
            ps->p++;
            uint32_t hi;
            if (!parse_char(ps, &hi)) return false;
            if (hi < c) return perr(ps, "range %X-%X is backwards", c, hi);
            if (!push(ps, l, GRAM_CHAR_RNG, hi)) return false;
        }
    }
    if (ps->p >= ps->end) return perr(ps, "unterminated character class");
    if (l->n == start) return perr(ps, "empty character class");
    ps->p++;
    return true;
}

static bool parse_count(parser *ps, long *out)
{
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return perr(ps, "expected a number");
    long v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        v = v * 10 + (*ps->p++ - '0');
        if (v > GRAM_MAX_REPEAT) return perr(ps, "repetition count above %d", GRAM_MAX_REPEAT);
    }
    *out = v;
    return true;
}

/* {m}, {m,}, {m,n}: max -1 for unbounded. */
static bool parse_braces(parser *ps, long *min, long *max)
{
    ps->p++;
    skip_space(ps, true);
    if (!parse_count(ps, min)) return false;
    skip_space(ps, true);
    *max = *min;
    if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        skip_space(ps, true);
        *max = -1;
        if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9' && !parse_count(ps, max))
            return false;
        skip_space(ps, true);
    }
    if (ps->p >= ps->end || *ps->p != '}') return perr(ps, "expected '}'");
    ps->p++;
    if (*max >= 0 && *max < *min) return perr(ps, "repetition {%ld,%ld} is backwards", *min, *max);
    return true;
}

/* Replaces l[start..) (the last symbol x) by min copies of x and then `x*` or up to max-min
 * nested optional copies. */
static bool repeat(parser *ps, int32_t rule, elist *l, int32_t start, long min, long max)
{
    const int32_t n_sym = l->n - start;
    gram_elem *sym = malloc((size_t)n_sym * sizeof *sym);
    if (!sym) return perr(ps, "out of memory");
    memcpy(sym, l->e + start, (size_t)n_sym * sizeof *sym);
    l->n = start;
    ps->n_elems -= n_sym;
    bool ok = true;
    for (long i = 0; i < min && ok; i++) ok = push_all(ps, l, sym, n_sym);
    int32_t tail = -1; /* the rule for what may follow the copies */
    const long n_opt = max < 0 ? 1 : max - min;
    for (long k = 0; k < n_opt && ok; k++) {
        /* unbounded: r ::= x r | ; bounded: r_k ::= x r_{k-1} | (r_0 absent) */
        const int32_t r = rule_generated(ps, rule);
        elist body = {0};
        ok = r >= 0 && push_all(ps, &body, sym, n_sym);
        const int32_t next = max < 0 ? r : tail;
        if (ok && next >= 0) ok = push(ps, &body, GRAM_RULE, (uint32_t)next);
        ok = ok && push(ps, &body, GRAM_ALT, 0) && push(ps, &body, GRAM_END, 0);
        if (ok) rule_store(ps, r, &body);
        free(body.e);
        tail = r;
    }
    if (ok && tail >= 0) ok = push(ps, l, GRAM_RULE, (uint32_t)tail);
    free(sym);
    return ok;
}

static bool parse_alternates(parser *ps, int32_t rule, bool nested);

static bool parse_group(parser *ps, int32_t rule, elist *l)
{
    ps->p++; /* '(' */
    skip_space(ps, true);
    const int32_t sub = rule_generated(ps, rule);
    if (sub < 0 || !parse_alternates(ps, sub, true)) return false;
    if (ps->p >= ps->end || *ps->p != ')') return perr(ps, "expected ')'");
    ps->p++;
    return push(ps, l, GRAM_RULE, (uint32_t)sub);
}

static bool parse_repetition(parser *ps, int32_t rule, elist *l, int32_t last)
{
    if (last == l->n) return perr(ps, "'%c' without a symbol before it", *ps->p);
    long min = 0, max = -1;
    const char c = *ps->p;
    if (c == '{') {
        if (!parse_braces(ps, &min, &max)) return false;
    } else {
        ps->p++;
        min = c == '+';
        max = c == '?' ? 1 : -1;
    }
    return repeat(ps, rule, l, last, min, max);
}

static bool parse_sequence(parser *ps, int32_t rule, elist *l, bool nested)
{
    int32_t last = l->n;
    while (ps->p < ps->end && !ps->failed) {
        const char c = *ps->p;
        const int32_t here = l->n;
        bool ok;
        if (c == '"') {
            ok = parse_literal(ps, l);
        } else if (c == '[') {
            ok = parse_class(ps, l);
        } else if (c == '.') {
            ps->p++;
            ok = push(ps, l, GRAM_CHAR_ANY, 0);
        } else if (c == '(') {
            ok = parse_group(ps, rule, l);
        } else if (is_word(c)) {
            const char *w = ps->p;
            while (ps->p < ps->end && is_word(*ps->p)) ps->p++;
            const int32_t ref = rule_get(ps, w, (size_t)(ps->p - w));
            ok = ref >= 0 && push(ps, l, GRAM_RULE, (uint32_t)ref);
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            ok = parse_repetition(ps, rule, l, last);
            skip_space(ps, nested);
            continue; /* the repeated symbol stays the last one */
        } else {
            break;
        }
        if (!ok) return false;
        last = here;
        skip_space(ps, nested);
    }
    return !ps->failed;
}

static bool parse_alternates(parser *ps, int32_t rule, bool nested)
{
    elist l = {0};
    bool ok = parse_sequence(ps, rule, &l, nested);
    while (ok && ps->p < ps->end && *ps->p == '|') {
        ps->p++;
        skip_space(ps, true);
        ok = push(ps, &l, GRAM_ALT, 0) && parse_sequence(ps, rule, &l, nested);
    }
    ok = ok && push(ps, &l, GRAM_END, 0);
    if (ok) rule_store(ps, rule, &l);
    free(l.e);
    return ok;
}

static bool parse_rule(parser *ps)
{
    const char *w = ps->p;
    while (ps->p < ps->end && is_word(*ps->p)) ps->p++;
    if (ps->p == w) return perr(ps, "expected a rule name");
    const int32_t id = rule_get(ps, w, (size_t)(ps->p - w));
    if (id < 0) return false;
    if (ps->rules[id].defined) return perr(ps, "rule '%s' is defined twice", ps->rules[id].name);
    ps->rules[id].defined = true;
    skip_space(ps, false);
    if (ps->end - ps->p < 3 || memcmp(ps->p, "::=", 3)) return perr(ps, "expected '::='");
    ps->p += 3;
    skip_space(ps, true);
    if (!parse_alternates(ps, id, false)) return false;
    skip_space(ps, false);
    if (ps->p < ps->end && *ps->p != '\n' && *ps->p != '\r')
        return perr(ps, "unexpected '%c'", *ps->p);
    skip_space(ps, true);
    return true;
}

/* ---- the flat form and its checks ---------------------------------------------------- */

static bool is_end(uint32_t t)
{
    return t == GRAM_END || t == GRAM_ALT;
}

static mica_status flatten(gram *g, const parser *ps, mica_err *err)
{
    g->n_rules = ps->n_rules;
    int64_t n = 0, n_alts = 0;
    for (int32_t r = 0; r < ps->n_rules; r++) {
        n += ps->rules[r].n;
        for (int32_t i = 0; i < ps->rules[r].n; i++) n_alts += ps->rules[r].e[i].type == GRAM_ALT;
        n_alts++;
    }
    g->n_elems = (int32_t)n;
    g->elems = malloc((size_t)n * sizeof *g->elems);
    g->rule_start = malloc((size_t)g->n_rules * sizeof *g->rule_start);
    g->alt_first = malloc((size_t)(g->n_rules + 1) * sizeof *g->alt_first);
    g->alt_pos = malloc((size_t)n_alts * sizeof *g->alt_pos);
    g->names = malloc((size_t)g->n_rules * sizeof *g->names);
    g->after = calloc((size_t)n, sizeof *g->after);
    g->ascii = calloc((size_t)n, sizeof *g->ascii);
    if (!g->elems || !g->rule_start || !g->alt_first || !g->alt_pos || !g->names || !g->after ||
        !g->ascii)
        return core_fail(err, MICA_ENOMEM, "grammar: out of memory");
    int32_t at = 0, a = 0;
    for (int32_t r = 0; r < g->n_rules; r++) {
        memcpy(g->names[r], ps->rules[r].name, GRAM_NAME_MAX);
        g->rule_start[r] = at;
        g->alt_first[r] = a;
        g->alt_pos[a++] = at;
        for (int32_t i = 0; i < ps->rules[r].n; i++) {
            g->elems[at + i] = ps->rules[r].e[i];
            if (ps->rules[r].e[i].type == GRAM_ALT) g->alt_pos[a++] = at + i + 1;
        }
        at += ps->rules[r].n;
    }
    g->alt_first[g->n_rules] = a;
    return MICA_OK;
}

/* Walks the class at p, recording its end and the ASCII code points it takes. */
static void class_index(gram *g, int32_t p)
{
    const gram_elem *e = g->elems;
    int32_t q = p;
    uint64_t bits[2] = {0, 0};
    if (e[q].type == GRAM_CHAR_ANY) {
        bits[0] = bits[1] = ~0ull;
        q++;
    } else {
        do {
            uint32_t lo = e[q].value, hi = lo;
            if (e[q + 1].type == GRAM_CHAR_RNG) hi = e[++q].value;
            for (uint32_t c = lo; c <= hi && c < 128; c++) bits[c >> 6] |= 1ull << (c & 63);
            q++;
        } while (e[q].type == GRAM_CHAR_ALT);
        if (e[p].type == GRAM_CHAR_NOT) {
            bits[0] = ~bits[0];
            bits[1] = ~bits[1];
        }
    }
    g->after[p] = q;
    g->ascii[p][0] = bits[0];
    g->ascii[p][1] = bits[1];
}

static void index_classes(gram *g)
{
    for (int32_t p = 0; p < g->n_elems;) {
        const uint32_t t = g->elems[p].type;
        if (t == GRAM_CHAR || t == GRAM_CHAR_NOT || t == GRAM_CHAR_ANY) {
            class_index(g, p);
            p = g->after[p];
        } else {
            p++;
        }
    }
}

/* nullable: some alternative is only nullable rules. productive: some alternative is only
 * terminals and productive rules. Both as fixpoints. */
static void fixpoint(const gram *g, bool *flag, bool nullable)
{
    for (bool changed = true; changed;) {
        changed = false;
        for (int32_t r = 0; r < g->n_rules; r++) {
            if (flag[r]) continue;
            for (int32_t a = g->alt_first[r]; a < g->alt_first[r + 1] && !flag[r]; a++) {
                bool all = true;
                for (int32_t p = g->alt_pos[a]; !is_end(g->elems[p].type) && all; p++) {
                    const gram_elem *e = &g->elems[p];
                    all = e->type == GRAM_RULE ? flag[e->value] : !nullable;
                }
                if (all) flag[r] = changed = true;
            }
        }
    }
}

/* Depth-first over "rule r can start with rule s" edges; a back edge is left recursion. */
static int32_t left_cycle(const gram *g, const bool *nullable, uint8_t *color, int32_t r)
{
    color[r] = 1;
    for (int32_t a = g->alt_first[r]; a < g->alt_first[r + 1]; a++) {
        for (int32_t p = g->alt_pos[a]; g->elems[p].type == GRAM_RULE; p++) {
            const int32_t s = (int32_t)g->elems[p].value;
            if (color[s] == 1) return s;
            if (color[s] == 0) {
                const int32_t bad = left_cycle(g, nullable, color, s);
                if (bad >= 0) return bad;
            }
            if (!nullable[s]) break;
        }
    }
    color[r] = 2;
    return -1;
}

/* Marks the rules reachable from r; todo has room for every rule. Iterative: repetitions
 * make long chains of rules. */
static void reach(const gram *g, bool *seen, int32_t *todo, int32_t r)
{
    int32_t n = 0;
    seen[r] = true;
    todo[n++] = r;
    while (n > 0) {
        const int32_t q = todo[--n];
        for (int32_t p = g->rule_start[q]; g->elems[p].type != GRAM_END; p++) {
            const int32_t s = (int32_t)g->elems[p].value;
            if (g->elems[p].type != GRAM_RULE || seen[s]) continue;
            seen[s] = true;
            todo[n++] = s;
        }
    }
}

static mica_status check_rules(const gram *g, char *bad_rule, mica_err *err)
{
    const size_t n = (size_t)g->n_rules;
    bool *nullable = calloc(n, 1), *productive = calloc(n, 1), *seen = calloc(n, 1);
    uint8_t *color = calloc(n, 1);
    int32_t *todo = calloc(n, sizeof *todo);
    mica_status st = MICA_OK;
    if (!nullable || !productive || !seen || !color || !todo) {
        st = core_fail(err, MICA_ENOMEM, "grammar: out of memory");
        goto done;
    }
    fixpoint(g, nullable, true);
    fixpoint(g, productive, false);
    for (int32_t r = 0; r < g->n_rules && !st; r++) {
        const int32_t bad = color[r] ? -1 : left_cycle(g, nullable, color, r);
        if (bad >= 0) {
            if (bad_rule) snprintf(bad_rule, GRAM_NAME_MAX, "%s", g->names[bad]);
            st = core_fail(err, MICA_EINVAL, "grammar: rule '%s' is left-recursive", g->names[bad]);
        }
    }
    reach(g, seen, todo, g->root);
    for (int32_t r = 0; r < g->n_rules && !st; r++)
        if (seen[r] && !productive[r]) {
            if (bad_rule) snprintf(bad_rule, GRAM_NAME_MAX, "%s", g->names[r]);
            st = core_fail(err, MICA_EINVAL,
                           "grammar: rule '%s' can never finish (it always recurses)", g->names[r]);
        }
done:
    free(nullable);
    free(productive);
    free(seen);
    free(color);
    free(todo);
    return st;
}

static mica_status finish(parser *ps, gram **out, mica_err *err)
{
    for (int32_t r = 0; r < ps->n_rules; r++)
        if (!ps->rules[r].defined) {
            if (ps->bad_rule) snprintf(ps->bad_rule, GRAM_NAME_MAX, "%s", ps->rules[r].name);
            return core_fail(err, MICA_EINVAL, "grammar: rule '%s' is used but not defined",
                             ps->rules[r].name);
        }
    const int32_t root = rule_find(ps, "root", 4);
    if (root < 0) return core_fail(err, MICA_EINVAL, "grammar: no 'root' rule");
    gram *g = core_calloc(1, sizeof *g);
    if (!g) return core_fail(err, MICA_ENOMEM, "grammar: out of memory");
    g->root = root;
    mica_status st = flatten(g, ps, err);
    if (!st) index_classes(g);
    if (!st) st = check_rules(g, ps->bad_rule, err);
    if (st) {
        gram_free(g);
        return st;
    }
    *out = g;
    return MICA_OK;
}

mica_status gram_parse(gram **out, const char *text, size_t len, char bad_rule[GRAM_NAME_MAX],
                       mica_err *err)
{
    *out = NULL;
    if (bad_rule) bad_rule[0] = '\0';
    parser ps = {.src = text, .end = text + len, .p = text, .err = err, .bad_rule = bad_rule};
    skip_space(&ps, true);
    while (ps.p < ps.end && parse_rule(&ps)) {
    }
    mica_status st = ps.failed ? MICA_EINVAL : finish(&ps, out, err);
    for (int32_t r = 0; r < ps.n_rules; r++) free(ps.rules[r].e);
    free(ps.rules);
    return st;
}

void gram_free(gram *g)
{
    if (!g) return;
    free(g->elems);
    free(g->rule_start);
    free(g->alt_first);
    free(g->alt_pos);
    free(g->names);
    free(g->after);
    free(g->ascii);
    free(g);
}

/* A code point in [lo, hi] of the class at p whose CHAR_NOT flag is ignored. */
static bool class_has(const gram_elem *e, int32_t p, uint32_t c)
{
    int32_t q = p;
    do {
        const uint32_t lo = e[q].value;
        uint32_t hi = lo;
        if (e[q + 1].type == GRAM_CHAR_RNG) hi = e[++q].value;
        if (c >= lo && c <= hi) return true;
        q++;
    } while (e[q].type == GRAM_CHAR_ALT);
    return false;
}

bool gram_class_match(const gram *g, int32_t p, uint32_t c)
{
    if (c < 128) return (g->ascii[p][c >> 6] >> (c & 63)) & 1;
    const gram_elem *e = g->elems;
    if (e[p].type == GRAM_CHAR_ANY) return true;
    return class_has(e, p, c) != (e[p].type == GRAM_CHAR_NOT);
}
