/*
 * tokenizer.h - text <-> token ids for the vocabularies GGUF files carry:
 * SentencePiece-style (`llama`: scores, byte fallback, space prefix), byte-level BPE
 * (`gpt2`, with the pre-tokenizer named by tokenizer.ggml.pre) and WordPiece (`bert`).
 * Matches llama.cpp's llama_tokenize / llama_token_to_piece on the same vocabulary.
 * Reads the tokenizer.* keys of a gguf_file; knows nothing of tensors or models. Also trains
 * byte-level BPE vocabularies for mica's own models (tok_train).
 */
#ifndef MICA_TOKENIZER_H
#define MICA_TOKENIZER_H

#include "core/core.h"
#include "gguf/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tok_vocab tok_vocab;

/* A growable list of token ids with a hard cap (max ids). */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap, max;
} tok_ids;

void tok_ids_init(tok_ids *ids, size_t max);
bool tok_ids_push(tok_ids *ids, int32_t id); /* false when the cap is reached or OOM */
void tok_ids_free(tok_ids *ids);

/* Token types (tokenizer.ggml.token_type, llama.cpp's numbering). */
enum tok_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/* Loads the vocabulary of f (path is used in messages). Errors name the key at fault:
 * "PATH: tokenizer.ggml.tokens: missing", "... unsupported tokenizer model 'x'", ... */
mica_status tok_load(tok_vocab **out, const gguf_file *f, mica_err *err);
void tok_free(tok_vocab *v);

/* Tokenizes text[0..len) (any bytes). add_special: BOS/EOS as the vocabulary's
 * add_bos_token/add_eos_token say; parse_special: control/user-defined token text in the
 * input becomes that token. Appends to out. */
mica_status tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_special,
                       bool parse_special, tok_ids *out, mica_err *err);

/* llama_token_to_piece(id, lstrip = 0, special): the bytes of one token. Control tokens
 * render only when `special`. Returns the length of the piece, writing min(len, cap) bytes.
 * Invalid ids give 0. */
size_t tok_piece(const tok_vocab *v, int32_t id, bool special, char *buf, size_t cap);

int32_t tok_n_vocab(const tok_vocab *v);
int32_t tok_bos(const tok_vocab *v); /* -1 when absent */
int32_t tok_eos(const tok_vocab *v);
bool tok_add_bos(const tok_vocab *v);
bool tok_add_eos(const tok_vocab *v);
bool tok_is_eog(const tok_vocab *v, int32_t id); /* EOS, EOT, EOM (end of generation) */
bool tok_is_control(const tok_vocab *v, int32_t id);
const char *tok_model_name(const tok_vocab *v); /* "llama", "gpt2", "bert" */
const char *tok_pre_name(const tok_vocab *v);   /* tokenizer.ggml.pre or "default" */

/* ---- training a byte-level BPE vocabulary (tok_train.c) ------------------------------- */

/* Progress of a long step: done of total units (the CLI's progress line has this shape). */
typedef void (*tok_progress_fn)(void *ctx, const char *what, const char *item, int64_t done,
                                int64_t total);

/* <|endoftext|> (BOS, EOS, padding), <|im_start|>, <|im_end|> (EOT): control tokens. */
#define TOK_TRAIN_N_SPECIAL 3
/* Qwen2's split: digits one by one (numbers are copied digit by digit), runs of letters (CJK
 * included) with one leading punctuation or space, and ChatML vocabularies use it. */
#define TOK_TRAIN_DEFAULT_PRE "qwen2"

typedef struct tok_train_params {
    int32_t n_vocab; /* 256 byte symbols + merges + TOK_TRAIN_N_SPECIAL (259 .. 1 << 20) */
    const char *pre; /* tokenizer.ggml.pre whose split is learnt and used; NULL = the default */
    tok_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} tok_train_params;

typedef struct tok_train_stats {
    int32_t n_vocab;   /* below the wanted size when the corpus ran out of pairs */
    int32_t n_merges;  /* tokenizer.ggml.merges entries */
    uint64_t n_words;  /* distinct pre-tokens */
    uint64_t n_bytes;  /* of the corpus */
    uint64_t n_tokens; /* the corpus in tokens of the new vocabulary (without BOS/EOS) */
} tok_train_stats;

/* Trains a GPT-2-style byte-level BPE vocabulary on text[0..len) and adds its tokenizer.*
 * keys (model "gpt2", pre, tokens, token_type, merges, special ids) to w, ready for tok_load.
 * Deterministic: the same text and parameters give the same keys. stats may be NULL. */
mica_status tok_train(const tok_train_params *p, const char *text, size_t len, gguf_writer *w,
                      tok_train_stats *stats, mica_err *err);

#endif
