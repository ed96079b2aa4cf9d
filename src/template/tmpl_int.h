/*
 * tmpl_int.h - the template module's internals, shared by its files and by nothing else:
 * the value layout, the lexer's tokens, the syntax tree, the render state (scopes, caps,
 * error reporting) and the functions the files call across. Not for use outside
 * src/template/ (the public API is template.h).
 *
 * Conventions: a function that returns tmpl_value * returns a new reference, or NULL after
 * filling the run's error (tmpl_fail). Functions returning bool return false after the same.
 * Arguments are borrowed unless a comment says "steals".
 */
#ifndef MICA_TMPL_INT_H
#define MICA_TMPL_INT_H

#include "core/core.h"
#include "template.h"

#include <string.h>
#include <time.h>

/* ---- strings ----------------------------------------------------------------------------- */

typedef struct tmpl_sv {
    const char *s;
    size_t len;
} tmpl_sv;

static inline bool tmpl_sv_eq(tmpl_sv a, const char *c)
{
    size_t n = strlen(c);
    return a.len == n && memcmp(a.s, c, n) == 0;
}

/* ---- values ------------------------------------------------------------------------------ */

#define TMPL_IMMORTAL UINT32_MAX

/* Call arguments: positional, then keyword (names parallel to kw). */
typedef struct tmpl_args {
    tmpl_value **pos;
    size_t n_pos;
    const tmpl_sv *kw_names;
    tmpl_value **kw;
    size_t n_kw;
} tmpl_args;

enum tmpl_flag {
    TMPL_F_MARKUP = 1,   /* str: markupsafe.Markup (from |safe): `+` escapes the other side */
    TMPL_F_UNSAFE = 2,   /* undefined: a sandbox refusal; using it raises SecurityError */
    TMPL_F_CONSUMED = 4, /* generator: already iterated (Python generators are one-shot) */
    TMPL_F_RAISES = 8,   /* generator: iterating it raises its hint (|items on a non-mapping) */
    TMPL_F_ASCII = 16,   /* str: every byte < 0x80, so code point i is byte i */
};

/* Bytes of values alive in one render, against its cap (tmpl_render_params.max_memory). */
typedef struct tmpl_budget {
    size_t live, max;
    uint64_t work; /* bytes allocated or scanned so far: counted as steps (1 per 64) */
    bool refused;  /* an allocation was refused for the cap (vs. malloc failing) */
} tmpl_budget;

typedef struct tmpl_node tmpl_node;

struct tmpl_value {
    uint32_t refs;         /* TMPL_IMMORTAL: static or owned by a parsed template */
    uint8_t kind;          /* tmpl_kind */
    uint8_t flags;         /* enum tmpl_flag */
    tmpl_budget *budget;   /* the render that allocated it, or NULL (the caller's values) */
    size_t bytes;          /* charged to budget */
    tmpl_value *dead_next; /* tmpl_unref's work list */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            char *s; /* NUL-terminated; undefined: the hint (NULL: none) */
            size_t len;
        } str;
        struct {
            tmpl_value **v;
            size_t len, cap;
        } seq; /* list, tuple, generator */
        struct {
            tmpl_value **k, **v;
            size_t len, cap;
        } map; /* dict, namespace */
        const tmpl_node *macro;
        struct {
            int id;           /* enum tmpl_fn */
            tmpl_value *self; /* bound method receiver, or NULL */
        } fn;
        struct {
            tmpl_value *items; /* what the loop iterates (a list) */
            size_t index0;
        } loop;
    } u;
};

