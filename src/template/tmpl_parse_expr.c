/*
 * tmpl_parse_expr.c - expressions of the template language, parsed into tmpl_node trees with
 * jinja2's grammar and precedence: inline if, or / and / not, comparisons (chained, in, not
 * in), + -, ~, * / // %, ** (left-associative as in jinja2), unary - +, then postfix
 * attribute / item / slice / call, filters (|) and tests (is). Called by tmpl_parse.c.
 */
#include "tmpl_int.h"

static bool enter(tmpl_parser *p)
{
    if (++p->edepth > TMPL_MAX_DEPTH) {
        p->status = MICA_EUNSUPPORTED;
        return tp_fail(p, tp_cur(p), "expression nested deeper than %d levels", TMPL_MAX_DEPTH);
    }
    return true;
}

static tmpl_node *leave(tmpl_parser *p, tmpl_node *n)
{
    p->edepth--;
    return n;
}

static int height(const tmpl_node *n)
{
    return n ? n->height : 0;
}

/* Sets n's height from its children and refuses trees too tall to evaluate recursively
 * (a + b + ... with thousands of terms, x.a.b.c...). */
static tmpl_node *deepen(tmpl_parser *p, tmpl_node *n)
{
    if (!n) return NULL;
    int h = height(n->a);
    if (height(n->b) > h) h = height(n->b);
    if (height(n->c) > h) h = height(n->c);
    if (height(n->d) > h) h = height(n->d);
    for (size_t i = 0; i < n->n_kids; i++)
        if (height(n->kids[i]) > h) h = height(n->kids[i]);
    for (size_t i = 0; i < n->n_kids2; i++)
        if (height(n->kids2[i]) > h) h = height(n->kids2[i]);
    n->height = h + 1;
    if (n->height <= TMPL_MAX_HEIGHT) return n;
    p->status = MICA_EUNSUPPORTED;
    tmpl_tok at = {.line = n->line};
    tp_fail(p, &at, "expression nested deeper than %d levels", TMPL_MAX_HEIGHT);
    return NULL;
}

static tmpl_node *binary(tmpl_parser *p, int kind, int op, tmpl_node *a, tmpl_node *b, int line)
{
    if (!a || !b) return NULL;
    tmpl_node *n = tp_node(p, kind, line);
    if (!n) return NULL;
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return deepen(p, n);
}

static tmpl_node *unary(tmpl_parser *p, int kind, tmpl_node *a, int line)
{
    if (!a) return NULL;
    tmpl_node *n = tp_node(p, kind, line);
    if (n) n->a = a;
    return deepen(p, n);
}

/* ---- call arguments ---------------------------------------------------------------------- */

/* ( args, name=value, ... ) into n->kids / n->names + n->kids2. */
static bool call_args(tmpl_parser *p, tmpl_node *n)
{
    if (!tp_expect_op(p, OP_LPAREN, "'('")) return false;
    size_t cap = 0, kcap = 0, ncap = 0;
    bool need_comma = false;
    while (!tp_is_op(tp_cur(p), OP_RPAREN)) {
        if (need_comma) {
            if (!tp_expect_op(p, OP_COMMA, "','")) return false;
            if (tp_is_op(tp_cur(p), OP_RPAREN)) break;
        }
        const tmpl_tok *k = tp_cur(p);
        if (tp_is_op(k, OP_MUL) || tp_is_op(k, OP_POW))
            return tp_fail(p, k, "*args and **kwargs in calls are not supported");
        if (k->kind == TK_NAME && tp_is_op(tp_peek(p, 1), OP_ASSIGN)) {
            p->pos += 2;
            tmpl_node *v = tp_expression(p, true);
            if (!v || !tp_push(p, &n->kids2, &n->n_kids2, &kcap, v)) return false;
            if (n->n_names == ncap) {
                size_t nc = ncap ? ncap * 2 : 4;
                tmpl_sv *nv = tmpl_arena_alloc(&p->t->arena, nc * sizeof *nv);
                if (!nv) return tp_fail(p, k, "out of memory");
                if (n->n_names) memcpy(nv, n->names, n->n_names * sizeof *nv);
                n->names = nv;
                ncap = nc;
            }
            n->names[n->n_names++] = k->text;
        } else {
            if (n->n_kids2) return tp_fail(p, k, "positional argument follows keyword argument");
            tmpl_node *v = tp_expression(p, true);
            if (!v || !tp_push(p, &n->kids, &n->n_kids, &cap, v)) return false;
        }
        need_comma = true;
    }
    p->pos++;
    return true;
}

/* ---- primaries --------------------------------------------------------------------------- */

