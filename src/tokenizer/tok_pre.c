/*
 * tok_pre.c - BPE pre-tokenization as llama.cpp does it: the regex list for each
 * tokenizer.ggml.pre name (llm_tokenizer_bpe), and unicode_regex_split's way of applying it:
 * llama.cpp's hand-written splitters for the GPT-2 and Llama-3 patterns, and otherwise the
 * regex engine run on the text llama.cpp gives std::regex (non-ASCII code points collapsed to
 * one representative per category when the pattern uses \p{...}) or std::wregex (non-ASCII
 * white space replaced by \v). Does not merge (tok_bpe.c). Called by tok_bpe.c.
 */
#include "tok_pre.h"

#include "tok_int.h"
#include "tok_regex.h"
#include "tok_unicode.h"

#include <stdlib.h>
#include <string.h>

/* ---- the regex lists (strings exactly as llama.cpp's llm_tokenizer_bpe has them) ------- */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3                                                                                  \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"     \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                   \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"     \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* DeepSeek's letter class, written with escapes: several of its code points (U+1F7D, U+1FBE,
 * U+1FD3, U+1FDB, U+2126, U+212A) are NFC singletons that an editor may silently normalize. */
#define RE_DEEPSEEK_LETTERS                                                                        \
    "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293"           \
    "\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C"           \
    "\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5"               \
    "\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77"               \
    "\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59"         \
    "\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC"          \
    "\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107"                \
    "\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139"           \
    "\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE"          \
    "\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E"                \
    "\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A"                            \
    "\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2"         \
    "\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+"
#define RE_DEEPSEEK_PUNCT "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+"
#define RE_DEEPSEEK_CJK   "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+"
#define RE_DEEPSEEK3_MAIN                                                                          \
    "[!\"#$%&'()*+,\\-./"                                                                          \
    ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"                \
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
#define RE_BLOOM " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+"

typedef struct tok_pre_def {
    const char *const *names; /* tokenizer.ggml.pre values, NULL-terminated */
    const char *regex[6];     /* applied in order; unused slots are NULL */
} tok_pre_def;

static const char *const names_default[] = {"default", NULL};
static const char *const names_llama3[] = {
    "llama3", "llama-v3",     "llama-bpe", "falcon3",   "falcon-h1", "pixtral",     "midm-2.0",
    "lfm2",   "jina-v5-nano", "dbrx",      "smaug-bpe", "glm4",      "chatglm-bpe", NULL};
static const char *const names_deepseek_llm[] = {"deepseek-llm", NULL};
static const char *const names_deepseek_coder[] = {"deepseek-coder", NULL};
static const char *const names_deepseek3[] = {"deepseek-v3", "hunyuan-dense", NULL};
static const char *const names_falcon[] = {"falcon", NULL};
static const char *const names_starcoder[] = {"starcoder", "refact", "command-r",  "smollm",
                                              "codeshell", "exaone", "minerva-7b", NULL};
static const char *const names_gpt2[] = {
    "gpt-2",   "phi-2",  "jina-es",    "jina-de",         "gigachat",    "jina-v2-es", "jina-v2-de",
    "a.x-4.0", "mellum", "jina-v1-en", "jina-v2-code",    "roberta-bpe", "exaone4",    "mpt",
    "olmo",    "jais",   "trillion",   "granite-docling", NULL};
static const char *const names_qwen2[] = {"qwen2",     "deepseek-r1-qwen", "kormo", "megrez",
                                          "stablelm2", "hunyuan",          NULL};
static const char *const names_bloom[] = {"poro-chat", "bloom", "gpt3-finnish", NULL};
static const char *const names_viking[] = {"viking", NULL};

static const tok_pre_def tok_pre_defs[] = {
    {names_default, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL}},
    {names_llama3, {RE_LLAMA3, NULL}},
    {names_deepseek_llm,
     {"[\r\n]", RE_DEEPSEEK_LETTERS, RE_DEEPSEEK_PUNCT, "\\s+$", RE_DEEPSEEK_CJK, "\\p{N}+"}},
    {names_deepseek_coder,
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_DEEPSEEK_CJK, "\\p{N}", NULL}},
    {names_deepseek3,
     {"\\p{N}{1,3}", "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+", RE_DEEPSEEK3_MAIN, NULL}},
    {names_falcon, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL}},
    {names_starcoder, {"\\p{N}", RE_GPT2, NULL}},
    {names_gpt2, {RE_GPT2, NULL}},
    {names_qwen2, {RE_QWEN2, NULL}},
    {names_bloom, {RE_BLOOM, NULL}},
    {names_viking, {RE_BLOOM, "\\p{N}", NULL}},
};