tmpl_value *tmpl_ref(tmpl_value *v);
void tmpl_unref(tmpl_value *v);
tmpl_value *tmpl_undef(void); /* static, no hint */
/* An undefined value whose use raises hint (printf-style); NULL when out of memory. */
tmpl_value *tmpl_undef_hint(tmpl_budget *b, uint8_t flags, const char *fmt, ...) CORE_PRINTF(3, 4);
tmpl_value *tmpl_new_int(tmpl_budget *b, int64_t i);
tmpl_value *tmpl_new_float(tmpl_budget *b, double f);
tmpl_value *tmpl_new_str(tmpl_budget *b, const char *s, size_t len);
/* Adopts a malloc'd buffer data[0..len] (NUL at len); frees it when that fails. */
tmpl_value *tmpl_new_str_take(tmpl_budget *b, char *data, size_t len);
tmpl_value *tmpl_new_seq(tmpl_budget *b, tmpl_kind kind, size_t cap); /* list/tuple/gen */
bool tmpl_seq_push(tmpl_value *seq, tmpl_value *item);                /* steals item */
tmpl_value *tmpl_new_map(tmpl_budget *b, tmpl_kind kind);             /* dict/namespace */
bool tmpl_map_set(tmpl_value *m, tmpl_value *key, tmpl_value *v);     /* steals key and v */
tmpl_value *tmpl_map_get(const tmpl_value *m, const tmpl_value *key); /* borrowed or NULL */
tmpl_value *tmpl_map_get_sv(const tmpl_value *m, tmpl_sv key);        /* borrowed or NULL */
tmpl_value *tmpl_new_fn(tmpl_budget *b, int id, tmpl_value *self);    /* steals self */
tmpl_value *tmpl_new_macro(tmpl_budget *b, const tmpl_node *n);
tmpl_value *tmpl_new_loop(tmpl_budget *b, tmpl_value *items); /* steals items */
/* Drops what a map holds (breaks reference cycles through namespaces). */
void tmpl_map_clear(tmpl_value *m);

static inline bool tmpl_is_seq(const tmpl_value *v)
{
    return v->kind == TMPL_LIST || v->kind == TMPL_TUPLE;
}
static inline bool tmpl_is_num(const tmpl_value *v)
{
    return v->kind == TMPL_BOOL || v->kind == TMPL_INT || v->kind == TMPL_FLOAT;
}

/* ---- text helpers (tmpl_str.c) ----------------------------------------------------------- */

bool tmpl_is_space(uint32_t cp);     /* Python str.isspace */
bool tmpl_is_linebreak(uint32_t cp); /* Python str.splitlines boundaries */
uint32_t tmpl_upper_cp(uint32_t cp);
uint32_t tmpl_lower_cp(uint32_t cp);
uint32_t tmpl_decode(const char *s, size_t n, size_t *len); /* one code point, len >= 1 */
size_t tmpl_cp_count(const char *s, size_t n);
/* Byte offset of code point index i (clamped to n). */
size_t tmpl_cp_offset(const char *s, size_t n, size_t i);
/* Whitespace trimming as Python's strip()/lstrip()/rstrip() without arguments. */
size_t tmpl_lstrip_len(const char *s, size_t n); /* bytes of leading whitespace */
size_t tmpl_rstrip_len(const char *s, size_t n); /* bytes kept after removing trailing ws */

/* Python str(v) / repr(v) appended to out; false when out's cap is reached. */
bool tmpl_write_str(core_buf *out, const tmpl_value *v);
bool tmpl_write_repr(core_buf *out, const tmpl_value *v);
bool tmpl_write_float(core_buf *out, double f); /* Python repr of a float */
/* Python type name ("NoneType", "str", ...) and Jinja's object_type_repr ("str object"). */
const char *tmpl_type_name(const tmpl_value *v);
void tmpl_object_repr(const tmpl_value *v, char *buf, size_t cap);

/* ---- lexer (tmpl_lex.c) ------------------------------------------------------------------ */

enum tmpl_tok_kind {
    TK_EOF,
    TK_DATA,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
};

enum tmpl_op {
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_FLOORDIV,
    OP_MOD,
    OP_POW,
    OP_TILDE,
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_IN,
    OP_NOTIN,
    OP_LBRACKET,
    OP_RBRACKET,
    OP_LPAREN,
    OP_RPAREN,
    OP_LBRACE,
    OP_RBRACE,
    OP_ASSIGN,
    OP_DOT,
    OP_COLON,
    OP_PIPE,
    OP_COMMA,
    OP_SEMICOLON,
};

typedef struct tmpl_tok {
    uint8_t kind, op;
    int line;
    tmpl_sv text; /* DATA / NAME: source bytes; STRING: the decoded value */
    int64_t i;
    double f;
} tmpl_tok;

