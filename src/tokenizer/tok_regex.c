/*
 * tok_regex.c - the pre-tokenizers' regex engine: a recursive-descent parser builds a small
 * syntax tree, which is compiled into a program for a backtracking machine (SPLIT/JMP
 * instructions tried in priority order, so the first MATCH reached is the ECMAScript match).
 * Every consuming atom is a class of items. Backtracking uses an explicit, capped stack and a
 * step budget, so a pathological input yields an error instead of a crash or a hang.
 * Does not know which patterns exist (tok_pre.c) nor build the collapsed view (tok_pre.c).
 */
#include "tok_regex.h"

#include "tok_unicode.h"

#include <stdlib.h>
#include <string.h>

#define RE_MAX_PATTERN 4096              /* code points in a pattern */
#define RE_MAX_INSTS   (1u << 16)        /* compiled program size */
#define RE_MAX_COUNT   1024u             /* bound in {m,n} */
#define RE_MAX_STACK   ((size_t)1 << 24) /* backtracking entries */
#define RE_STEP_BUDGET (1ull << 28)      /* machine steps per search */
#define RE_INF         UINT32_MAX

/* ---- program ------------------------------------------------------------------------- */

enum re_item_kind { IT_RANGE, IT_SPACE, IT_DIGIT, IT_WORD, IT_PCAT };

typedef struct re_item {
    uint8_t kind;
    bool neg;        /* \S, \D, \W */
    uint32_t lo, hi; /* IT_RANGE bounds; IT_PCAT: lo = enum tok_ucat flag */
} re_item;

typedef struct re_class {
    uint32_t first, count; /* items[first .. first+count) */
    bool neg;              /* [^...] */
} re_class;

enum re_op { OP_CLASS, OP_ANY, OP_BOL, OP_EOL, OP_SPLIT, OP_JMP, OP_LOOK, OP_MATCH };

typedef struct re_inst {
    uint8_t op;
    bool neg;     /* OP_LOOK: negative lookahead */
    uint32_t cls; /* OP_CLASS */
    int32_t x, y; /* SPLIT: preferred x, then y; JMP: x; LOOK: body x, continuation y */
} re_inst;

struct tok_regex {
    bool collapsed;
    re_item *items;
    uint32_t n_items;
    re_class *classes;
    uint32_t n_classes;
    re_inst *prog;
    uint32_t n_prog, cap_prog;
};

/* ---- syntax tree --------------------------------------------------------------------- */

enum re_node_type { ND_CLASS, ND_ANY, ND_BOL, ND_EOL, ND_CAT, ND_ALT, ND_REPEAT, ND_LOOK };

typedef struct re_node {
    uint8_t type;
    bool flag;         /* REPEAT: greedy; LOOK: negative */
    int32_t kid;       /* first child, -1 if none */
    int32_t next;      /* next sibling, -1 if none */
    uint32_t min, max; /* REPEAT */
    uint32_t cls;      /* CLASS */
} re_node;

typedef struct re_parser {
    const uint32_t *p;
    size_t n, i;
    tok_regex *re;
    re_node *nodes;
    uint32_t n_nodes, cap_nodes;
    mica_err *err;
    mica_status st;
} re_parser;

static bool re_fail(re_parser *ps, mica_status st, const char *what)
{
    if (!ps->st) ps->st = core_fail(ps->err, st, "regex: %s at pattern offset %zu", what, ps->i);
    return false;
}

static int32_t re_new_node(re_parser *ps, uint8_t type)
{
    if (ps->n_nodes >= ps->cap_nodes) {
        re_fail(ps, MICA_ENOMEM, "too many nodes");
        return -1;
    }
    re_node *nd = &ps->nodes[ps->n_nodes];
    memset(nd, 0, sizeof *nd);
    nd->type = type;
    nd->kid = nd->next = -1;
    return (int32_t)ps->n_nodes++;
}

static bool re_at_end(const re_parser *ps)
{
    return ps->i >= ps->n;
}
static uint32_t re_peek(const re_parser *ps)
{
    return ps->i < ps->n ? ps->p[ps->i] : 0;
}

static bool re_eat(re_parser *ps, uint32_t c)
{
    if (re_at_end(ps) || ps->p[ps->i] != c) return false;
    ps->i++;
    return true;
}