#define TOK_N_PRE ((int)(sizeof tok_pre_defs / sizeof tok_pre_defs[0]))

int tok_pre_from_name(const char *name, size_t len)
{
    for (int p = 0; p < TOK_N_PRE; p++) {
        for (const char *const *n = tok_pre_defs[p].names; *n; n++)
            if (strlen(*n) == len && memcmp(*n, name, len) == 0) return p;
    }
    return -1;
}

size_t tok_pre_n_regex(int pre)
{
    if (pre < 0 || pre >= TOK_N_PRE) return 0;
    size_t n = 0;
    while (n < 6 && tok_pre_defs[pre].regex[n]) n++;
    return n;
}

const char *tok_pre_regex(int pre, size_t i)
{
    return i < tok_pre_n_regex(pre) ? tok_pre_defs[pre].regex[i] : NULL;
}

/* ---- llama.cpp's hand-written splitters ------------------------------------------------ */

#define SCAN_WS  0x100u      /* White_Space, on top of the category flag */
#define SCAN_OOR 0xFFFFFFFFu /* "code point" outside the piece */

/* One piece being split: positions index the whole code point array; only [ini, end) is
 * visible, as in llama.cpp's _get_cpt/_get_flags. */
typedef struct tok_scan {
    const uint32_t *cps;
    size_t ini, end, prev;
    size_t *out, n_out;
} tok_scan;

static uint32_t scan_cpt(const tok_scan *sc, size_t pos)
{
    return pos >= sc->ini && pos < sc->end ? sc->cps[pos] : SCAN_OOR;
}

static unsigned scan_flags(const tok_scan *sc, size_t pos)
{
    if (pos < sc->ini || pos >= sc->end) return 0;
    uint32_t c = sc->cps[pos];
    return tok_ucat(c) | (tok_uspace(c) ? SCAN_WS : 0);
}

static bool is_letter(unsigned f)
{
    return (f & TOK_UCAT_LETTER) != 0;
}
static bool is_number(unsigned f)
{
    return (f & TOK_UCAT_NUMBER) != 0;
}
static bool is_space(unsigned f)
{
    return (f & SCAN_WS) != 0;
}
/* [^\s\p{L}\p{N}] inside the piece (flags 0 means outside) */
static bool is_other(unsigned f)
{
    return f && !is_space(f) && !is_letter(f) && !is_number(f);
}

/* Ends the current token at `end`; returns its length (0 adds nothing). */
static size_t scan_add(tok_scan *sc, size_t end)
{
    size_t len = end - sc->prev;
    if (len > 0) sc->out[sc->n_out++] = len;
    sc->prev = end;
    return len;
}

static bool is_cr_lf(uint32_t c)
{
    return c == '\r' || c == '\n';
}