typedef struct tmpl_arena tmpl_arena;
void *tmpl_arena_alloc(tmpl_arena **a, size_t n); /* zeroed; NULL when out of memory */
void tmpl_arena_free(tmpl_arena *a);

typedef struct tmpl_tokens {
    tmpl_tok *v;
    size_t len, cap;
} tmpl_tokens;

/* Splits src (newlines already normalised to \n) into tokens with transformers' whitespace
 * rules; decoded string literals live in *arena. */
mica_status tmpl_lex(const char *name, const char *src, size_t len, tmpl_arena **arena,
                     tmpl_tokens *out, mica_err *err);

/* ---- syntax tree (tmpl_parse*.c) --------------------------------------------------------- */

enum tmpl_nkind {
    /* expressions */
    N_CONST,
    N_NAME,
    N_GETATTR,
    N_GETITEM,
    N_SLICE,
    N_CALL,
    N_FILTER,
    N_TEST,
    N_NOT,
    N_NEG,
    N_POS,
    N_BIN, /* op: OP_ADD .. OP_TILDE */
    N_AND,
    N_OR,
    N_CMP, /* a, then ops[i] against kids[i] */
    N_COND,
    N_LIST,
    N_TUPLE,
    N_DICT,
    /* statements */
    N_TEXT,
    N_OUTPUT,
    N_IF,
    N_FOR,
    N_SET,
    N_SET_BLOCK,
    N_MACRO,
    N_BREAK,
    N_CONTINUE,
    N_BLOCK, /* {% generation %}: renders its body */
};

struct tmpl_node {
    uint8_t kind, op;
    int16_t id; /* filter / test id (-1: unknown, raises when evaluated) */
    int line;
    int height;         /* expressions: 1 + the tallest operand */
    tmpl_sv name, attr; /* names; N_TEXT: the text */
    tmpl_value *value;  /* N_CONST (immortal) */
    tmpl_node *a, *b, *c, *d;
    tmpl_node **kids; /* arguments, items, dict keys, body, compare operands */
    size_t n_kids;
    tmpl_node **kids2; /* keyword values, dict values, else body, macro defaults */
    size_t n_kids2;
    tmpl_sv *names; /* keyword names, loop / set targets, macro parameters */
    size_t n_names;
    uint8_t *ops; /* N_CMP operators */
};

/* N_GETATTR: a.name; N_GETITEM: a[b]; N_SLICE: a[b:c:d]; N_CALL / N_FILTER / N_TEST: callee or
 * operand a, positional kids, keyword names / kids2; N_COND: a if b else c; N_IF: if a: kids
 * else kids2; N_FOR: for names in a if b: kids else kids2; N_SET: names = a, or name.attr = a
 * (attr.s != NULL); N_SET_BLOCK: the same with the body kids (filtered by c when given, c's
 * operand being NULL); N_MACRO: name(names = kids2 defaults, NULL for none): kids. */

struct tmpl_template {
    char *name;
    char *src; /* normalised source; the tree's names point into it */
    size_t src_len;
    tmpl_arena *arena;
    tmpl_node **body;
    size_t n_body;
    tmpl_value **consts; /* owned constants, freed with the template */
    size_t n_consts, cap_consts;
};

mica_status tmpl_parse_tokens(tmpl_template *t, const tmpl_tokens *toks, mica_err *err);

/* Parser state shared by tmpl_parse.c (statements) and tmpl_parse_expr.c (expressions). */
typedef struct tmpl_parser {
    tmpl_template *t;
    const tmpl_tok *tok;
    size_t pos, n;
    int depth, edepth, loops; /* statement / bracket nesting; enclosing for loops */
    mica_status status;
    bool failed;
    mica_err *err;
} tmpl_parser;

#define TMPL_MAX_DEPTH  128 /* nesting of statements, and of brackets in expressions */
#define TMPL_MAX_HEIGHT 256 /* height of an expression's tree */

