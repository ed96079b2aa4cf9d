/*
 * tmpl_parse.c - parses a template once into a tree of statements (text, {{ }}, for, if /
 * elif / else, set, set blocks, macro, break / continue, generation) after normalising its
 * newlines as jinja2 does; owns tmpl_parse / tmpl_free and the parser helpers that
 * tmpl_parse_expr.c shares. Unknown or unsupported tags fail here, naming the line.
 */
#include "tmpl_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define TMPL_MAX_SOURCE (4u << 20)

/* ---- helpers ----------------------------------------------------------------------------- */

bool tp_fail(tmpl_parser *p, const tmpl_tok *at, const char *fmt, ...)
{
    if (p->failed) return false; /* the first message is the one that matters */
    p->failed = true;
    if (!p->status) p->status = MICA_EFORMAT;
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    core_fail(p->err, p->status, "%s:%d: %s", p->t->name, at->line, msg);
    return false;
}

bool tp_is_name(const tmpl_tok *k, const char *name)
{
    return k->kind == TK_NAME && tmpl_sv_eq(k->text, name);
}

bool tp_is_op(const tmpl_tok *k, int op)
{
    return k->kind == TK_OP && k->op == op;
}

static const char *tok_desc(const tmpl_tok *k, char *buf, size_t cap)
{
    switch (k->kind) {
    case TK_EOF:
        return "end of template";
    case TK_BLOCK_END:
        return "end of statement block";
    case TK_VAR_END:
        return "end of print statement";
    case TK_DATA:
        return "template text";
    case TK_STRING:
        return "string";
    case TK_INT:
    case TK_FLOAT:
        return "number";
    default:
        snprintf(buf, cap, "%.*s", (int)(k->text.len < 40 ? k->text.len : 40), k->text.s);
        return buf;
    }
}

bool tp_expect_op(tmpl_parser *p, int op, const char *what)
{
    const tmpl_tok *k = tp_cur(p);
    if (tp_is_op(k, op)) {
        p->pos++;
        return true;
    }
    char buf[48];
    return tp_fail(p, k, "expected %s, got '%s'", what, tok_desc(k, buf, sizeof buf));
}

static bool expect_name(tmpl_parser *p, const char *name)
{
    const tmpl_tok *k = tp_cur(p);
    if (tp_is_name(k, name)) {
        p->pos++;
        return true;
    }
    char buf[48];
    return tp_fail(p, k, "expected '%s', got '%s'", name, tok_desc(k, buf, sizeof buf));
}

static bool expect_block_end(tmpl_parser *p)
{
    const tmpl_tok *k = tp_cur(p);
    if (k->kind == TK_BLOCK_END) {
        p->pos++;
        return true;
    }
    char buf[48];
    return tp_fail(p, k, "expected the end of the statement block, got '%s'",
                   tok_desc(k, buf, sizeof buf));
}

tmpl_node *tp_node(tmpl_parser *p, int kind, int line)
{
    tmpl_node *n = tmpl_arena_alloc(&p->t->arena, sizeof *n);
    if (!n) {
        tp_fail(p, tp_cur(p), "out of memory");
        return NULL;
    }
    n->kind = (uint8_t)kind;
    n->line = line;
    n->id = -1;
    return n;
}

bool tp_push(tmpl_parser *p, tmpl_node ***v, size_t *len, size_t *cap, tmpl_node *n)
{
    if (*len == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        tmpl_node **nv = tmpl_arena_alloc(&p->t->arena, ncap * sizeof *nv);
        if (!nv) return tp_fail(p, tp_cur(p), "out of memory");
        if (*len) memcpy(nv, *v, *len * sizeof *nv);
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*len)++] = n;
    return true;
}

static bool push_name(tmpl_parser *p, tmpl_node *n, size_t *cap, tmpl_sv name)
{
    if (n->n_names == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        tmpl_sv *nv = tmpl_arena_alloc(&p->t->arena, ncap * sizeof *nv);
        if (!nv) return tp_fail(p, tp_cur(p), "out of memory");
        if (n->n_names) memcpy(nv, n->names, n->n_names * sizeof *nv);
        n->names = nv;
        *cap = ncap;
    }
    n->names[n->n_names++] = name;
    return true;
}