/* 's|'t|'re|'ve|'m|'ll|'d (lower-casing the letters when fold): their length at pos, or 0. */
static size_t scan_contraction(const tok_scan *sc, size_t pos, bool fold)
{
    if (scan_cpt(sc, pos) != '\'' || pos + 1 >= sc->end) return 0;
    uint32_t a = scan_cpt(sc, pos + 1);
    if (fold) a = tok_ulower(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= sc->end) return 0;
    uint32_t b = scan_cpt(sc, pos + 2);
    if (fold) b = tok_ulower(b);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* \s+(?!\S) then \s+ at pos; false when pos is not white space. */
static bool scan_spaces(tok_scan *sc, size_t *pos)
{
    size_t n_ws = 0;
    while (is_space(scan_flags(sc, *pos + n_ws))) n_ws++;
    if (n_ws > 1 && scan_cpt(sc, *pos + n_ws) != SCAN_OOR) {
        *pos += n_ws - 1; /* leave the last space to prefix the next word */
        scan_add(sc, *pos);
        return true;
    }
    if (n_ws == 0) return false;
    *pos += n_ws;
    scan_add(sc, *pos);
    return true;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void scan_gpt2(tok_scan *sc)
{
    for (size_t pos = sc->ini; pos < sc->end;) {
        uint32_t cpt = scan_cpt(sc, pos);
        unsigned flags = scan_flags(sc, pos);
        size_t k = scan_contraction(sc, pos, false);
        if (k) {
            pos += scan_add(sc, pos + k);
            continue;
        }
        unsigned f2 = cpt == ' ' ? scan_flags(sc, pos + 1) : flags;
        if (is_letter(f2) || is_number(f2) || is_other(f2)) {
            bool (*same)(unsigned) = is_letter(f2)   ? is_letter
                                     : is_number(f2) ? is_number
                                                     : is_other;
            pos += cpt == ' ';
            while (same(f2)) f2 = scan_flags(sc, ++pos);
            scan_add(sc, pos);
            continue;
        }
        if (scan_spaces(sc, &pos)) continue;
        scan_add(sc, ++pos); /* no match: one code point on its own */
    }
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+ */
static void scan_llama3(tok_scan *sc)
{
    for (size_t pos = sc->ini; pos < sc->end;) {
        uint32_t cpt = scan_cpt(sc, pos);
        unsigned flags = scan_flags(sc, pos);
        size_t k = scan_contraction(sc, pos, true);
        if (k) {
            pos += scan_add(sc, pos + k);
            continue;
        }
        if (!is_cr_lf(cpt) && !is_number(flags) &&
            (is_letter(flags) || is_letter(scan_flags(sc, pos + 1)))) {
            pos++;
            while (is_letter(scan_flags(sc, pos))) pos++;
            scan_add(sc, pos);
            continue;
        }
        if (is_number(flags)) {
            size_t ini = pos;
            while (is_number(scan_flags(sc, pos))) {
                if (++pos - ini >= 3) {
                    scan_add(sc, pos);
                    ini = pos;
                }
            }
            scan_add(sc, pos);
            continue;
        }
        unsigned f2 = cpt == ' ' ? scan_flags(sc, pos + 1) : flags;
        /* llama.cpp tests `flags`, not `f2`, for being inside the piece here */
        if (!is_space(f2) && !is_letter(f2) && !is_number(f2) && flags) {
            pos += cpt == ' ';
            while (is_other(f2)) f2 = scan_flags(sc, ++pos);
            while (is_cr_lf(scan_cpt(sc, pos))) pos++;
            scan_add(sc, pos);
            continue;
        }
        size_t n_ws = 0, last_cr_lf = 0;
        while (is_space(scan_flags(sc, pos + n_ws))) {
            if (is_cr_lf(scan_cpt(sc, pos + n_ws))) last_cr_lf = pos + n_ws + 1;
            n_ws++;
        }
        if (last_cr_lf > 0) {
            pos = last_cr_lf;
            scan_add(sc, pos);
            continue;
        }
        if (scan_spaces(sc, &pos)) continue;
        scan_add(sc, ++pos);
    }
}

/* ---- generic regexes ------------------------------------------------------------------- */

/* The text llama.cpp gives std::regex for patterns with \p{...}: ASCII kept, every other code
 * point replaced by its category's representative (white space first). */
static uint32_t tok_collapse(uint32_t c)
{
    if (c < 128) return c;
    if (tok_uspace(c)) return TOK_RE_REP_SPACE;
    switch (tok_ucat(c)) {
    case TOK_UCAT_NUMBER:
        return TOK_RE_REP_NUMBER;
    case TOK_UCAT_LETTER:
        return TOK_RE_REP_LETTER;
    case TOK_UCAT_PUNCT:
        return TOK_RE_REP_PUNCT;
    case TOK_UCAT_MARK:
        return TOK_RE_REP_MARK;
    case TOK_UCAT_SYMBOL:
        return TOK_RE_REP_SYMBOL;
    default:
        return TOK_RE_REP_OTHER;
    }
}

/* The text llama.cpp gives std::wregex: non-ASCII white space becomes \v, which \s matches. */
static uint32_t tok_widen(uint32_t c)
{
    return c > 0x7F && tok_uspace(c) ? TOK_RE_REP_SPACE : c;
}

static uint32_t *tok_make_view(const uint32_t *cps, size_t n, bool collapsed)
{
    uint32_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) v[i] = collapsed ? tok_collapse(cps[i]) : tok_widen(cps[i]);
    return v;
}

/* Splits each piece of in[] by the matches of re on view; gaps between matches are pieces.
 * An empty match only marks a boundary (none of the table's patterns can match empty). */
static mica_status tok_split_regex(const tok_regex *re, const uint32_t *view, const size_t *in,
                                   size_t n_in, size_t *out, size_t *n_out, mica_err *err)
{
    size_t start = 0, count = 0;
    for (size_t p = 0; p < n_in; p++) {
        size_t end = start + in[p], gap = start, from = start;
        while (from <= end) {
            bool found;
            size_t mb, me;
            mica_status st = tok_regex_search(re, view, start, end, from, &found, &mb, &me, err);
            if (st) return st;
            if (!found) break;
            if (mb > gap) out[count++] = mb - gap;
            if (me > mb) out[count++] = me - mb;
            gap = me;
            from = me > mb ? me : mb + 1;
        }
        if (end > gap) out[count++] = end - gap;
        start = end;
    }
    *n_out = count;
    return MICA_OK;
}

static void tok_split_custom(const char *regex, const uint32_t *cps, const size_t *in, size_t n_in,
                             size_t *out, size_t *n_out)
{
    tok_scan sc = {.cps = cps, .out = out};
    bool gpt2 = strcmp(regex, RE_GPT2) == 0;
    size_t start = 0;
    for (size_t p = 0; p < n_in; p++) {
        sc.ini = sc.prev = start;
        sc.end = start + in[p];
        if (gpt2)
            scan_gpt2(&sc);
        else
            scan_llama3(&sc);
        start = sc.end;
    }
    *n_out = sc.n_out;
}

/* llama.cpp's unicode_regex_split_custom recognizes these two exact strings. */
static bool tok_has_custom(const char *regex)
{
    return strcmp(regex, RE_GPT2) == 0 || strcmp(regex, RE_LLAMA3) == 0;
}

static mica_status tok_apply_one(const char *regex, bool allow_custom, const uint32_t *cps,
                                 size_t n, const size_t *in, size_t n_in, size_t *out,
                                 size_t *n_out, mica_err *err)
{
    if (allow_custom && tok_has_custom(regex)) {
        tok_split_custom(regex, cps, in, n_in, out, n_out);
        return MICA_OK;
    }
    tok_regex *re;
    mica_status st = tok_regex_compile(&re, regex, strlen(regex), err);
    if (st) return st;
    uint32_t *view = tok_make_view(cps, n, tok_regex_collapsed(re));
    if (!view)
        st = core_fail(err, MICA_ENOMEM, "pre-tokenizer: out of memory for %zu code points", n);
    else
        st = tok_split_regex(re, view, in, n_in, out, n_out, err);
    free(view);
    tok_regex_free(re);
    return st;
}

static mica_status tok_split_all(const char *const *regexes, size_t n_regex, bool allow_custom,
                                 const uint32_t *cps, size_t n, size_t *lens, size_t *n_pieces,
                                 mica_err *err)
{
    size_t count = n > 0;
    if (n > 0) lens[0] = n;
    size_t *tmp = n_regex > 0 ? malloc((n ? n : 1) * sizeof *tmp) : NULL;
    if (n_regex > 0 && !tmp)
        return core_fail(err, MICA_ENOMEM, "pre-tokenizer: out of memory for %zu code points", n);
    mica_status st = MICA_OK;
    for (size_t r = 0; r < n_regex && !st && count > 0; r++) {
        memcpy(tmp, lens, count * sizeof *tmp);
        st = tok_apply_one(regexes[r], allow_custom, cps, n, tmp, count, lens, &count, err);
    }
    free(tmp);
    *n_pieces = st ? 0 : count;
    return st;
}

mica_status tok_pre_split(int pre, const uint32_t *cps, size_t n, size_t *lens, size_t *n_pieces,
                          mica_err *err)
{
    if (pre < 0 || pre >= TOK_N_PRE)
        return core_fail(err, MICA_EINVAL, "pre-tokenizer: unknown id %d", pre);
    return tok_split_all(tok_pre_defs[pre].regex, tok_pre_n_regex(pre), true, cps, n, lens,
                         n_pieces, err);
}

mica_status tok_pre_split_with(const char *const *regexes, size_t n_regex, const uint32_t *cps,
                               size_t n, size_t *lens, size_t *n_pieces, mica_err *err)
{
    return tok_split_all(regexes, n_regex, false, cps, n, lens, n_pieces, err);
}
