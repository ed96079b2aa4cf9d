/*
 * tok_int.h - internals shared by the tokenizer's files: the vocabulary struct, the string
 * -> id map and the per-algorithm encoders that tok_encode dispatches raw-text fragments to.
 * Not for use outside src/tokenizer/.
 */
#ifndef MICA_TOK_INT_H
#define MICA_TOK_INT_H

#include "tokenizer.h"

typedef enum tok_kind { TOK_KIND_SPM = 1, TOK_KIND_BPE, TOK_KIND_WPM } tok_kind;

typedef struct tok_token {
    const char *text; /* NUL-terminated copy in the vocabulary's pool */
    uint32_t len;
    float score;
    int32_t type; /* enum tok_type */
} tok_token;

/* Open-addressing hash map from byte strings to int32 values. */
typedef struct tok_map {
    const char **keys;
    uint32_t *key_lens;
    int32_t *vals;
    uint64_t n_slots; /* power of two; 0 = empty map */
} tok_map;

mica_status tok_map_init(tok_map *m, uint64_t n_expected);
bool tok_map_put(tok_map *m, const char *key, uint32_t len, int32_t val); /* key not copied */
int32_t tok_map_get(const tok_map *m, const char *key, size_t len); /* -1 when absent */
void tok_map_free(tok_map *m);

struct tok_vocab {
    tok_kind kind;
    char model_name[16];
    char pre_name[64];
    int pre; /* tok_pre_from_name() of pre_name, for BPE */

    int32_t n_tokens;
    tok_token *tokens;
    char *pool; /* token texts */
    tok_map ids;    /* text -> id */
    tok_map merges; /* BPE: "left right" -> rank */
    char *merge_pool;

    int32_t bos, eos, unk, pad, sep, eot, eom, linefeed; /* -1 when absent */
    bool add_bos, add_eos, add_space_prefix;
    int32_t byte_ids[256];   /* SPM: id of <0xXX>, or -1 */
    int32_t *special;        /* control + user-defined ids, longest text first */
    size_t n_special;
};

/* Id of a token text, or -1. */
static inline int32_t tok_find(const tok_vocab *v, const char *s, size_t n)
{
    return tok_map_get(&v->ids, s, n);
}

/* Rank of the BPE merge "left right", or -1 when not a merge. */
int32_t tok_merge_rank(const tok_vocab *v, const char *l, size_t ln, const char *r, size_t rn);

/* Encoders for one raw-text fragment (no special tokens inside). They append to out. The
 * SPM encoder gets the fragment already with its space prefix and spaces escaped as U+2581. */
mica_status tok_spm_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out,
                           mica_err *err);
mica_status tok_bpe_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out,
                           mica_err *err);
mica_status tok_wpm_encode(const tok_vocab *v, const char *text, size_t n, tok_ids *out,
                           mica_err *err);

/* BPE pre-tokenizers: the id for a tokenizer.ggml.pre name (len bytes), or -1 when mica does
 * not know it. */
int tok_pre_from_name(const char *name, size_t len);

/* Byte-level BPE token text -> raw bytes (GPT-2's bytes_to_unicode inverted). Returns the
 * byte count written to out (at most len bytes). */
size_t tok_bpe_unmap(const char *text, size_t len, char *out);

#endif