static inline const tmpl_tok *tp_cur(const tmpl_parser *p)
{
    return &p->tok[p->pos];
}
static inline const tmpl_tok *tp_peek(const tmpl_parser *p, size_t k)
{
    return &p->tok[p->pos + k < p->n ? p->pos + k : p->n - 1];
}
bool tp_fail(tmpl_parser *p, const tmpl_tok *at, const char *fmt, ...) CORE_PRINTF(3, 4);
bool tp_is_name(const tmpl_tok *k, const char *name);
bool tp_is_op(const tmpl_tok *k, int op);
bool tp_expect_op(tmpl_parser *p, int op, const char *what);
tmpl_node *tp_node(tmpl_parser *p, int kind, int line);
/* Copies a growable array into the arena. */
bool tp_finish(tmpl_parser *p, tmpl_node ***dst, size_t *n, tmpl_node **v, size_t len);
bool tp_push(tmpl_parser *p, tmpl_node ***v, size_t *len, size_t *cap, tmpl_node *n);
tmpl_value *tp_const(tmpl_parser *p, tmpl_value *v); /* makes v owned by the template */

tmpl_node *tp_expression(tmpl_parser *p, bool with_cond); /* a [if b else c] */
tmpl_node *tp_tuple(tmpl_parser *p, bool with_cond);      /* a, b, ... (a tuple when >1) */
tmpl_node *tp_or(tmpl_parser *p);
tmpl_node *tp_primary(tmpl_parser *p);
tmpl_node *tp_postfix(tmpl_parser *p, tmpl_node *n);
tmpl_node *tp_filter_chain(tmpl_parser *p, tmpl_node *n);

/* ---- render state (tmpl_render.c) -------------------------------------------------------- */

typedef struct tmpl_scope tmpl_scope;
struct tmpl_scope {
    tmpl_scope *parent;
    tmpl_sv *names;
    tmpl_value **vals;
    size_t len, cap;
};

typedef struct tmpl_run {
    const tmpl_template *t;
    mica_err *err;
    tmpl_budget budget;
    core_buf *out;
    tmpl_scope *scope, *root;
    int line, depth, nesting;
    uint64_t steps, max_steps;
    size_t max_output;
    struct tm now;
    tmpl_value **namespaces; /* every namespace made, to break cycles at the end */
    size_t n_ns, cap_ns;
    bool failed; /* err holds the first error */
    mica_status status;
    char msg[400]; /* that error without the "NAME:LINE: " prefix */
} tmpl_run;

#define TMPL_MAX_CALL_DEPTH 100  /* macro calls active at once */
#define TMPL_MAX_NESTING    1000 /* statements and expressions being evaluated at once */

void *tmpl_fail(tmpl_run *r, mica_status st, const char *fmt, ...) CORE_PRINTF(3, 4);
bool tmpl_failb(tmpl_run *r, mica_status st, const char *fmt, ...) CORE_PRINTF(3, 4);
void *tmpl_fail_nomem(tmpl_run *r);
/* Python's generator filters (map, select, ...) raise only when iterated: turns the error
 * just raised (a template error, not a cap) into a generator that raises it when iterated.
 * NULL when the error must stand. */
tmpl_value *tmpl_defer_error(tmpl_run *r);
/* Raises the error an undefined value stands for ("'x' is undefined", or its hint). */
void *tmpl_fail_undef(tmpl_run *r, const tmpl_value *u);
bool tmpl_step(tmpl_run *r); /* counts one step against max_steps */
/* Counts bytes scanned as work; false (with the steps error) once over the cap. */
bool tmpl_work(tmpl_run *r, size_t bytes);
/* Code points of a str value, and the byte offset of code point i (clamped), charging the
 * scan of a non-ASCII string as work. */
size_t tmpl_str_chars(tmpl_run *r, const tmpl_value *s);
size_t tmpl_str_offset(tmpl_run *r, const tmpl_value *s, size_t i);

tmpl_value *tmpl_lookup(tmpl_run *r, tmpl_sv name); /* borrowed, or NULL when unset */
bool tmpl_scope_set(tmpl_run *r, tmpl_scope *s, tmpl_sv name, tmpl_value *v); /* steals v */
tmpl_value *tmpl_call_macro(tmpl_run *r, const tmpl_value *macro, const tmpl_args *a);
bool tmpl_track_namespace(tmpl_run *r, tmpl_value *ns);