static tmpl_node *const_node(tmpl_parser *p, tmpl_value *v, int line)
{
    if (!tp_const(p, v)) return NULL;
    tmpl_node *n = tp_node(p, N_CONST, line);
    if (n) n->value = v;
    return n;
}

static tmpl_node *name_primary(tmpl_parser *p, const tmpl_tok *k)
{
    p->pos++;
    tmpl_sv s = k->text;
    if (tmpl_sv_eq(s, "true") || tmpl_sv_eq(s, "True"))
        return const_node(p, tmpl_bool(true), k->line);
    if (tmpl_sv_eq(s, "false") || tmpl_sv_eq(s, "False"))
        return const_node(p, tmpl_bool(false), k->line);
    if (tmpl_sv_eq(s, "none") || tmpl_sv_eq(s, "None")) return const_node(p, tmpl_none(), k->line);
    tmpl_node *n = tp_node(p, N_NAME, k->line);
    if (n) n->name = s;
    return n;
}

/* Adjacent string literals concatenate ("a" "b"). */
static tmpl_node *string_primary(tmpl_parser *p, const tmpl_tok *k)
{
    size_t total = 0, i = p->pos;
    for (; i < p->n && p->tok[i].kind == TK_STRING; i++) total += p->tok[i].text.len;
    core_buf b;
    core_buf_init(&b, total + 1);
    bool ok = core_buf_append(&b, "", 0);
    for (; p->pos < i; p->pos++)
        ok = ok && core_buf_append(&b, p->tok[p->pos].text.s, p->tok[p->pos].text.len);
    tmpl_value *v = ok ? tmpl_new_str_take(NULL, b.data, b.len) : NULL;
    if (!ok) core_buf_free(&b);
    return const_node(p, v, k->line);
}

static tmpl_node *list_or_dict(tmpl_parser *p, const tmpl_tok *k, bool dict)
{
    p->pos++;
    tmpl_node *n = tp_node(p, dict ? N_DICT : N_LIST, k->line);
    if (!n) return NULL;
    size_t cap = 0, cap2 = 0;
    int close = dict ? OP_RBRACE : OP_RBRACKET;
    while (!tp_is_op(tp_cur(p), close)) {
        if (n->n_kids && !tp_expect_op(p, OP_COMMA, "','")) return NULL;
        if (tp_is_op(tp_cur(p), close)) break;
        tmpl_node *key = tp_expression(p, true);
        if (!key || !tp_push(p, &n->kids, &n->n_kids, &cap, key)) return NULL;
        if (!dict) continue;
        if (!tp_expect_op(p, OP_COLON, "':'")) return NULL;
        tmpl_node *val = tp_expression(p, true);
        if (!val || !tp_push(p, &n->kids2, &n->n_kids2, &cap2, val)) return NULL;
    }
    p->pos++;
    return deepen(p, n);
}

/* ( ... ): a parenthesised expression, or a tuple (empty, or with a comma). */
static tmpl_node *paren_primary(tmpl_parser *p, const tmpl_tok *k)
{
    p->pos++;
    tmpl_node *n = tp_node(p, N_TUPLE, k->line);
    if (!n) return NULL;
    size_t cap = 0;
    bool is_tuple = false;
    while (!tp_is_op(tp_cur(p), OP_RPAREN)) {
        if (n->n_kids && !tp_expect_op(p, OP_COMMA, "','")) return NULL;
        if (tp_is_op(tp_cur(p), OP_RPAREN)) break;
        tmpl_node *v = tp_expression(p, true);
        if (!v || !tp_push(p, &n->kids, &n->n_kids, &cap, v)) return NULL;
        if (tp_is_op(tp_cur(p), OP_COMMA))
            is_tuple = true;
        else if (!tp_is_op(tp_cur(p), OP_RPAREN))
            return tp_fail(p, tp_cur(p), "expected ')'"), NULL;
    }
    p->pos++;
    return n->n_kids == 1 && !is_tuple ? n->kids[0] : deepen(p, n);
}

tmpl_node *tp_primary(tmpl_parser *p)
{
    const tmpl_tok *k = tp_cur(p);
    switch (k->kind) {
    case TK_NAME:
        return name_primary(p, k);
    case TK_STRING:
        return string_primary(p, k);
    case TK_INT:
        p->pos++;
        return const_node(p, tmpl_new_int(NULL, k->i), k->line);
    case TK_FLOAT:
        p->pos++;
        return const_node(p, tmpl_new_float(NULL, k->f), k->line);
    case TK_OP:
        if (k->op == OP_LPAREN) return paren_primary(p, k);
        if (k->op == OP_LBRACKET) return list_or_dict(p, k, false);
        if (k->op == OP_LBRACE) return list_or_dict(p, k, true);
        tp_fail(p, k, "unexpected '%.*s'", (int)k->text.len, k->text.s);
        return NULL;
    case TK_VAR_END:
    case TK_BLOCK_END:
        tp_fail(p, k, "expected an expression, got the end of the tag");
        return NULL;
    default:
        tp_fail(p, k, "expected an expression");
        return NULL;
    }
}

