/*
 * tok_pre.h - BPE pre-tokenizers: the regex lists llama.cpp applies for each
 * tokenizer.ggml.pre name, and the split of a text into pre-tokens. The id that
 * tok_pre_from_name (tok_int.h) returns indexes these lists. Not for use outside
 * src/tokenizer/.
 */
#ifndef MICA_TOK_PRE_H
#define MICA_TOK_PRE_H

#include "core/core.h"

#include <stddef.h>
#include <stdint.h>

/* Number of regexes of pre-tokenizer `pre` (0 for an unknown id) and the i-th one. */
size_t tok_pre_n_regex(int pre);
const char *tok_pre_regex(int pre, size_t i);

/* Splits cps[0..n) into pre-tokens the way llama.cpp's unicode_regex_split does: each regex
 * splits every piece the previous one produced, and the stretches between matches stay
 * pieces of their own. Writes the pieces' lengths in code points to lens (room for n
 * entries; pieces are never empty) and their count to *n_pieces. */
mica_status tok_pre_split(int pre, const uint32_t *cps, size_t n, size_t *lens, size_t *n_pieces,
                          mica_err *err);

/* The same with an explicit regex list, always run on the regex engine (never on the
 * hand-written GPT-2/Llama-3 splitters), so tests can compare the two. */
mica_status tok_pre_split_with(const char *const *regexes, size_t n_regex, const uint32_t *cps,
                               size_t n, size_t *lens, size_t *n_pieces, mica_err *err);

#endif
