/*
 * tmpl_lex.c - the template lexer: splits a template into text and tag tokens the way
 * jinja2's lexer does under transformers' settings (trim_blocks, lstrip_blocks, `-` and `+`
 * whitespace control, comments, {% raw %}), and tokenizes the expressions inside tags (names,
 * numbers, Python string literals with their escapes, operators). Also the parse arena.
 * Called by tmpl_parse.c; knows nothing of the syntax tree.
 */
#include "tmpl_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- arena ------------------------------------------------------------------------------- */

struct tmpl_arena {
    tmpl_arena *next;
    size_t used, cap;
    max_align_t data[];
};

void *tmpl_arena_alloc(tmpl_arena **a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!*a || (*a)->cap - (*a)->used < n) {
        size_t cap = n > 60000 ? n : 60000;
        tmpl_arena *blk = malloc(sizeof *blk + cap);
        if (!blk) return NULL;
        blk->next = *a;
        blk->used = 0;
        blk->cap = cap;
        *a = blk;
    }
    void *p = (char *)(*a)->data + (*a)->used;
    (*a)->used += n;
    memset(p, 0, n);
    return p;
}

void tmpl_arena_free(tmpl_arena *a)
{
    while (a) {
        tmpl_arena *next = a->next;
        free(a);
        a = next;
    }
}

/* ---- lexer ------------------------------------------------------------------------------- */

typedef struct lexer {
    const char *name, *src;
    size_t len, pos;
    int line;
    tmpl_arena **arena;
    tmpl_tokens *out;
    mica_err *err;
} lexer;

static mica_status lx_fail(lexer *lx, const char *fmt, ...) CORE_PRINTF(2, 3);
static mica_status lx_fail(lexer *lx, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return core_fail(lx->err, MICA_EFORMAT, "%s:%d: %s", lx->name, lx->line, msg);
}

/* Moves to newpos, counting the lines passed. */
static void lx_goto(lexer *lx, size_t newpos)
{
    for (size_t i = lx->pos; i < newpos; i++)
        if (lx->src[i] == '\n') lx->line++;
    lx->pos = newpos;
}

static tmpl_tok *lx_emit(lexer *lx, int kind)
{
    tmpl_tokens *t = lx->out;
    if (t->len == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 256;
        tmpl_tok *nv = realloc(t->v, ncap * sizeof *nv);
        if (!nv) return NULL;
        t->v = nv;
        t->cap = ncap;
    }
    tmpl_tok *k = &t->v[t->len++];
    memset(k, 0, sizeof *k);
    k->kind = (uint8_t)kind;
    k->line = lx->line;
    return k;
}

static bool starts(const lexer *lx, size_t at, const char *s)
{
    size_t n = strlen(s);
    return at + n <= lx->len && !memcmp(lx->src + at, s, n);
}

/* Bytes of Python-\s whitespace at s[at..). */
static size_t ws_len(const lexer *lx, size_t at)
{
    return tmpl_lstrip_len(lx->src + at, lx->len - at);
}

static mica_status emit_data(lexer *lx, size_t start, size_t end)
{
    if (end <= start) return MICA_OK;
    tmpl_tok *k = lx_emit(lx, TK_DATA);
    if (!k) return core_fail(lx->err, MICA_ENOMEM, "%s: out of memory", lx->name);
    k->text = (tmpl_sv){lx->src + start, end - start};
    return MICA_OK;
}

/* lstrip_blocks: the text before a block or comment tag loses the spaces and tabs that
 * start the tag's line. */
static size_t lstrip_block(const lexer *lx, size_t start, size_t end)
{
    size_t l = end;
    while (l > start && lx->src[l - 1] != '\n') l--;
    bool line_start = l > start || start == 0 || lx->src[start - 1] == '\n';
    if (!line_start || l == end) return end;
    return ws_len(lx, l) >= end - l ? l : end;
}