static int re_hex_digit(uint32_t c)
{
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

static bool re_parse_hex(re_parser *ps, int digits, uint32_t *out)
{
    uint32_t v = 0;
    for (int k = 0; k < digits; k++) {
        int d = re_at_end(ps) ? -1 : re_hex_digit(ps->p[ps->i]);
        if (d < 0) return re_fail(ps, MICA_EUNSUPPORTED, "bad hex escape");
        v = v * 16 + (uint32_t)d;
        ps->i++;
    }
    *out = v;
    return true;
}

/* \p{NAME}: the category flag of NAME. Lu, Ll, Lt, Lm, Lo mean L, as in llama.cpp. */
static bool re_parse_property(re_parser *ps, uint32_t *flag)
{
    static const struct {
        const char *name;
        uint32_t flag;
    } props[] = {
        {"N", TOK_UCAT_NUMBER},  {"L", TOK_UCAT_LETTER},  {"P", TOK_UCAT_PUNCT},
        {"M", TOK_UCAT_MARK},    {"S", TOK_UCAT_SYMBOL},  {"Lu", TOK_UCAT_LETTER},
        {"Ll", TOK_UCAT_LETTER}, {"Lt", TOK_UCAT_LETTER}, {"Lm", TOK_UCAT_LETTER},
        {"Lo", TOK_UCAT_LETTER},
    };
    if (!re_eat(ps, '{')) return re_fail(ps, MICA_EUNSUPPORTED, "expected '{' after \\p");
    char name[8];
    size_t len = 0;
    while (!re_at_end(ps) && re_peek(ps) != '}' && len + 1 < sizeof name)
        name[len++] = (char)(ps->p[ps->i++] & 0x7F);
    name[len] = '\0';
    if (!re_eat(ps, '}')) return re_fail(ps, MICA_EUNSUPPORTED, "unterminated \\p{...}");
    for (size_t k = 0; k < sizeof props / sizeof props[0]; k++) {
        if (strcmp(props[k].name, name) == 0) {
            *flag = props[k].flag;
            ps->re->collapsed = true;
            return true;
        }
    }
    return re_fail(ps, MICA_EUNSUPPORTED, "unknown property \\p{...}");
}

static re_item re_single(uint32_t c)
{
    return (re_item){IT_RANGE, false, c, c};
}

/* The item of an escape; the backslash is already consumed. */
static bool re_parse_escape(re_parser *ps, re_item *it)
{
    if (re_at_end(ps)) return re_fail(ps, MICA_EUNSUPPORTED, "trailing backslash");
    uint32_t c = ps->p[ps->i++];
    switch (c) {
    case 's':
    case 'S':
        *it = (re_item){IT_SPACE, c == 'S', 0, 0};
        return true;
    case 'd':
    case 'D':
        *it = (re_item){IT_DIGIT, c == 'D', 0, 0};
        return true;
    case 'w':
    case 'W':
        *it = (re_item){IT_WORD, c == 'W', 0, 0};
        return true;
    case 'p':
    case 'P': {
        uint32_t flag;
        if (!re_parse_property(ps, &flag)) return false;
        *it = (re_item){IT_PCAT, c == 'P', flag, 0};
        return true;
    }
    case 'r':
        *it = re_single('\r');
        return true;
    case 'n':
        *it = re_single('\n');
        return true;
    case 't':
        *it = re_single('\t');
        return true;
    case 'v':
        *it = re_single('\v');
        return true;
    case 'f':
        *it = re_single('\f');
        return true;
    case '0':
        *it = re_single(0);
        return true;
    case 'x':
    case 'u': {
        uint32_t v;
        if (!re_parse_hex(ps, c == 'x' ? 2 : 4, &v)) return false;
        *it = re_single(v);
        return true;
    }
    default:
        break;
    }
    bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (alnum) return re_fail(ps, MICA_EUNSUPPORTED, "unsupported escape");
    *it = re_single(c); /* an escaped punctuation character stands for itself */
    return true;
}

/* Items are bounded by the pattern length (each takes at least one code point), and the
 * array was sized from it. */
static void re_add_item(re_parser *ps, re_item it)
{
    ps->re->items[ps->re->n_items++] = it;
}

static int32_t re_class_node(re_parser *ps, uint32_t first, bool neg)
{
    tok_regex *re = ps->re;
    re->classes[re->n_classes] = (re_class){first, re->n_items - first, neg};
    int32_t nd = re_new_node(ps, ND_CLASS);
    if (nd < 0) return -1;
    ps->nodes[nd].cls = re->n_classes++;
    return nd;
}

/* One member of a bracket class: a literal or an escape. */
static bool re_parse_class_atom(re_parser *ps, re_item *it)
{
    if (re_at_end(ps)) return re_fail(ps, MICA_EUNSUPPORTED, "unterminated class");
    uint32_t c = ps->p[ps->i++];
    if (c == '\\') return re_parse_escape(ps, it);
    *it = re_single(c);
    return true;
}

/* [...] after the '['. */
static int32_t re_parse_class(re_parser *ps)
{
    uint32_t first = ps->re->n_items;
    bool neg = re_eat(ps, '^');
    while (!re_eat(ps, ']')) {
        re_item lo;
        if (!re_parse_class_atom(ps, &lo)) return -1;
        bool is_range = lo.kind == IT_RANGE && ps->i + 1 < ps->n && ps->p[ps->i] == '-' &&
                        ps->p[ps->i + 1] != ']';
        if (is_range) {
            ps->i++;
            re_item hi;
            if (!re_parse_class_atom(ps, &hi)) return -1;
            if (hi.kind != IT_RANGE || hi.lo < lo.lo) {
                re_fail(ps, MICA_EUNSUPPORTED, "bad class range");
                return -1;
            }
            lo.hi = hi.lo;
        }
        re_add_item(ps, lo);
    }
    return re_class_node(ps, first, neg);
}

static int32_t re_item_node(re_parser *ps, re_item it)
{
    uint32_t first = ps->re->n_items;
    re_add_item(ps, it);
    return re_class_node(ps, first, false);
}

static int32_t re_parse_alt(re_parser *ps);

/* (...), (?:...), (?=...), (?!...) after the '('. */
static int32_t re_parse_group(re_parser *ps)
{
    int32_t look = -1;
    if (re_eat(ps, '?')) {
        if (re_eat(ps, '=') || re_eat(ps, '!')) {
            look = re_new_node(ps, ND_LOOK);
            if (look < 0) return -1;
            ps->nodes[look].flag = ps->p[ps->i - 1] == '!';
        } else if (!re_eat(ps, ':')) {
            re_fail(ps, MICA_EUNSUPPORTED, "unsupported group kind");
            return -1;
        }
    }
    int32_t body = re_parse_alt(ps);
    if (body < 0) return -1;
    if (!re_eat(ps, ')')) {
        re_fail(ps, MICA_EUNSUPPORTED, "missing ')'");
        return -1;
    }
    if (look < 0) return body;
    ps->nodes[look].kid = body;
    return look;
}

static int32_t re_parse_atom(re_parser *ps)
{
    uint32_t c = ps->p[ps->i++];
    switch (c) {
    case '(':
        return re_parse_group(ps);
    case '[':
        return re_parse_class(ps);
    case '.':
        return re_new_node(ps, ND_ANY);
    case '^':
        return re_new_node(ps, ND_BOL);
    case '$':
        return re_new_node(ps, ND_EOL);
    case '\\': {
        re_item it;
        if (!re_parse_escape(ps, &it)) return -1;
        return re_item_node(ps, it);
    }
    case '*':
    case '+':
    case '?':
    case '{':
    case ']':
    case '}':
        ps->i--;
        re_fail(ps, MICA_EUNSUPPORTED, "misplaced quantifier or bracket");
        return -1;
    default:
        return re_item_node(ps, re_single(c));
    }
}

static bool re_parse_count(re_parser *ps, uint32_t *out)
{
    if (re_at_end(ps) || ps->p[ps->i] < '0' || ps->p[ps->i] > '9')
        return re_fail(ps, MICA_EUNSUPPORTED, "expected a number in {m,n}");
    uint32_t v = 0;
    while (!re_at_end(ps) && ps->p[ps->i] >= '0' && ps->p[ps->i] <= '9') {
        v = v * 10 + (ps->p[ps->i++] - '0');
        if (v > RE_MAX_COUNT) return re_fail(ps, MICA_EUNSUPPORTED, "count in {m,n} too large");
    }
    *out = v;
    return true;
}

/* The quantifier after an atom, if any: sets min/max; false on a syntax error. */
static bool re_parse_quantifier(re_parser *ps, bool *present, uint32_t *min, uint32_t *max)
{
    *present = true;
    if (re_eat(ps, '*')) {
        *min = 0, *max = RE_INF;
    } else if (re_eat(ps, '+')) {
        *min = 1, *max = RE_INF;
    } else if (re_eat(ps, '?')) {
        *min = 0, *max = 1;
    } else if (re_eat(ps, '{')) {
        if (!re_parse_count(ps, min)) return false;
        *max = *min;
        if (re_eat(ps, ',')) {
            *max = RE_INF;
            if (re_peek(ps) != '}' && !re_parse_count(ps, max)) return false;
        }
        if (!re_eat(ps, '}') || *max < *min)
            return re_fail(ps, MICA_EUNSUPPORTED, "bad {m,n} quantifier");
    } else {
        *present = false;
    }
    return true;
}

static bool re_nullable(const re_parser *ps, int32_t nd)
{
    const re_node *n = &ps->nodes[nd];
    switch (n->type) {
    case ND_CLASS:
    case ND_ANY:
        return false;
    case ND_BOL:
    case ND_EOL:
    case ND_LOOK:
        return true;
    case ND_REPEAT:
        return n->min == 0 || re_nullable(ps, n->kid);
    case ND_CAT:
        for (int32_t k = n->kid; k >= 0; k = ps->nodes[k].next)
            if (!re_nullable(ps, k)) return false;
        return true;
    default: /* ND_ALT */
        for (int32_t k = n->kid; k >= 0; k = ps->nodes[k].next)
            if (re_nullable(ps, k)) return true;
        return false;
    }
}

static int32_t re_parse_quantified(re_parser *ps)
{
    int32_t atom = re_parse_atom(ps);
    if (atom < 0) return -1;
    bool present;
    uint32_t min, max;
    if (!re_parse_quantifier(ps, &present, &min, &max)) return -1;
    if (!present) return atom;
    /* an unbounded loop over something that can match empty would never end */
    if (max == RE_INF && re_nullable(ps, atom)) {
        re_fail(ps, MICA_EUNSUPPORTED, "unbounded repeat of an empty-matching group");
        return -1;
    }
    int32_t rep = re_new_node(ps, ND_REPEAT);
    if (rep < 0) return -1;
    ps->nodes[rep].kid = atom;
    ps->nodes[rep].min = min;
    ps->nodes[rep].max = max;
    ps->nodes[rep].flag = !re_eat(ps, '?'); /* a trailing '?' makes it lazy */
    return rep;
}

static int32_t re_parse_seq(re_parser *ps)
{
    int32_t cat = re_new_node(ps, ND_CAT);
    if (cat < 0) return -1;
    int32_t last = -1;
    while (!re_at_end(ps) && re_peek(ps) != '|' && re_peek(ps) != ')') {
        int32_t q = re_parse_quantified(ps);
        if (q < 0) return -1;
        if (last < 0)
            ps->nodes[cat].kid = q;
        else
            ps->nodes[last].next = q;
        last = q;
    }
    return cat;
}

static int32_t re_parse_alt(re_parser *ps)
{
    int32_t first = re_parse_seq(ps);
    if (first < 0 || re_peek(ps) != '|' || re_at_end(ps)) return first;
    int32_t alt = re_new_node(ps, ND_ALT);
    if (alt < 0) return -1;
    ps->nodes[alt].kid = first;
    int32_t last = first;
    while (re_eat(ps, '|')) {
        int32_t s = re_parse_seq(ps);
        if (s < 0) return -1;
        ps->nodes[last].next = s;
        last = s;
    }
    return alt;
}

/* ---- code generation ----------------------------------------------------------------- */

static int32_t re_emit(tok_regex *re, uint8_t op)
{
    if (re->n_prog >= re->cap_prog) {
        if (re->cap_prog >= RE_MAX_INSTS) return -1;
        uint32_t cap = re->cap_prog ? re->cap_prog * 2 : 64;
        re_inst *p = realloc(re->prog, (size_t)cap * sizeof *p);
        if (!p) return -1;
        re->prog = p;
        re->cap_prog = cap;
    }
    re_inst *in = &re->prog[re->n_prog];
    memset(in, 0, sizeof *in);
    in->op = op;
    in->x = in->y = -1;
    return (int32_t)re->n_prog++;
}

static bool re_gen(const re_parser *ps, tok_regex *re, int32_t nd);

/* a|b|c: SPLIT to each branch in turn; each branch but the last jumps past the others. */
static bool re_gen_alt(const re_parser *ps, tok_regex *re, const re_node *n)
{
    int32_t jumps = -1; /* chain of pending JMPs, linked through their x fields */
    for (int32_t k = n->kid; k >= 0; k = ps->nodes[k].next) {
        bool last = ps->nodes[k].next < 0;
        int32_t split = last ? -1 : re_emit(re, OP_SPLIT);
        if (!last && split < 0) return false;
        if (!re_gen(ps, re, k)) return false;
        if (last) break;
        int32_t j = re_emit(re, OP_JMP);
        if (j < 0) return false;
        re->prog[j].x = jumps;
        jumps = j;
        re->prog[split].x = split + 1;
        re->prog[split].y = (int32_t)re->n_prog;
    }
    while (jumps >= 0) {
        int32_t prev = re->prog[jumps].x;
        re->prog[jumps].x = (int32_t)re->n_prog;
        jumps = prev;
    }
    return true;
}

static void re_set_split(re_inst *in, int32_t body, int32_t out, bool greedy)
{
    in->x = greedy ? body : out;
    in->y = greedy ? out : body;
}

/* x{min,max}: min copies, then either a loop or (max - min) nested optional copies (skipping
 * one skips the rest, so greedy tries longer matches first, as ECMAScript does). */
static bool re_gen_repeat(const re_parser *ps, tok_regex *re, const re_node *n)
{
    for (uint32_t k = 0; k < n->min; k++)
        if (!re_gen(ps, re, n->kid)) return false;
    if (n->max == RE_INF) {
        int32_t split = re_emit(re, OP_SPLIT);
        if (split < 0 || !re_gen(ps, re, n->kid)) return false;
        int32_t j = re_emit(re, OP_JMP);
        if (j < 0) return false;
        re->prog[j].x = split;
        re_set_split(&re->prog[split], split + 1, (int32_t)re->n_prog, n->flag);
        return true;
    }
    int32_t splits = -1; /* chain of the optional copies' SPLITs, linked through y */
    for (uint32_t k = n->min; k < n->max; k++) {
        int32_t split = re_emit(re, OP_SPLIT);
        if (split < 0) return false;
        re->prog[split].y = splits;
        splits = split;
        if (!re_gen(ps, re, n->kid)) return false;
    }
    /* every SPLIT's "skip" goes past all optional copies */
    int32_t out = (int32_t)re->n_prog;
    while (splits >= 0) {
        int32_t prev = re->prog[splits].y;
        re_set_split(&re->prog[splits], splits + 1, out, n->flag);
        splits = prev;
    }
    return true;
}

static bool re_gen(const re_parser *ps, tok_regex *re, int32_t nd)
{
    const re_node *n = &ps->nodes[nd];
    int32_t pc;
    switch (n->type) {
    case ND_CLASS:
        if ((pc = re_emit(re, OP_CLASS)) < 0) return false;
        re->prog[pc].cls = n->cls;
        return true;
    case ND_ANY:
        return re_emit(re, OP_ANY) >= 0;
    case ND_BOL:
        return re_emit(re, OP_BOL) >= 0;
    case ND_EOL:
        return re_emit(re, OP_EOL) >= 0;
    case ND_CAT:
        for (int32_t k = n->kid; k >= 0; k = ps->nodes[k].next)
            if (!re_gen(ps, re, k)) return false;
        return true;
    case ND_ALT:
        return re_gen_alt(ps, re, n);
    case ND_REPEAT:
        return re_gen_repeat(ps, re, n);
    default: /* ND_LOOK */
        if ((pc = re_emit(re, OP_LOOK)) < 0) return false;
        if (!re_gen(ps, re, n->kid) || re_emit(re, OP_MATCH) < 0) return false;
        re->prog[pc].neg = n->flag;
        re->prog[pc].x = pc + 1;
        re->prog[pc].y = (int32_t)re->n_prog;
        return true;
    }
}

/* ---- compile ------------------------------------------------------------------------- */

void tok_regex_free(tok_regex *re)
{
    if (!re) return;
    free(re->items);
    free(re->classes);
    free(re->prog);
    free(re);
}

bool tok_regex_collapsed(const tok_regex *re)
{
    return re->collapsed;
}

mica_status tok_regex_compile(tok_regex **out, const char *pattern, size_t len, mica_err *err)
{
    *out = NULL;
    if (len > RE_MAX_PATTERN * 4)
        return core_fail(err, MICA_EUNSUPPORTED, "regex: pattern of %zu bytes is too long", len);
    mica_status st = MICA_ENOMEM;
    uint32_t *cps = malloc((len + 1) * sizeof *cps);
    size_t n = cps ? tok_utf8_to_cps(pattern, len, cps) : 0;
    re_parser ps = {.p = cps, .n = n, .err = err};
    /* bounds: each code point makes at most one item and one class; nodes per code point at
     * most 4 (class, repeat, sequence, alternation) */
    ps.cap_nodes = (uint32_t)(4 * n + 8);
    ps.nodes = malloc(ps.cap_nodes * sizeof *ps.nodes);
    tok_regex *re = calloc(1, sizeof *re);
    if (re) {
        re->items = malloc((n + 1) * sizeof *re->items);
        re->classes = malloc((n + 1) * sizeof *re->classes);
    }
    if (!cps || !ps.nodes || !re || !re->items || !re->classes) goto fail_nomem;
    ps.re = re;

    int32_t root = re_parse_alt(&ps);
    if (root >= 0 && !re_at_end(&ps)) {
        re_fail(&ps, MICA_EUNSUPPORTED, "unbalanced ')'");
        root = -1;
    }
    if (root < 0) {
        st = ps.st;
        goto fail;
    }
    if (!re_gen(&ps, re, root) || re_emit(re, OP_MATCH) < 0) {
        st = core_fail(err, MICA_ENOMEM, "regex: compiled program passes %u instructions",
                       RE_MAX_INSTS);
        goto fail;
    }
    free(cps);
    free(ps.nodes);
    *out = re;
    return MICA_OK;

fail_nomem:
    st = core_fail(err, MICA_ENOMEM, "regex: out of memory compiling a %zu-byte pattern", len);
fail:
    free(cps);
    free(ps.nodes);
    tok_regex_free(re);
    return st;
}

/* ---- matching ------------------------------------------------------------------------ */

/* llama.cpp's collapsed \p{X}: the category's representative, or one of the ASCII characters
 * llama.cpp lists for it (note: no '~' among the symbols, no ASCII marks). */
static bool re_collapsed_is(uint32_t c, uint32_t flag)
{
    if (c >= 128) {
        switch (flag) {
        case TOK_UCAT_NUMBER:
            return c == TOK_RE_REP_NUMBER;
        case TOK_UCAT_LETTER:
            return c == TOK_RE_REP_LETTER;
        case TOK_UCAT_PUNCT:
            return c == TOK_RE_REP_PUNCT;
        case TOK_UCAT_MARK:
            return c == TOK_RE_REP_MARK;
        default:
            return c == TOK_RE_REP_SYMBOL;
        }
    }
    if (c == 0) return false; /* strchr would find the terminator */
    switch (flag) {
    case TOK_UCAT_NUMBER:
        return c >= '0' && c <= '9';
    case TOK_UCAT_LETTER:
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    case TOK_UCAT_PUNCT:
        return strchr("!\"#%&'()*,-./:;?@[\\]_{}", (int)c) != NULL;
    case TOK_UCAT_MARK:
        return false;
    default:
        return strchr("$+<=>^`|", (int)c) != NULL;
    }
}

static bool re_item_match(const re_item *it, uint32_t c)
{
    bool m;
    switch (it->kind) {
    case IT_RANGE:
        m = it->lo <= c && c <= it->hi;
        break;
    case IT_SPACE:
        m = c == ' ' || (c >= '\t' && c <= '\r');
        break;
    case IT_DIGIT:
        m = c >= '0' && c <= '9';
        break;
    case IT_WORD:
        m = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        break;
    default:
        m = re_collapsed_is(c, it->lo);
        break;
    }
    return m != it->neg;
}

static bool re_class_match(const tok_regex *re, uint32_t cls, uint32_t c)
{
    const re_class *k = &re->classes[cls];
    bool any = false;
    for (uint32_t i = 0; i < k->count && !any; i++)
        any = re_item_match(&re->items[k->first + i], c);
    return any != k->neg;
}

/* ECMAScript's '.': anything but a line terminator. */
static bool re_is_line_end(uint32_t c)
{
    return c == '\n' || c == '\r' || c == 0x2028 || c == 0x2029;
}

typedef struct re_frame {
    int32_t pc;
    size_t pos;
} re_frame;

typedef struct re_exec {
    const tok_regex *re;
    const uint32_t *s;
    size_t begin, end;
    re_frame *stack;
    size_t n, cap;
    uint64_t budget;
    mica_err *err;
} re_exec;

static mica_status re_push(re_exec *ex, int32_t pc, size_t pos)
{
    if (ex->n == ex->cap) {
        if (ex->cap >= RE_MAX_STACK)
            return core_fail(ex->err, MICA_ENOMEM, "regex: backtracking stack passed %zu entries",
                             RE_MAX_STACK);
        size_t cap = ex->cap ? ex->cap * 2 : 256;
        re_frame *st = realloc(ex->stack, cap * sizeof *st);
        if (!st) return core_fail(ex->err, MICA_ENOMEM, "regex: out of memory backtracking");
        ex->stack = st;
        ex->cap = cap;
    }
    ex->stack[ex->n++] = (re_frame){pc, pos};
    return MICA_OK;
}

/* Whether instruction pc lets the thread at *pos go on; consuming instructions advance *pos. */
static bool re_step_ok(const re_exec *ex, const re_inst *in, size_t *pos)
{
    bool more = *pos < ex->end;
    switch (in->op) {
    case OP_CLASS:
        if (!more || !re_class_match(ex->re, in->cls, ex->s[*pos])) return false;
        (*pos)++;
        return true;
    case OP_ANY:
        if (!more || re_is_line_end(ex->s[*pos])) return false;
        (*pos)++;
        return true;
    case OP_BOL:
        return *pos == ex->begin;
    default: /* OP_EOL */
        return *pos == ex->end;
    }
}

/* Runs the program from pc0 at pos0; *matched tells whether a MATCH was reached (its position
 * in *mend). Uses the stack above its current top and leaves it as it found it. */
static mica_status re_run(re_exec *ex, int32_t pc0, size_t pos0, bool *matched, size_t *mend)
{
    size_t base = ex->n;
    mica_status st = re_push(ex, pc0, pos0);
    *matched = false;
    while (!st && ex->n > base) {
        re_frame f = ex->stack[--ex->n];
        for (bool alive = true; alive && !st;) {
            if (ex->budget-- == 0) {
                st = core_fail(ex->err, MICA_ERANGE, "regex: backtracking step budget exhausted");
                break;
            }
            const re_inst *in = &ex->re->prog[f.pc];
            switch (in->op) {
            case OP_MATCH:
                *matched = true;
                *mend = f.pos;
                ex->n = base;
                return MICA_OK;
            case OP_SPLIT:
                st = re_push(ex, in->y, f.pos);
                f.pc = in->x;
                break;
            case OP_JMP:
                f.pc = in->x;
                break;
            case OP_LOOK: {
                bool found;
                size_t unused;
                st = re_run(ex, in->x, f.pos, &found, &unused);
                alive = found != in->neg;
                f.pc = in->y;
                break;
            }
            default:
                alive = re_step_ok(ex, in, &f.pos);
                f.pc++;
                break;
            }
        }
    }
    ex->n = base;
    return st;
}

mica_status tok_regex_search(const tok_regex *re, const uint32_t *s, size_t begin, size_t end,
                             size_t from, bool *found, size_t *mb, size_t *me, mica_err *err)
{
    re_exec ex = {
        .re = re, .s = s, .begin = begin, .end = end, .budget = RE_STEP_BUDGET, .err = err};
    mica_status st = MICA_OK;
    *found = false;
    for (size_t start = from; start <= end && !st && !*found; start++) {
        st = re_run(&ex, 0, start, found, me);
        *mb = start;
    }
    free(ex.stack);
    return st;
}
