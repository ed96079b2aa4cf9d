/*
 * grammar.h - constrained decoding: a GBNF grammar (llama.cpp's syntax) parsed into rules, a
 * matcher that follows a document byte by byte as a set of stacks of rule positions (the
 * design of llama.cpp's llama_grammar), and token masking over a byte trie of the vocabulary.
 * libc only. The public face is mica_grammar_* in mica.h (gram_api.c); the JSON-schema
 * compiler (schema_json.c) writes GBNF text for gram_parse.
 */
#ifndef MICA_GRAMMAR_H
#define MICA_GRAMMAR_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GRAM_NAME_MAX 96

/* ---- rules (gram_parse.c) ------------------------------------------------------------- */

/* One element of a rule. A character class is a run: CHAR or CHAR_NOT (the first code
 * point), then CHAR_ALT for each further code point, and CHAR_RNG after a code point that
 * starts a range (value: its inclusive upper end). A literal "ab" is two one-element classes. */
typedef enum gram_etype {
    GRAM_END,      /* end of the rule */
    GRAM_ALT,      /* the next alternative starts after it */
    GRAM_RULE,     /* value: rule index */
    GRAM_CHAR,     /* value: code point */
    GRAM_CHAR_NOT, /* value: the first code point of a negated class */
    GRAM_CHAR_RNG, /* value: upper end of the range started by the previous element */
    GRAM_CHAR_ALT, /* value: another code point of the class */
    GRAM_CHAR_ANY, /* "." */
} gram_etype;

typedef struct gram_elem {
    uint32_t type; /* gram_etype */
    uint32_t value;
} gram_elem;

typedef struct gram {
    gram_elem *elems; /* all rules back to back, each ending with GRAM_END */
    int32_t n_elems;
    int32_t n_rules, root;
    int32_t *rule_start;          /* (n_rules) first element */
    int32_t *alt_first;           /* (n_rules + 1) into alt_pos */
    int32_t *alt_pos;             /* where each alternative of each rule starts */
    char (*names)[GRAM_NAME_MAX]; /* (n_rules) */
    int32_t *after;               /* (n_elems) for a class start: the element past it */
    uint64_t (*ascii)[2];         /* (n_elems) for a class start: ASCII code points it takes */
} gram;

/* Parses GBNF text: rules `name ::= alternatives`, `|`, sequences, groups, `*` `+` `?`
 * `{m}` `{m,}` `{m,n}`, "literals", [classes] with ranges and ^, `.`, # comments. The rule
 * named "root" is the document. Rejects undefined rules, left recursion, and rules that can
 * never finish (recursion without a way out); bad_rule (when not NULL) then receives the
 * name of the rule at fault ("" for other errors). MICA_EINVAL with "grammar: line N: ...". */
mica_status gram_parse(gram **out, const char *text, size_t len, char bad_rule[GRAM_NAME_MAX],
                       mica_err *err);
void gram_free(gram *g);

/* Whether the class starting at element p matches code point c. */
bool gram_class_match(const gram *g, int32_t p, uint32_t c);

/* ---- stacks and the matcher (gram_match.c) -------------------------------------------- */

/* A set of stacks: records [n, pos_0 .. pos_{n-1}] (bottom first) in one array. Each top
 * is a class start; an empty stack means the document may end here. */
typedef struct gram_stacks {
    uint32_t *w;
    size_t n_w, cap_w;
    uint32_t *off;  /* (n) where each record starts in w */
    uint64_t *hash; /* (n) of each record, to find duplicates quickly */
    int32_t n, cap;
    int32_t n_empty; /* empty stacks held (0 or 1: duplicates are dropped) */
} gram_stacks;

/* Where a multi-byte UTF-8 character stands when a token ends inside it. */
typedef struct gram_utf8 {
    uint32_t value;  /* the bits so far */
    uint8_t n_left;  /* continuation bytes still due; 0: between characters */
    uint8_t n_total; /* length of the character */
} gram_utf8;

/* Scratch space for advancing stacks: the expansion's work list, records [pos..., n]. */
typedef struct gram_work {
    uint32_t *todo;
    size_t n_todo, cap_todo;
    uint32_t *tmp; /* the record being expanded */
    size_t cap_tmp;
} gram_work;

typedef struct gram_state {
    const gram *g;
    gram_stacks stacks;
    gram_utf8 partial;
    gram_stacks spare[2]; /* what gram_state_accept steps through */
    gram_work work;
} gram_state;

void gram_stacks_free(gram_stacks *s);
void gram_work_free(gram_work *w);

/* The state at the start of the document. MICA_ENOMEM when a cap is reached. */
mica_status gram_state_init(gram_state *st, const gram *g, mica_err *err);
void gram_state_free(gram_state *st);
/* Follows bytes; MICA_EINVAL (state unchanged) when the grammar cannot take them. */
mica_status gram_state_accept(gram_state *st, const char *bytes, size_t n, mica_err *err);
/* The document may end here. */
bool gram_state_can_end(const gram_state *st);
/* The document is complete and nothing may follow it. */
bool gram_state_done(const gram_state *st);

/* One byte from (stacks, partial) into (out, *out_partial): MICA_OK (out may be empty when
 * the byte is not allowed), or MICA_ENOMEM at a cap. */
mica_status gram_step_byte(const gram *g, const gram_stacks *in, gram_utf8 partial, uint8_t b,
                           gram_stacks *out, gram_utf8 *out_partial, gram_work *w);
bool gram_stacks_copy(gram_stacks *dst, const gram_stacks *src);

/* ---- token masks (gram_vocab.c) ------------------------------------------------------- */

/* A byte trie of the vocabulary's token pieces, in preorder. End-of-generation tokens and
 * tokens with empty pieces are not in it: they are never allowed as text. */
typedef struct gram_vocab gram_vocab;

/* pieces[i], lens[i]: the bytes of token i; eog[i]: an end-of-generation token. */
mica_status gram_vocab_new(gram_vocab **out, int32_t n_tokens, const char *const *pieces,
                           const size_t *lens, const bool *eog, mica_err *err);
void gram_vocab_free(gram_vocab *v);
int32_t gram_vocab_n_tokens(const gram_vocab *v);
bool gram_vocab_is_eog(const gram_vocab *v, int32_t t);

/* Masks: one bit per token (allowed), computed by walking the trie once with the state's
 * stacks and kept in a small cache keyed by the state, since documents revisit states (the
 * inside of a string, between array items). */
typedef struct gram_masker gram_masker;

mica_status gram_masker_new(gram_masker **out, const gram_vocab *v, mica_err *err);
void gram_masker_free(gram_masker *m);
/* *bits (valid until the next call): bit t set = token t may come next, EOG tokens included
 * exactly when the document may end. */
mica_status gram_masker_mask(gram_masker *m, const gram_state *st, const uint64_t **bits,
                             mica_err *err);

#endif