/* After a tag end: `-` strips all whitespace, a block / comment end without `+` drops one
 * newline (trim_blocks). */
static void after_tag(lexer *lx, char mod, bool block)
{
    if (mod == '-')
        lx_goto(lx, lx->pos + ws_len(lx, lx->pos));
    else if (mod != '+' && block && lx->pos < lx->len && lx->src[lx->pos] == '\n')
        lx_goto(lx, lx->pos + 1);
}

static mica_status lex_comment(lexer *lx)
{
    const char *q = NULL;
    for (size_t i = lx->pos; i + 1 < lx->len; i++)
        if (lx->src[i] == '#' && lx->src[i + 1] == '}') {
            q = lx->src + i;
            break;
        }
    if (!q) return lx_fail(lx, "missing end of comment tag");
    size_t end = (size_t)(q - lx->src);
    char mod = end > lx->pos && (q[-1] == '-' || q[-1] == '+') ? q[-1] : 0;
    lx_goto(lx, end + 2);
    after_tag(lx, mod, true);
    return MICA_OK;
}

/* ---- tokens inside tags ------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One escape after a backslash at s[*i] (s[*i] is the character after the backslash). */
static mica_status unescape_one(lexer *lx, const char *s, size_t n, size_t *i, core_buf *b)
{
    char c = s[*i];
    const char *simple = strchr("\\'\"abfnrtv", c);
    if (c && simple) {
        static const char map[] = "\\'\"\a\b\f\n\r\t\v";
        (*i)++;
        return core_buf_append(b, &map[simple - "\\'\"abfnrtv"], 1) ? MICA_OK : MICA_ENOMEM;
    }
    if (c == '\n') {
        (*i)++;
        return MICA_OK;
    }
    if (c >= '0' && c <= '7') {
        unsigned v = 0;
        for (int k = 0; k < 3 && *i < n && s[*i] >= '0' && s[*i] <= '7'; k++)
            v = v * 8 + (unsigned)(s[(*i)++] - '0');
        char u[4];
        int l = core_utf8_encode(v, u);
        return core_buf_append(b, u, (size_t)l) ? MICA_OK : MICA_ENOMEM;
    }
    int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    if (!digits) {
        if (c == 'N') return lx_fail(lx, "\\N{...} escapes are not supported");
        return core_buf_append(b, "\\", 1) ? MICA_OK : MICA_ENOMEM; /* kept as written */
    }
    uint32_t v = 0;
    for (int k = 1; k <= digits; k++) {
        int h = *i + (size_t)k < n ? hexval(s[*i + (size_t)k]) : -1;
        if (h < 0) return lx_fail(lx, "truncated \\%c escape in a string", c);
        v = v * 16 + (uint32_t)h;
    }
    if (v > 0x10FFFF) return lx_fail(lx, "illegal Unicode character in a string");
    *i += (size_t)digits + 1;
    char u[4];
    int l = core_utf8_encode(v, u);
    return core_buf_append(b, u, (size_t)l) ? MICA_OK : MICA_ENOMEM;
}