/* ---- postfix: .attr  [item]  [a:b:c]  (args) --------------------------------------------- */

static tmpl_node *slice_part(tmpl_parser *p)
{
    const tmpl_tok *k = tp_cur(p);
    if (tp_is_op(k, OP_COLON) || tp_is_op(k, OP_RBRACKET) || tp_is_op(k, OP_COMMA)) return NULL;
    return tp_expression(p, true);
}

static tmpl_node *subscript(tmpl_parser *p, tmpl_node *obj, int line)
{
    p->pos++; /* [ */
    tmpl_node *start = NULL;
    if (!tp_is_op(tp_cur(p), OP_COLON)) {
        start = tp_expression(p, true);
        if (!start) return NULL;
        if (!tp_is_op(tp_cur(p), OP_COLON)) {
            if (tp_is_op(tp_cur(p), OP_COMMA))
                return tp_fail(p, tp_cur(p), "tuple subscripts are not supported"), NULL;
            if (!tp_expect_op(p, OP_RBRACKET, "']'")) return NULL;
            return binary(p, N_GETITEM, 0, obj, start, line);
        }
    }
    tmpl_node *n = tp_node(p, N_SLICE, line);
    if (!n) return NULL;
    n->a = obj;
    n->b = start;
    p->pos++; /* first : */
    const tmpl_tok *k = tp_cur(p);
    if (!tp_is_op(k, OP_COLON) && !tp_is_op(k, OP_RBRACKET) && !(n->c = slice_part(p))) return NULL;
    if (tp_is_op(tp_cur(p), OP_COLON)) {
        p->pos++;
        k = tp_cur(p);
        if (!tp_is_op(k, OP_RBRACKET) && !(n->d = slice_part(p))) return NULL;
    }
    if (!tp_expect_op(p, OP_RBRACKET, "']'")) return NULL;
    return deepen(p, n);
}

tmpl_node *tp_postfix(tmpl_parser *p, tmpl_node *n)
{
    while (n) {
        const tmpl_tok *k = tp_cur(p);
        if (tp_is_op(k, OP_DOT)) {
            p->pos++;
            const tmpl_tok *a = tp_cur(p);
            if (a->kind == TK_NAME) {
                p->pos++;
                tmpl_node *g = tp_node(p, N_GETATTR, k->line);
                if (!g) return NULL;
                g->a = n;
                g->name = a->text;
                n = deepen(p, g);
            } else if (a->kind == TK_INT) {
                p->pos++;
                n = binary(p, N_GETITEM, 0, n, const_node(p, tmpl_new_int(NULL, a->i), a->line),
                           k->line);
            } else {
                tp_fail(p, a, "expected a name or number after '.'");
                return NULL;
            }
        } else if (tp_is_op(k, OP_LBRACKET)) {
            n = subscript(p, n, k->line);
        } else if (tp_is_op(k, OP_LPAREN)) {
            tmpl_node *c = tp_node(p, N_CALL, k->line);
            if (!c || (c->a = n, !call_args(p, c))) return NULL;
            n = deepen(p, c);
        } else {
            break;
        }
    }
    return n;
}

/* ---- filters and tests ------------------------------------------------------------------- */

/* A filter or test name: name(.name)* */
static bool dotted_name(tmpl_parser *p, tmpl_sv *out)
{
    const tmpl_tok *k = tp_cur(p);
    if (k->kind != TK_NAME) return tp_fail(p, k, "expected a filter or test name");
    p->pos++;
    *out = k->text;
    while (tp_is_op(tp_cur(p), OP_DOT) && tp_peek(p, 1)->kind == TK_NAME) {
        const tmpl_tok *part = tp_peek(p, 1);
        out->len = (size_t)(part->text.s + part->text.len - out->s);
        p->pos += 2;
    }
    return true;
}

static tmpl_node *filter(tmpl_parser *p, tmpl_node *operand)
{
    const tmpl_tok *k = tp_cur(p);
    p->pos++; /* | */
    tmpl_node *n = tp_node(p, N_FILTER, k->line);
    if (!n || !dotted_name(p, &n->name)) return NULL;
    n->a = operand;
    n->id = (int16_t)tmpl_filter_id(n->name);
    if (tp_is_op(tp_cur(p), OP_LPAREN) && !call_args(p, n)) return NULL;
    return deepen(p, n);
}