tmpl_value *tp_const(tmpl_parser *p, tmpl_value *v)
{
    if (!v) {
        tp_fail(p, tp_cur(p), "out of memory");
        return NULL;
    }
    if (v->refs == TMPL_IMMORTAL) return v;
    tmpl_template *t = p->t;
    if (t->n_consts == t->cap_consts) {
        size_t ncap = t->cap_consts ? t->cap_consts * 2 : 64;
        tmpl_value **nv = realloc(t->consts, ncap * sizeof *nv);
        if (!nv) {
            tmpl_unref(v);
            tp_fail(p, tp_cur(p), "out of memory");
            return NULL;
        }
        t->consts = nv;
        t->cap_consts = ncap;
    }
    v->refs = TMPL_IMMORTAL;
    t->consts[t->n_consts++] = v;
    return v;
}

/* ---- statements -------------------------------------------------------------------------- */

static bool parse_body(tmpl_parser *p, const char *const *stops, tmpl_node ***out, size_t *n);

/* Parses statements until one of stops (NULL-terminated) begins a block; leaves pos at that
 * tag's name. */
static bool body_until(tmpl_parser *p, const char *const *stops, tmpl_node ***out, size_t *n,
                       const char *opener, int line)
{
    if (!parse_body(p, stops, out, n)) return false;
    if (tp_cur(p)->kind == TK_EOF)
        return tp_fail(p, tp_cur(p),
                       "unexpected end of template: the '%s' block of line %d is "
                       "not closed (expected '%s')",
                       opener, line, stops[0]);
    return true;
}

/* Loop / set targets: name (, name)*, optionally in parentheses. */
static bool targets(tmpl_parser *p, tmpl_node *n)
{
    bool paren = tp_is_op(tp_cur(p), OP_LPAREN);
    if (paren) p->pos++;
    size_t cap = 0;
    for (;;) {
        const tmpl_tok *k = tp_cur(p);
        if (k->kind != TK_NAME) return tp_fail(p, k, "expected a variable name");
        if (!push_name(p, n, &cap, k->text)) return false;
        p->pos++;
        if (!tp_is_op(tp_cur(p), OP_COMMA)) break;
        p->pos++;
        if (tp_cur(p)->kind != TK_NAME) break;
    }
    return !paren || tp_expect_op(p, OP_RPAREN, "')'");
}

static tmpl_node *parse_for(tmpl_parser *p, const tmpl_tok *k)
{
    static const char *const stops[] = {"endfor", "else", NULL};
    static const char *const end[] = {"endfor", NULL};
    p->pos++;
    tmpl_node *n = tp_node(p, N_FOR, k->line);
    if (!n || !targets(p, n) || !expect_name(p, "in") || !(n->a = tp_tuple(p, false))) return NULL;
    if (tp_is_name(tp_cur(p), "if")) {
        p->pos++;
        if (!(n->b = tp_expression(p, true))) return NULL;
    }
    if (tp_is_name(tp_cur(p), "recursive"))
        return tp_fail(p, tp_cur(p), "recursive loops are not supported"), NULL;
    if (!expect_block_end(p)) return NULL;
    p->loops++;
    bool ok = body_until(p, stops, &n->kids, &n->n_kids, "for", k->line);
    p->loops--;
    if (!ok) return NULL;
    if (tp_is_name(tp_cur(p), "else")) {
        p->pos++;
        if (!expect_block_end(p) || !body_until(p, end, &n->kids2, &n->n_kids2, "for", k->line))
            return NULL;
    }
    p->pos++;
    return expect_block_end(p) ? n : NULL;
}