static mica_status lex_string(lexer *lx)
{
    char q = lx->src[lx->pos];
    size_t i = lx->pos + 1;
    while (i < lx->len && lx->src[i] != q) i += lx->src[i] == '\\' ? 2 : 1;
    if (i >= lx->len) return lx_fail(lx, "unexpected end of string");
    const char *s = lx->src + lx->pos + 1;
    size_t n = i - lx->pos - 1;
    core_buf b;
    core_buf_init(&b, n + 1);
    mica_status st = core_buf_append(&b, "", 0) ? MICA_OK : MICA_ENOMEM;
    for (size_t k = 0; k < n && st == MICA_OK;) {
        if (s[k] != '\\') {
            size_t run = k;
            while (run < n && s[run] != '\\') run++;
            st = core_buf_append(&b, s + k, run - k) ? MICA_OK : MICA_ENOMEM;
            k = run;
            continue;
        }
        k++;
        st = unescape_one(lx, s, n, &k, &b);
    }
    tmpl_tok *t = st == MICA_OK ? lx_emit(lx, TK_STRING) : NULL;
    char *copy = t ? tmpl_arena_alloc(lx->arena, b.len + 1) : NULL;
    if (copy) {
        memcpy(copy, b.data, b.len);
        t->text = (tmpl_sv){copy, b.len};
    }
    core_buf_free(&b);
    if (st == MICA_ENOMEM || (st == MICA_OK && !copy))
        return core_fail(lx->err, MICA_ENOMEM, "%s: out of memory", lx->name);
    if (st) return st;
    lx_goto(lx, i + 1);
    return MICA_OK;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Digits with optional single underscores between them; returns the end. */
static size_t digits_end(const lexer *lx, size_t i)
{
    while (i < lx->len && (is_digit(lx->src[i]) ||
                           (lx->src[i] == '_' && i + 1 < lx->len && is_digit(lx->src[i + 1]))))
        i++;
    return i;
}

static mica_status lex_number(lexer *lx, bool after_dot)
{
    size_t start = lx->pos, i = digits_end(lx, start);
    bool is_float = false;
    if (!after_dot && i + 1 < lx->len && lx->src[i] == '.' && is_digit(lx->src[i + 1])) {
        i = digits_end(lx, i + 1);
        is_float = true;
    }
    if (!after_dot && i < lx->len && (lx->src[i] == 'e' || lx->src[i] == 'E')) {
        size_t j = i + 1;
        if (j < lx->len && (lx->src[j] == '+' || lx->src[j] == '-')) j++;
        if (j < lx->len && is_digit(lx->src[j])) {
            i = digits_end(lx, j);
            is_float = true;
        }
    }
    char buf[80];
    size_t k = 0;
    for (size_t p = start; p < i && k + 1 < sizeof buf; p++)
        if (lx->src[p] != '_') buf[k++] = lx->src[p];
    buf[k] = '\0';
    tmpl_tok *t = lx_emit(lx, is_float ? TK_FLOAT : TK_INT);
    if (!t) return core_fail(lx->err, MICA_ENOMEM, "%s: out of memory", lx->name);
    if (is_float) {
        t->f = strtod(buf, NULL);
    } else {
        if (k > 18) return lx_fail(lx, "integer literal %s is too large", buf);
        t->i = strtoll(buf, NULL, 10);
    }
    lx_goto(lx, i);
    return MICA_OK;
}

static const struct {
    const char *s;
    int op;
} ops[] = {
    {"//", OP_FLOORDIV}, {"**", OP_POW},   {"==", OP_EQ},    {"!=", OP_NE},    {"<=", OP_LE},
    {">=", OP_GE},       {"+", OP_ADD},    {"-", OP_SUB},    {"*", OP_MUL},    {"/", OP_DIV},
    {"%", OP_MOD},       {"~", OP_TILDE},  {"<", OP_LT},     {">", OP_GT},     {"[", OP_LBRACKET},
    {"]", OP_RBRACKET},  {"(", OP_LPAREN}, {")", OP_RPAREN}, {"{", OP_LBRACE}, {"}", OP_RBRACE},
    {"=", OP_ASSIGN},    {".", OP_DOT},    {":", OP_COLON},  {"|", OP_PIPE},   {",", OP_COMMA},
    {";", OP_SEMICOLON},
};

/* Brackets must match: stack holds the closing operator each open one expects. */
typedef struct brackets {
    uint8_t close[TMPL_MAX_DEPTH];
    int n;
} brackets;

static mica_status match_bracket(lexer *lx, brackets *b, int op, const char *text)
{
    static const int closer[] = {
        [OP_LPAREN] = OP_RPAREN, [OP_LBRACKET] = OP_RBRACKET, [OP_LBRACE] = OP_RBRACE};
    static const char *const names[] = {[OP_RPAREN] = ")", [OP_RBRACKET] = "]", [OP_RBRACE] = "}"};
    if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) {
        if (b->n == TMPL_MAX_DEPTH)
            return core_fail(lx->err, MICA_EUNSUPPORTED,
                             "%s:%d: brackets nested deeper than %d levels", lx->name, lx->line,
                             TMPL_MAX_DEPTH);
        b->close[b->n++] = (uint8_t)closer[op];
    } else if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) {
        if (b->n == 0) return lx_fail(lx, "unexpected '%s'", text);
        if (b->close[b->n - 1] != op)
            return lx_fail(lx, "unexpected '%s', expected '%s'", text, names[b->close[b->n - 1]]);
        b->n--;
    }
    return MICA_OK;
}

