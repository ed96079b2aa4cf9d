/*
 * tok_unicode.h - the Unicode facts the tokenizer needs, defined the way llama.cpp's
 * unicode.cpp defines them (so that pre-tokenizers split text identically): one category flag
 * per code point, the White_Space set, a one-to-one lowercase mapping, the first code point of
 * the NFD decomposition, and llama.cpp's lenient UTF-8 decoding. Tables live in the generated
 * tok_unicode_data.c. Not for use outside src/tokenizer/.
 */
#ifndef MICA_TOK_UNICODE_H
#define MICA_TOK_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Category flags: exactly one per code point (llama.cpp's unicode_cpt_flags bits). */
enum tok_ucat {
    TOK_UCAT_UNDEFINED = 0x01, /* unassigned (Cn), or beyond U+10FFFF */
    TOK_UCAT_NUMBER = 0x02,    /* \p{N} */
    TOK_UCAT_LETTER = 0x04,    /* \p{L} */
    TOK_UCAT_SEPARATOR = 0x08, /* \p{Z} */
    TOK_UCAT_MARK = 0x10,      /* \p{M} (accent marks) */
    TOK_UCAT_PUNCT = 0x20,     /* \p{P} */
    TOK_UCAT_SYMBOL = 0x40,    /* \p{S} */
    TOK_UCAT_CONTROL = 0x80,   /* \p{C} except Cn: Cc, Cf, Cs, Co */
};

#define TOK_UNICODE_MAX 0x10FFFFu

unsigned tok_ucat(uint32_t cp);      /* one enum tok_ucat flag */
bool tok_uspace(uint32_t cp);        /* the White_Space property */
uint32_t tok_ulower(uint32_t cp);    /* first code point of the lowercase; cp when none */
uint32_t tok_unfd_base(uint32_t cp); /* first code point of the NFD decomposition */

/* Decodes one code point from s[0..n) (n >= 1) as llama.cpp's unicode_cpts_from_utf8 does:
 * continuation bytes are checked, overlong forms are accepted, and anything invalid or
 * truncated decodes as U+FFFD consuming one byte. Sets *len to the bytes consumed. */
uint32_t tok_utf8_decode(const char *s, size_t n, size_t *len);

/* Decodes all of s[0..n) into cps (room for n entries); returns the count. */
size_t tok_utf8_to_cps(const char *s, size_t n, uint32_t *cps);

/* ---- generated tables (tok_unicode_data.c) --------------------------------------------- */

typedef struct tok_urun {
    uint32_t first, last, stride;
    int32_t delta;
} tok_urun;

typedef struct tok_urange {
    uint32_t first, last, value;
} tok_urange;

extern const uint32_t tok_udata_cat[]; /* (first << 8) | flag, sorted by first */
extern const size_t tok_udata_n_cat;
extern const uint32_t tok_udata_space[];
extern const size_t tok_udata_n_space;
extern const tok_urun tok_udata_lower[];
extern const size_t tok_udata_n_lower;
extern const tok_urange tok_udata_nfd[];
extern const size_t tok_udata_n_nfd;

#endif