/* if / elif: an elif is an if nested in the else branch. */
static tmpl_node *parse_if(tmpl_parser *p, const tmpl_tok *k)
{
    static const char *const stops[] = {"endif", "elif", "else", NULL};
    static const char *const end[] = {"endif", NULL};
    if (++p->depth > TMPL_MAX_DEPTH) {
        p->status = MICA_EUNSUPPORTED;
        return tp_fail(p, k, "elif chain longer than %d", TMPL_MAX_DEPTH), NULL;
    }
    p->pos++;
    tmpl_node *n = tp_node(p, N_IF, k->line);
    if (!n || !(n->a = tp_tuple(p, false)) || !expect_block_end(p) ||
        !body_until(p, stops, &n->kids, &n->n_kids, "if", k->line))
        return NULL;
    const tmpl_tok *at = tp_cur(p);
    size_t cap = 0;
    if (tp_is_name(at, "elif")) {
        tmpl_node *e = parse_if(p, at);
        if (!e || !tp_push(p, &n->kids2, &n->n_kids2, &cap, e)) return NULL;
        p->depth--;
        return n;
    }
    if (tp_is_name(at, "else")) {
        p->pos++;
        if (!expect_block_end(p) || !body_until(p, end, &n->kids2, &n->n_kids2, "if", k->line))
            return NULL;
    }
    p->pos++;
    p->depth--;
    return expect_block_end(p) ? n : NULL;
}

static tmpl_node *parse_set(tmpl_parser *p, const tmpl_tok *k)
{
    static const char *const end[] = {"endset", NULL};
    p->pos++;
    tmpl_node *n = tp_node(p, N_SET, k->line);
    if (!n) return NULL;
    const tmpl_tok *a = tp_cur(p), *b = tp_peek(p, 1), *c = tp_peek(p, 2);
    if (a->kind == TK_NAME && tp_is_op(b, OP_DOT) && c->kind == TK_NAME) {
        n->name = a->text;
        n->attr = c->text;
        p->pos += 3;
    } else if (!targets(p, n)) {
        return NULL;
    }
    if (tp_is_op(tp_cur(p), OP_ASSIGN)) {
        p->pos++;
        if (!(n->a = tp_tuple(p, true)) || !expect_block_end(p)) return NULL;
        return n;
    }
    if (n->attr.s || n->n_names != 1)
        return tp_fail(p, tp_cur(p), "a set block assigns one plain name"), NULL;
    if (tp_is_op(tp_cur(p), OP_PIPE))
        return tp_fail(p, tp_cur(p), "filters on set blocks are not supported"), NULL;
    n->kind = N_SET_BLOCK;
    if (!expect_block_end(p) || !body_until(p, end, &n->kids, &n->n_kids, "set", k->line))
        return NULL;
    p->pos++;
    return expect_block_end(p) ? n : NULL;
}

static bool macro_params(tmpl_parser *p, tmpl_node *n)
{
    size_t cap = 0, dcap = 0;
    if (!tp_expect_op(p, OP_LPAREN, "'('")) return false;
    while (!tp_is_op(tp_cur(p), OP_RPAREN)) {
        if (n->n_names && !tp_expect_op(p, OP_COMMA, "','")) return false;
        const tmpl_tok *k = tp_cur(p);
        if (k->kind != TK_NAME) return tp_fail(p, k, "expected a parameter name");
        p->pos++;
        tmpl_node *def = NULL;
        if (tp_is_op(tp_cur(p), OP_ASSIGN)) {
            p->pos++;
            if (!(def = tp_expression(p, true))) return false;
        } else if (n->n_kids2 && n->kids2[n->n_kids2 - 1]) {
            return tp_fail(p, k, "non-default argument follows default argument");
        }
        if (!push_name(p, n, &cap, k->text) || !tp_push(p, &n->kids2, &n->n_kids2, &dcap, def))
            return false;
    }
    p->pos++;
    return true;
}

static tmpl_node *parse_macro(tmpl_parser *p, const tmpl_tok *k)
{
    static const char *const end[] = {"endmacro", NULL};
    p->pos++;
    tmpl_node *n = tp_node(p, N_MACRO, k->line);
    if (!n) return NULL;
    if (tp_cur(p)->kind != TK_NAME) return tp_fail(p, tp_cur(p), "expected a macro name"), NULL;
    n->name = tp_cur(p)->text;
    p->pos++;
    int loops = p->loops;
    p->loops = 0;
    bool ok = macro_params(p, n) && expect_block_end(p) &&
              body_until(p, end, &n->kids, &n->n_kids, "macro", k->line);
    p->loops = loops;
    if (!ok) return NULL;
    p->pos++;
    if (tp_cur(p)->kind == TK_NAME) p->pos++; /* {% endmacro name %} */
    return expect_block_end(p) ? n : NULL;
}