static bool test_arg_starts(const tmpl_tok *k)
{
    if (k->kind == TK_NAME)
        return !tp_is_name(k, "else") && !tp_is_name(k, "or") && !tp_is_name(k, "and");
    if (k->kind == TK_STRING || k->kind == TK_INT || k->kind == TK_FLOAT) return true;
    return tp_is_op(k, OP_LBRACKET) || tp_is_op(k, OP_LBRACE);
}

static tmpl_node *test(tmpl_parser *p, tmpl_node *operand)
{
    const tmpl_tok *k = tp_cur(p);
    p->pos++; /* is */
    bool negated = tp_is_name(tp_cur(p), "not");
    if (negated) p->pos++;
    tmpl_node *n = tp_node(p, N_TEST, k->line);
    if (!n || !dotted_name(p, &n->name)) return NULL;
    n->a = operand;
    n->id = (int16_t)tmpl_test_id(n->name);
    if (tp_is_op(tp_cur(p), OP_LPAREN)) {
        if (!call_args(p, n)) return NULL;
    } else if (test_arg_starts(tp_cur(p))) {
        if (tp_is_name(tp_cur(p), "is"))
            return tp_fail(p, tp_cur(p), "you cannot chain multiple tests with is"), NULL;
        tmpl_node *arg = tp_postfix(p, tp_primary(p));
        if (!arg) return NULL;
        size_t cap = 0;
        if (!tp_push(p, &n->kids, &n->n_kids, &cap, arg)) return NULL;
    }
    n = deepen(p, n);
    return negated ? unary(p, N_NOT, n, k->line) : n;
}

tmpl_node *tp_filter_chain(tmpl_parser *p, tmpl_node *n)
{
    while (n) {
        const tmpl_tok *k = tp_cur(p);
        if (tp_is_op(k, OP_PIPE))
            n = filter(p, n);
        else if (tp_is_name(k, "is"))
            n = test(p, n);
        else if (tp_is_op(k, OP_LPAREN))
            n = tp_postfix(p, n);
        else
            break;
    }
    return n;
}

/* ---- operators --------------------------------------------------------------------------- */

static tmpl_node *parse_unary(tmpl_parser *p, bool with_filter)
{
    if (!enter(p)) return NULL;
    const tmpl_tok *k = tp_cur(p);
    tmpl_node *n;
    if (tp_is_op(k, OP_SUB) || tp_is_op(k, OP_ADD)) {
        p->pos++;
        n = unary(p, k->op == OP_SUB ? N_NEG : N_POS, parse_unary(p, false), k->line);
    } else {
        n = tp_primary(p);
    }
    n = tp_postfix(p, n);
    if (with_filter) n = tp_filter_chain(p, n);
    return leave(p, n);
}

static tmpl_node *parse_pow(tmpl_parser *p)
{
    tmpl_node *n = parse_unary(p, true);
    while (n && tp_is_op(tp_cur(p), OP_POW)) {
        int line = tp_cur(p)->line;
        p->pos++;
        n = binary(p, N_BIN, OP_POW, n, parse_unary(p, true), line);
    }
    return n;
}

static tmpl_node *parse_math2(tmpl_parser *p)
{
    tmpl_node *n = parse_pow(p);
    for (;;) {
        const tmpl_tok *k = tp_cur(p);
        if (!n || k->kind != TK_OP ||
            (k->op != OP_MUL && k->op != OP_DIV && k->op != OP_FLOORDIV && k->op != OP_MOD))
            return n;
        p->pos++;
        n = binary(p, N_BIN, k->op, n, parse_pow(p), k->line);
    }
}

static tmpl_node *parse_concat(tmpl_parser *p)
{
    tmpl_node *n = parse_math2(p);
    while (n && tp_is_op(tp_cur(p), OP_TILDE)) {
        int line = tp_cur(p)->line;
        p->pos++;
        n = binary(p, N_BIN, OP_TILDE, n, parse_math2(p), line);
    }
    return n;
}

static tmpl_node *parse_math1(tmpl_parser *p)
{
    tmpl_node *n = parse_concat(p);
    for (;;) {
        const tmpl_tok *k = tp_cur(p);
        if (!n || k->kind != TK_OP || (k->op != OP_ADD && k->op != OP_SUB)) return n;
        p->pos++;
        n = binary(p, N_BIN, k->op, n, parse_concat(p), k->line);
    }
}