/* ---- expressions (tmpl_eval.c, tmpl_ops.c) ----------------------------------------------- */

tmpl_value *tmpl_eval(tmpl_run *r, const tmpl_node *n);
tmpl_value *tmpl_getattr(tmpl_run *r, tmpl_value *obj, tmpl_sv name);
tmpl_value *tmpl_getitem(tmpl_run *r, tmpl_value *obj, tmpl_value *key);
tmpl_value *tmpl_slice(tmpl_run *r, tmpl_value *obj, tmpl_value *start, tmpl_value *stop,
                       tmpl_value *step);
/* The sequence a for loop / list() / join() walks: a list, tuple or generator value (a
 * consumed generator gives an empty list); errors as Python's iter(). */
tmpl_value *tmpl_iterate(tmpl_run *r, tmpl_value *v);
/* The call protocol: macros, globals, bound methods. */
tmpl_value *tmpl_call(tmpl_run *r, tmpl_value *callee, const tmpl_args *a);

bool tmpl_truthy(const tmpl_value *v);
bool tmpl_equal(const tmpl_value *a, const tmpl_value *b);
tmpl_value *tmpl_binop(tmpl_run *r, int op, tmpl_value *a, tmpl_value *b);
tmpl_value *tmpl_negate(tmpl_run *r, tmpl_value *v, bool minus);
/* 1 true, 0 false, -1 error. */
int tmpl_compare(tmpl_run *r, int op, tmpl_value *a, tmpl_value *b);
int tmpl_contains(tmpl_run *r, tmpl_value *container, tmpl_value *item);
bool tmpl_hashable(tmpl_run *r, const tmpl_value *key); /* dict keys: not a list or dict */
/* Python < for sorting: -1, 0, 1, or -2 after an error. lower: compare strings lowercased. */
int tmpl_order(tmpl_run *r, tmpl_value *a, tmpl_value *b, bool lower);
/* str(v) as a value (a new reference to v when it is already a str). */
tmpl_value *tmpl_to_str(tmpl_run *r, tmpl_value *v);
/* Length as Python's len(); -1 after an error. */
int64_t tmpl_len(tmpl_run *r, tmpl_value *v);
/* HTML escaping as markupsafe.escape. */
bool tmpl_write_escaped(core_buf *out, const char *s, size_t n);

/* ---- callables, filters, tests (tmpl_call.c, tmpl_method.c, tmpl_filter.c, tmpl_test.c) -- */

enum tmpl_fn {
    FN_RANGE,
    FN_NAMESPACE,
    FN_DICT,
    FN_RAISE,
    FN_STRFTIME,
    FN_GLOBAL_UNSUPPORTED, /* cycler, joiner, lipsum */
    FN_STR_FIRST,
    FN_STR_STRIP = FN_STR_FIRST,
    FN_STR_LSTRIP,
    FN_STR_RSTRIP,
    FN_STR_SPLIT,
    FN_STR_RSPLIT,
    FN_STR_SPLITLINES,
    FN_STR_STARTSWITH,
    FN_STR_ENDSWITH,
    FN_STR_REPLACE,
    FN_STR_UPPER,
    FN_STR_LOWER,
    FN_STR_TITLE,
    FN_STR_CAPITALIZE,
    FN_STR_FIND,
    FN_STR_RFIND,
    FN_STR_COUNT,
    FN_STR_JOIN,
    FN_STR_ISDIGIT,
    FN_STR_ISALPHA,
    FN_STR_ISSPACE,
    FN_STR_ISUPPER,
    FN_STR_ISLOWER,
    FN_STR_FORMAT,
    FN_STR_LAST = FN_STR_FORMAT,
    FN_DICT_ITEMS,
    FN_DICT_KEYS,
    FN_DICT_VALUES,
    FN_DICT_GET,
    FN_DICT_COPY,
    FN_LIST_INDEX,
    FN_LIST_COUNT,
    FN_LOOP_CYCLE,
};

/* Static FUNC value for a global name (range, namespace, ...), or NULL. */
tmpl_value *tmpl_global(tmpl_sv name);
/* The method `name` of obj as a bound FUNC value, an unsafe-undefined for the sandbox's
 * mutating methods, or NULL when obj has no such method (then it is an item / attribute). */