static mica_status lex_op(lexer *lx, brackets *b)
{
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        if (!starts(lx, lx->pos, ops[k].s)) continue;
        mica_status st = match_bracket(lx, b, ops[k].op, ops[k].s);
        if (st) return st;
        tmpl_tok *t = lx_emit(lx, TK_OP);
        if (!t) return core_fail(lx->err, MICA_ENOMEM, "%s: out of memory", lx->name);
        t->op = (uint8_t)ops[k].op;
        t->text = (tmpl_sv){lx->src + lx->pos, strlen(ops[k].s)};
        lx_goto(lx, lx->pos + strlen(ops[k].s));
        return MICA_OK;
    }
    return lx_fail(lx, "unexpected char '%c'", lx->src[lx->pos]);
}

static bool is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* The end of the tag at pos, if any: sets *mod to '-', '+' or 0 and returns its length. */
static size_t tag_end(const lexer *lx, bool block, char *mod)
{
    const char *end = block ? "%}" : "}}";
    *mod = 0;
    if (starts(lx, lx->pos, end)) return 2;
    if ((lx->src[lx->pos] == '-' || (block && lx->src[lx->pos] == '+')) &&
        starts(lx, lx->pos + 1, end)) {
        *mod = lx->src[lx->pos];
        return 3;
    }
    return 0;
}

static mica_status lex_tag(lexer *lx, bool block)
{
    brackets b = {.n = 0};
    for (;;) {
        lx_goto(lx, lx->pos + ws_len(lx, lx->pos));
        if (lx->pos >= lx->len)
            return lx_fail(lx, "unexpected end of template, expected '%s'", block ? "%}" : "}}");
        char mod;
        size_t n = b.n == 0 ? tag_end(lx, block, &mod) : 0;
        if (n) {
            if (!lx_emit(lx, block ? TK_BLOCK_END : TK_VAR_END))
                return core_fail(lx->err, MICA_ENOMEM, "%s: out of memory", lx->name);
            lx_goto(lx, lx->pos + n);
            after_tag(lx, mod, block);
            return MICA_OK;
        }
        char c = lx->src[lx->pos];
        mica_status st;
        if (is_name_start(c)) {
            size_t e = lx->pos + 1;
            while (e < lx->len && (is_name_start(lx->src[e]) || is_digit(lx->src[e]))) e++;
            tmpl_tok *t = lx_emit(lx, TK_NAME);
            if (!t) return core_fail(lx->err, MICA_ENOMEM, "%s: out of memory", lx->name);
            t->text = (tmpl_sv){lx->src + lx->pos, e - lx->pos};
            lx_goto(lx, e);
            st = MICA_OK;
        } else if (is_digit(c)) {
            const tmpl_tok *prev = &lx->out->v[lx->out->len - 1];
            st = lex_number(lx, prev->kind == TK_OP && prev->op == OP_DOT);
        } else if (c == '\'' || c == '"') {
            st = lex_string(lx);
        } else {
            st = lex_op(lx, &b);
        }
        if (st) return st;
    }
}

