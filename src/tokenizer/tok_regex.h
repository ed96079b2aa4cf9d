/*
 * tok_regex.h - a small backtracking regex engine over code points, for the pre-tokenizer
 * patterns llama.cpp hands to std::regex / std::wregex. ECMAScript semantics (leftmost-first
 * alternation, greedy or lazy quantifiers with backtracking). Supported: literals, '.', '^',
 * '$', classes with ranges and negation, \s \S \d \D \w \W \r \n \t \v \f \xHH \uHHHH,
 * \p{N} \p{L} \p{P} \p{S} \p{M} (and \p{Lu} ... \p{Lo} as \p{L}), (...), (?:...), (?=...),
 * (?!...), |, ?, *, +, {m}, {m,}, {m,n}. Not for use outside src/tokenizer/.
 *
 * \p{X} has llama.cpp's "collapsed" meaning, not the Unicode one: a pattern that uses it runs on
 * text where every non-ASCII code point was replaced by one representative per category
 * (tok_pre.c builds that view), and \p{X} matches that representative plus the ASCII
 * characters llama.cpp lists for X (its \p{S} omits '~'). \s matches ASCII white space only,
 * as std::regex does in the "C" locale; llama.cpp maps other white space to \v beforehand.
 */
#ifndef MICA_TOK_REGEX_H
#define MICA_TOK_REGEX_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Representatives of the collapsed view (llama.cpp's choice of bytes). */
enum {
    TOK_RE_REP_OTHER = 0xD0,
    TOK_RE_REP_NUMBER = 0xD1,
    TOK_RE_REP_LETTER = 0xD2,
    TOK_RE_REP_PUNCT = 0xD3,
    TOK_RE_REP_MARK = 0xD4,
    TOK_RE_REP_SYMBOL = 0xD5,
    TOK_RE_REP_SPACE = 0x0B, /* vertical tab: matched by \s */
};

typedef struct tok_regex tok_regex;

/* Compiles pattern[0..len) (UTF-8). Unsupported syntax gives MICA_EUNSUPPORTED naming the
 * offset; patterns whose compiled form would pass the instruction cap give MICA_ENOMEM. */
mica_status tok_regex_compile(tok_regex **out, const char *pattern, size_t len, mica_err *err);
void tok_regex_free(tok_regex *re);

/* Whether the pattern uses \p{...} and so must run on the collapsed view. */
bool tok_regex_collapsed(const tok_regex *re);

/* Finds the leftmost match starting at or after `from` in the subject s[begin..end): '^', '$'
 * and lookaheads see only the subject. On a match sets *found and [*mb, *me). Fails with
 * MICA_ERANGE when backtracking passes its step budget, MICA_ENOMEM when its stack cannot
 * grow. */
mica_status tok_regex_search(const tok_regex *re, const uint32_t *s, size_t begin, size_t end,
                             size_t from, bool *found, size_t *mb, size_t *me, mica_err *err);

#endif