static tmpl_node *parse_simple(tmpl_parser *p, const tmpl_tok *k, int kind)
{
    if (kind != N_BLOCK && p->loops == 0)
        return tp_fail(p, k, "'%.*s' outside of a loop", (int)k->text.len, k->text.s), NULL;
    p->pos++;
    tmpl_node *n = tp_node(p, kind, k->line);
    if (!n || !expect_block_end(p)) return NULL;
    if (kind == N_BLOCK) {
        static const char *const end[] = {"endgeneration", NULL};
        if (!body_until(p, end, &n->kids, &n->n_kids, "generation", k->line)) return NULL;
        p->pos++;
        if (!expect_block_end(p)) return NULL;
    }
    return n;
}

static tmpl_node *parse_tag(tmpl_parser *p);

static tmpl_node *parse_statement(tmpl_parser *p)
{
    if (++p->depth > TMPL_MAX_DEPTH) {
        p->status = MICA_EUNSUPPORTED;
        tp_fail(p, tp_cur(p), "statements nested deeper than %d levels", TMPL_MAX_DEPTH);
        return NULL;
    }
    tmpl_node *n = parse_tag(p);
    p->depth--;
    return n;
}

static tmpl_node *parse_tag(tmpl_parser *p)
{
    const tmpl_tok *k = tp_cur(p);
    if (k->kind != TK_NAME) return tp_fail(p, k, "expected a tag name after '{%%'"), NULL;
    if (tp_is_name(k, "for")) return parse_for(p, k);
    if (tp_is_name(k, "if")) return parse_if(p, k);
    if (tp_is_name(k, "set")) return parse_set(p, k);
    if (tp_is_name(k, "macro")) return parse_macro(p, k);
    if (tp_is_name(k, "break")) return parse_simple(p, k, N_BREAK);
    if (tp_is_name(k, "continue")) return parse_simple(p, k, N_CONTINUE);
    if (tp_is_name(k, "generation")) return parse_simple(p, k, N_BLOCK);
    static const char *const unsupported[] = {"call",       "filter",  "with",   "block",
                                              "extends",    "include", "import", "from",
                                              "autoescape", "do",      NULL};
    for (const char *const *u = unsupported; *u; u++)
        if (tp_is_name(k, *u)) return tp_fail(p, k, "the '%s' tag is not supported", *u), NULL;
    return tp_fail(p, k, "unknown tag '%.*s'", (int)k->text.len, k->text.s), NULL;
}

static bool is_stop(const tmpl_tok *k, const char *const *stops)
{
    for (; stops && *stops; stops++)
        if (tp_is_name(k, *stops)) return true;
    return false;
}

static bool parse_body(tmpl_parser *p, const char *const *stops, tmpl_node ***out, size_t *n)
{
    size_t cap = 0;
    for (;;) {
        const tmpl_tok *k = tp_cur(p);
        tmpl_node *s = NULL;
        switch (k->kind) {
        case TK_EOF:
            return true;
        case TK_DATA:
            if ((s = tp_node(p, N_TEXT, k->line))) s->name = k->text;
            p->pos++;
            break;
        case TK_VAR_BEGIN:
            p->pos++;
            if ((s = tp_node(p, N_OUTPUT, k->line)) && !(s->a = tp_tuple(p, true))) return false;
            if (s && tp_cur(p)->kind != TK_VAR_END) {
                char buf[48];
                return tp_fail(p, tp_cur(p), "expected the end of the print statement, got '%s'",
                               tok_desc(tp_cur(p), buf, sizeof buf));
            }
            p->pos++;
            break;
        case TK_BLOCK_BEGIN:
            p->pos++;
            if (is_stop(tp_cur(p), stops)) return true;
            s = parse_statement(p);
            break;
        default:
            return tp_fail(p, k, "unexpected token");
        }
        if (!s || !tp_push(p, out, n, &cap, s)) return false;
    }
}

/* ---- unknown filters and tests ----------------------------------------------------------- */