/* {% raw %}...{% endraw %}: the text between is data, unparsed. jinja2's rules: the opening
 * tag ends with "%}" (no newline trimmed) or "-%}"; the text before {% endraw %} gets
 * lstrip_blocks (or "-" / "+"), and the closing tag trims like any block. pos is after "{%"
 * and its modifier; returns false (pos unchanged) when the tag is not an opening raw. */
static bool lex_raw(lexer *lx, mica_status *st)
{
    size_t i = lx->pos + ws_len(lx, lx->pos);
    if (!starts(lx, i, "raw")) return false;
    i += 3;
    i += ws_len(lx, i);
    bool strip = i < lx->len && lx->src[i] == '-';
    if (strip) i++;
    if (!starts(lx, i, "%}")) return false;
    lx_goto(lx, i + 2);
    if (strip) lx_goto(lx, lx->pos + ws_len(lx, lx->pos));
    for (size_t k = lx->pos; k + 1 < lx->len; k++) {
        if (lx->src[k] != '{' || lx->src[k + 1] != '%') continue;
        size_t j = k + 2;
        char lmod = j < lx->len && (lx->src[j] == '-' || lx->src[j] == '+') ? lx->src[j++] : 0;
        j += ws_len(lx, j);
        if (!starts(lx, j, "endraw")) continue;
        j += 6;
        j += ws_len(lx, j);
        char rmod = 0;
        if (j < lx->len && (lx->src[j] == '-' || lx->src[j] == '+')) rmod = lx->src[j++];
        if (!starts(lx, j, "%}")) continue;
        size_t end = k;
        if (lmod == '-')
            end = lx->pos + tmpl_rstrip_len(lx->src + lx->pos, k - lx->pos);
        else if (lmod != '+')
            end = lstrip_block(lx, lx->pos, k);
        *st = emit_data(lx, lx->pos, end);
        lx_goto(lx, j + 2);
        after_tag(lx, rmod, true);
        return true;
    }
    *st = lx_fail(lx, "missing end of raw directive");
    return true;
}

static const char *find_tag(const char *s, size_t n)
{
    for (const char *p = memchr(s, '{', n); p; p = memchr(p + 1, '{', n - (size_t)(p + 1 - s))) {
        if ((size_t)(p - s) + 1 >= n) return NULL;
        if (p[1] == '{' || p[1] == '%' || p[1] == '#') return p;
    }
    return NULL;
}

mica_status tmpl_lex(const char *name, const char *src, size_t len, tmpl_arena **arena,
                     tmpl_tokens *out, mica_err *err)
{
    lexer lx = {name, src, len, 0, 1, arena, out, err};
    while (lx.pos < len) {
        const char *tag = find_tag(src + lx.pos, len - lx.pos);
        size_t p = tag ? (size_t)(tag - src) : len;
        char kind = tag ? tag[1] : 0;
        char mod = tag && p + 2 < len && (src[p + 2] == '-' || src[p + 2] == '+') ? src[p + 2] : 0;
        size_t end = p;
        if (mod == '-')
            end = lx.pos + tmpl_rstrip_len(src + lx.pos, p - lx.pos);
        else if (tag && mod != '+' && kind != '{')
            end = lstrip_block(&lx, lx.pos, p);
        mica_status st = emit_data(&lx, lx.pos, end);
        if (st) return st;
        lx_goto(&lx, p);
        if (!tag) break;
        lx_goto(&lx, p + 2 + (mod ? 1 : 0));
        if (kind == '#') {
            st = lex_comment(&lx);
        } else if (kind == '%' && lex_raw(&lx, &st)) {
            /* st set by lex_raw */
        } else {
            tmpl_tok *t = lx_emit(&lx, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN);
            if (!t) return core_fail(err, MICA_ENOMEM, "%s: out of memory", name);
            t->line = lx.line;
            st = lex_tag(&lx, kind == '%');
        }
        if (st) return st;
    }
    if (!lx_emit(&lx, TK_EOF)) return core_fail(err, MICA_ENOMEM, "%s: out of memory", name);
    return MICA_OK;
}