static int compare_op(tmpl_parser *p)
{
    const tmpl_tok *k = tp_cur(p);
    if (k->kind == TK_OP && k->op >= OP_EQ && k->op <= OP_GE) {
        p->pos++;
        return k->op;
    }
    if (tp_is_name(k, "in")) {
        p->pos++;
        return OP_IN;
    }
    if (tp_is_name(k, "not") && tp_is_name(tp_peek(p, 1), "in")) {
        p->pos += 2;
        return OP_NOTIN;
    }
    return -1;
}

static tmpl_node *parse_compare(tmpl_parser *p)
{
    int line = tp_cur(p)->line;
    tmpl_node *first = parse_math1(p);
    if (!first) return NULL;
    int op = compare_op(p);
    if (op < 0) return first;
    tmpl_node *n = tp_node(p, N_CMP, line);
    if (!n) return NULL;
    n->a = first;
    size_t cap = 0, nops = 0;
    uint8_t *ops = NULL;
    for (; op >= 0; op = compare_op(p)) {
        tmpl_node *rhs = parse_math1(p);
        if (!rhs || !tp_push(p, &n->kids, &n->n_kids, &cap, rhs)) return NULL;
        if (nops % 8 == 0) {
            uint8_t *grown = tmpl_arena_alloc(&p->t->arena, nops + 8);
            if (!grown) return tp_fail(p, tp_cur(p), "out of memory"), NULL;
            if (nops) memcpy(grown, ops, nops);
            ops = grown;
        }
        ops[nops++] = (uint8_t)op;
    }
    n->ops = ops;
    return deepen(p, n);
}

static tmpl_node *parse_not(tmpl_parser *p)
{
    const tmpl_tok *k = tp_cur(p);
    if (tp_is_name(k, "not")) {
        p->pos++;
        if (!enter(p)) return NULL;
        return leave(p, unary(p, N_NOT, parse_not(p), k->line));
    }
    return parse_compare(p);
}

static tmpl_node *parse_and(tmpl_parser *p)
{
    tmpl_node *n = parse_not(p);
    while (n && tp_is_name(tp_cur(p), "and")) {
        int line = tp_cur(p)->line;
        p->pos++;
        n = binary(p, N_AND, 0, n, parse_not(p), line);
    }
    return n;
}

tmpl_node *tp_or(tmpl_parser *p)
{
    tmpl_node *n = parse_and(p);
    while (n && tp_is_name(tp_cur(p), "or")) {
        int line = tp_cur(p)->line;
        p->pos++;
        n = binary(p, N_OR, 0, n, parse_and(p), line);
    }
    return n;
}

static tmpl_node *parse_condexpr(tmpl_parser *p)
{
    if (!enter(p)) return NULL;
    tmpl_node *n = tp_or(p);
    while (n && tp_is_name(tp_cur(p), "if")) {
        int line = tp_cur(p)->line;
        p->pos++;
        tmpl_node *c = tp_node(p, N_COND, line);
        if (!c) return NULL;
        c->a = n;
        if (!(c->b = tp_or(p))) return NULL;
        if (tp_is_name(tp_cur(p), "else")) {
            p->pos++;
            if (!(c->c = parse_condexpr(p))) return NULL;
        }
        n = deepen(p, c);
    }
    return leave(p, n);
}

tmpl_node *tp_expression(tmpl_parser *p, bool with_cond)
{
    return with_cond ? parse_condexpr(p) : tp_or(p);
}

static bool tuple_end(const tmpl_tok *k)
{
    return k->kind == TK_VAR_END || k->kind == TK_BLOCK_END || tp_is_op(k, OP_RPAREN) ||
           tp_is_name(k, "in") || tp_is_name(k, "recursive");
}

tmpl_node *tp_tuple(tmpl_parser *p, bool with_cond)
{
    const tmpl_tok *start = tp_cur(p);
    tmpl_node *n = tp_node(p, N_TUPLE, start->line);
    if (!n) return NULL;
    size_t cap = 0;
    bool is_tuple = false;
    for (;;) {
        if (n->n_kids && !tp_expect_op(p, OP_COMMA, "','")) return NULL;
        if (tuple_end(tp_cur(p))) break;
        tmpl_node *v = tp_expression(p, with_cond);
        if (!v || !tp_push(p, &n->kids, &n->n_kids, &cap, v)) return NULL;
        if (!tp_is_op(tp_cur(p), OP_COMMA)) break;
        is_tuple = true;
    }
    if (!is_tuple) {
        if (n->n_kids) return n->kids[0];
        tp_fail(p, start, "expected an expression");
        return NULL;
    }
    return deepen(p, n);
}
