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
    int32_t type;  /* enum tok_type */
    uint32_t attr; /* enum tok_attr bits, derived by tok_load */
} tok_token;

/* Token attributes: llama.cpp's llama_token_attr bits, derived from token_type at load and then
 * adjusted the way llama.cpp adjusts them (control-looking texts become CONTROL, per-model
 * LSTRIP/RSTRIP). */
enum tok_attr {
    TOK_ATTR_UNKNOWN = 1u << 0,
    TOK_ATTR_UNUSED = 1u << 1,
    TOK_ATTR_NORMAL = 1u << 2,
    TOK_ATTR_CONTROL = 1u << 3,
    TOK_ATTR_USER_DEFINED = 1u << 4,
    TOK_ATTR_BYTE = 1u << 5,
    TOK_ATTR_LSTRIP = 1u << 7, /* special-token match eats whitespace to its left */
    TOK_ATTR_RSTRIP = 1u << 8, /* ... and to its right */
};

/* Open-addressing hash map from byte strings to int32 values. */
typedef struct tok_map {
    const char **keys;
    uint32_t *key_lens;
    int32_t *vals;
    uint64_t n_slots; /* power of two; 0 = empty map */
} tok_map;

mica_status tok_map_init(tok_map *m, uint64_t n_expected);
/* key not copied; false when the key is already there (the first value stays) or full */
bool tok_map_put(tok_map *m, const char *key, uint32_t len, int32_t val);
int32_t tok_map_get(const tok_map *m, const char *key, size_t len); /* -1 when absent */
void tok_map_free(tok_map *m);

/* Bound of the EOG set: llama.cpp's EOG texts, FIM pad/rep/sep and eos/eot/eom are fewer. */
#define TOK_MAX_EOG 40

struct tok_vocab {
    tok_kind kind;
    char model_name[16];
    char pre_name[64];
    int pre; /* tok_pre_from_name() of pre_name, for BPE */

    int32_t n_tokens;
    tok_token *tokens;
    char *pool;     /* token texts */
    tok_map ids;    /* text -> id */
    tok_map merges; /* BPE: "left right" -> rank */
    char *merge_pool;

    int32_t bos, eos, unk, pad, sep, eot, eom, linefeed; /* -1 when absent */
    bool add_bos, add_eos, add_space_prefix;
    int32_t byte_ids[256]; /* SPM: id of <0xXX>, or -1 */
    int32_t *special;      /* control + user-defined (+ unknown) ids, longest text first */
    size_t n_special;

    /* Added by tok_vocab.c: further llama.cpp vocabulary settings. */
    int32_t mask, fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep; /* -1 when absent */
    bool add_sep;             /* tokenizer.ggml.add_sep_token (WPM default true) */
    bool ignore_merges;       /* BPE: a pre-token that is a whole vocab entry skips merging */
    bool norm_lowercase;      /* WPM: tokenizer.ggml.normalizer.lowercase (default true) */
    bool norm_strip_accents;  /* WPM: ...normalizer.strip_accents (default = lowercase) */
    uint32_t max_token_len;   /* longest token text in bytes */
    int32_t eog[TOK_MAX_EOG]; /* end-of-generation ids (llama.cpp's special_eog_ids) */
    size_t n_eog;
};

/* Id of a token text, or -1. */
static inline int32_t tok_find(const tok_vocab *v, const char *s, size_t n)
{
    return tok_map_get(&v->ids, s, n);
}

/* tok_rules.c: llama.cpp's name- and text-based vocabulary adjustments, run by tok_load once
 * the tokens and special ids are loaded: EOT/EOM/FIM detection, the EOG set, control-looking
 * tokens, the special-token list, per-model LSTRIP/RSTRIP. */
mica_status tok_apply_rules(tok_vocab *v, const gguf_file *f, mica_err *err);

/* Rank of the BPE merge "left right", or -1 when not a merge. */
int32_t tok_merge_rank(const tok_vocab *v, const char *l, size_t ln, const char *r, size_t rn);

/* tok_ids_push that reports a reached cap as MICA_ENOMEM naming the cap (tok_encode.c). */
mica_status tok_emit(tok_ids *out, int32_t id, mica_err *err);

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