/* jinja2 rejects an unknown filter or test when it compiles the template, except inside an
 * if statement or an inline if ("soft" frames, where it raises only if evaluated); a for body,
 * a macro, a set block or a generation block starts a hard frame again. */
static bool check_kids(tmpl_parser *p, tmpl_node *const *v, size_t n, bool soft);

static bool check_names(tmpl_parser *p, const tmpl_node *n, bool soft)
{
    if (!n) return true;
    if ((n->kind == N_FILTER || n->kind == N_TEST) && n->id < 0 && !soft &&
        !(n->kind == N_FILTER && tmpl_filter_unsupported(n->name))) {
        tmpl_tok at = {.line = n->line};
        return tp_fail(p, &at, "No %s named '%.*s'.", n->kind == N_FILTER ? "filter" : "test",
                       (int)n->name.len, n->name.s);
    }
    bool hard_body =
        n->kind == N_FOR || n->kind == N_MACRO || n->kind == N_SET_BLOCK || n->kind == N_BLOCK;
    bool s = n->kind == N_IF || n->kind == N_COND ? true : soft;
    bool body = hard_body ? false : s;
    switch (n->kind) {
    case N_FOR:
        return check_names(p, n->a, soft) && check_names(p, n->b, false) &&
               check_kids(p, n->kids, n->n_kids, false) &&
               check_kids(p, n->kids2, n->n_kids2, soft);
    case N_MACRO:
        return check_kids(p, n->kids, n->n_kids, false) &&
               check_kids(p, n->kids2, n->n_kids2, false);
    default:
        return check_names(p, n->a, s) && check_names(p, n->b, s) && check_names(p, n->c, s) &&
               check_names(p, n->d, s) && check_kids(p, n->kids, n->n_kids, body) &&
               check_kids(p, n->kids2, n->n_kids2, s);
    }
}

static bool check_kids(tmpl_parser *p, tmpl_node *const *v, size_t n, bool soft)
{
    for (size_t i = 0; i < n; i++)
        if (!check_names(p, v[i], soft)) return false;
    return true;
}

/* ---- entry points ------------------------------------------------------------------------ */

/* jinja2 turns \r\n and \r into \n and drops one trailing newline (keep_trailing_newline). */
static char *normalise(const char *src, size_t len, size_t *out_len)
{
    char *d = malloc(len + 1);
    if (!d) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            d[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            d[k++] = src[i];
        }
    }
    if (k && d[k - 1] == '\n') k--;
    d[k] = '\0';
    *out_len = k;
    return d;
}

mica_status tmpl_parse(tmpl_template **out, const char *name, const char *src, size_t len,
                       mica_err *err)
{
    *out = NULL;
    if (len > TMPL_MAX_SOURCE)
        return core_fail(err, MICA_EUNSUPPORTED, "%s: template of %zu bytes (the cap is %u)", name,
                         len, TMPL_MAX_SOURCE);
    tmpl_template *t = calloc(1, sizeof *t);
    tmpl_tokens toks = {0};
    mica_status st = MICA_ENOMEM;
    if (!t || !(t->name = malloc(strlen(name) + 1)) ||
        !(t->src = normalise(src, len, &t->src_len))) {
        core_fail(err, MICA_ENOMEM, "%s: out of memory", name);
        goto fail;
    }
    memcpy(t->name, name, strlen(name) + 1);
    if ((st = tmpl_lex(t->name, t->src, t->src_len, &t->arena, &toks, err))) goto fail;
    tmpl_parser p = {.t = t, .tok = toks.v, .n = toks.len, .err = err};
    if (!parse_body(&p, NULL, &t->body, &t->n_body) || !check_kids(&p, t->body, t->n_body, false)) {
        st = p.status;
        goto fail;
    }
    free(toks.v);
    *out = t;
    return MICA_OK;
fail:
    free(toks.v);
    tmpl_free(t);
    return st;
}

void tmpl_free(tmpl_template *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n_consts; i++) {
        t->consts[i]->refs = 1;
        tmpl_unref(t->consts[i]);
    }
    free(t->consts);
    tmpl_arena_free(t->arena);
    free(t->src);
    free(t->name);
    free(t);
}