tmpl_value *tmpl_method(tmpl_run *r, tmpl_value *obj, tmpl_sv name, bool *found);
tmpl_value *tmpl_call_fn(tmpl_run *r, const tmpl_value *fn, const tmpl_args *a);
tmpl_value *tmpl_str_method(tmpl_run *r, int id, tmpl_value *self, const tmpl_args *a);
/* String helpers shared with the filters (self must be a str). sides: 1 left, 2 right, 3 both;
 * chars NULL or None strips whitespace. mode: 'u' upper, 'l' lower, 'c' capitalize,
 * 't' str.title. count < 0 replaces all. */
tmpl_value *tmpl_str_strip(tmpl_run *r, tmpl_value *self, const tmpl_value *chars, int sides);
tmpl_value *tmpl_str_case(tmpl_run *r, tmpl_value *self, char mode);
tmpl_value *tmpl_str_replace(tmpl_run *r, tmpl_value *self, const tmpl_value *old,
                             const tmpl_value *new, int64_t count);
/* Python's printf-style fmt % args (args: a tuple, a dict for %(name)s, or one value). */
tmpl_value *tmpl_str_percent(tmpl_run *r, const tmpl_value *fmt, const tmpl_value *args);

/* Binds positional and keyword arguments to params (Python's rules); out[i] is borrowed, NULL
 * when not given. */
bool tmpl_bind(tmpl_run *r, const char *fname, const char *const *params, size_t n_params,
               const tmpl_args *a, tmpl_value **out);

typedef tmpl_value *(*tmpl_filter_fn)(tmpl_run *r, tmpl_value *v, const tmpl_args *a);
typedef struct tmpl_filter_def {
    const char *name;
    tmpl_filter_fn fn;
    bool lazy; /* a generator in jinja2: its errors wait for the iteration */
} tmpl_filter_def;
extern const tmpl_filter_def tmpl_seq_filters[]; /* tmpl_filter_seq.c */
extern const size_t tmpl_n_seq_filters;

/* Helpers of the filter files. TMPL_BIND binds a filter's arguments after the operand to the
 * named parameters, into p[]. */
static inline tmpl_value *tmpl_or_nomem(tmpl_run *r, tmpl_value *v)
{
    return v ? v : (tmpl_value *)tmpl_fail_nomem(r);
}
static inline bool tmpl_arg_true(const tmpl_value *v)
{
    return v && tmpl_truthy(v);
}
#define TMPL_BIND(name, ...)                                                                       \
    static const char *const params_[] = {__VA_ARGS__};                                            \
    tmpl_value *p[sizeof params_ / sizeof params_[0]];                                             \
    if (!tmpl_bind(r, name, params_, sizeof params_ / sizeof params_[0], a, p)) return NULL

int tmpl_filter_id(tmpl_sv name);           /* -1 when unknown */
bool tmpl_filter_unsupported(tmpl_sv name); /* a jinja2 builtin mica leaves out */
int tmpl_test_id(tmpl_sv name);
tmpl_value *tmpl_filter(tmpl_run *r, const tmpl_node *n, tmpl_value *v, const tmpl_args *a);
int tmpl_test(tmpl_run *r, const tmpl_node *n, tmpl_value *v, const tmpl_args *a);
/* Applies the filter / test called `name` (map('upper'), select('odd')). */
tmpl_value *tmpl_filter_by_name(tmpl_run *r, tmpl_sv name, tmpl_value *v, const tmpl_args *a);
int tmpl_test_by_name(tmpl_run *r, tmpl_sv name, tmpl_value *v, const tmpl_args *a);

/* tojson as transformers defines it (json.dumps with ensure_ascii=False by default). */
typedef struct tmpl_json_opts {
    bool ensure_ascii, sort_keys;
    int indent; /* < 0: none */
    const char *item_sep, *key_sep;
} tmpl_json_opts;
bool tmpl_tojson(tmpl_run *r, core_buf *out, const tmpl_value *v, const tmpl_json_opts *o);

#endif
