/*
 * mica.h - the public C API of libmica.
 *
 * What another program links against: load a GGUF model, tokenize, evaluate batches of
 * tokens into logits, sample. Every function that can fail returns a mica_status (0 = ok)
 * and, when given a mica_err, fills it with a one-line message that names the file, key,
 * tensor or offset at fault. The library never exits the process and never prints.
 */
#ifndef MICA_H
#define MICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mica_status {
    MICA_OK = 0,
    MICA_EIO,          /* a file could not be opened, read, mapped or written */
    MICA_EFORMAT,      /* the bytes are not what the format says they must be */
    MICA_EUNSUPPORTED, /* valid, but not something mica implements (arch, tensor type) */
    MICA_ENOMEM,       /* an allocation failed or a cap was reached */
    MICA_EINVAL,       /* a caller passed an argument outside its domain */
    MICA_ERANGE,       /* a value (position, token id, count) is out of range */
    MICA_EBUSY,        /* a queue or pool is full; try again later */
} mica_status;

#define MICA_ERR_MSG_MAX 512

typedef struct mica_err {
    mica_status status;
    char msg[MICA_ERR_MSG_MAX]; /* "FILE: what is wrong (key/tensor, offset)" */
} mica_err;

/* A short English name of a status ("format error", ...). */
const char *mica_status_str(mica_status s);

/* ---- models -------------------------------------------------------------------------- */

typedef struct mica_model mica_model;
typedef int32_t mica_token;

/* Maps a GGUF file and binds its tensors; the weights stay in the mapping. */
mica_status mica_model_load(mica_model **out, const char *path, mica_err *err);
void mica_model_free(mica_model *m);

int32_t mica_model_n_vocab(const mica_model *m);
int32_t mica_model_n_ctx_train(const mica_model *m);
int32_t mica_model_n_embd(const mica_model *m);
int32_t mica_model_n_layer(const mica_model *m);
int32_t mica_model_n_expert(const mica_model *m);      /* routed experts per layer; 0: dense */
int32_t mica_model_n_expert_used(const mica_model *m); /* experts each token is sent to */
const char *mica_model_arch(const mica_model *m);
mica_token mica_model_bos(const mica_model *m); /* -1 when the model has none */
mica_token mica_model_eos(const mica_model *m);
bool mica_model_is_eog(const mica_model *m, mica_token t); /* end of generation */
/* A string from the model's metadata (e.g. "tokenizer.chat_template"): copies at most cap-1
 * bytes and a NUL; returns the full length, or -1 when the key is absent or not a string. */
int64_t mica_model_meta_str(const mica_model *m, const char *key, char *buf, size_t cap);

/* ---- tokens -------------------------------------------------------------------------- */

/* Tokenizes text[0..len). add_special: BOS/EOS as the model's metadata says; parse_special:
 * text such as "<s>" becomes the special token rather than plain text. Writes at most cap
 * ids; *n_out receives the number needed (so a too-small buffer gives MICA_ERANGE and the
 * size to retry with). Never more than 3 * len + 16 ids (byte fallback spends three on a
 * space). */
mica_status mica_tokenize(const mica_model *m, const char *text, size_t len, bool add_special,
                          bool parse_special, mica_token *ids, size_t cap, size_t *n_out,
                          mica_err *err);

/* The text of one token as llama_token_to_piece writes it (special tokens render only when
 * `special`). Returns the number of bytes the piece needs; writes min(that, cap) bytes. */
size_t mica_token_to_piece(const mica_model *m, mica_token t, bool special, char *buf, size_t cap);

/* ---- evaluation ---------------------------------------------------------------------- */

typedef struct mica_context mica_context;

typedef struct mica_context_params {
    int32_t n_ctx;     /* positions per sequence; 0 = the model's training context */
    int32_t n_seq;     /* sequences sharing the context (each has its own KV rows); 0 = 1 */
    int32_t n_threads; /* 0 = number of online CPUs */
} mica_context_params;

mica_context_params mica_context_default_params(void);
mica_status mica_context_new(mica_context **out, mica_model *m, mica_context_params p,
                             mica_err *err);
void mica_context_free(mica_context *c);

/* Evaluates n tokens of sequence `seq` at positions pos0, pos0+1, ... in one batched pass,
 * appending them to that sequence's KV cache (earlier positions must already be there).
 * When all_logits is true, logits receives n rows of n_vocab floats, else only the last
 * row. */
mica_status mica_decode(mica_context *c, int32_t seq, const mica_token *tokens, int32_t n,
                        int32_t pos0, bool all_logits, float *logits, mica_err *err);

/* One token of a batch that may mix sequences (continuous batching): its id, sequence and
 * position, and whether its row of logits is wanted. */
typedef struct mica_batch_token {
    mica_token token;
    int32_t seq;
    int32_t pos;
    bool logits;
} mica_batch_token;

/* Evaluates n tokens of any sequences in one batched pass (split into passes of the
 * context's batch size when longer). Within a sequence positions must be consecutive and
 * continue what its cache holds (a position at or before its length first forgets what
 * followed). logits receives one row of n_vocab floats per token with .logits set, in
 * batch order. On error nothing of the batch is kept in any sequence. */
mica_status mica_decode_multi(mica_context *c, const mica_batch_token *tokens, int32_t n,
                              float *logits, mica_err *err);

/* An embedding of tokens[0..n): the mean of their final hidden states (after the output
 * norm), L2-normalised — llama.cpp's mean pooling. Runs in sequence `seq` of the context,
 * which is empty afterwards. out receives mica_model_n_embd floats. */
mica_status mica_embed(mica_context *c, int32_t seq, const mica_token *tokens, int32_t n,
                       float *out, mica_err *err);

/* Positions sequence `seq` holds (0 for an unknown sequence). */
int32_t mica_seq_len(const mica_context *c, int32_t seq);
int32_t mica_context_n_seq(const mica_context *c);
int32_t mica_context_n_ctx(const mica_context *c); /* positions per sequence */

/* Forgets sequence `seq` from position `from` on (0 clears it). */
void mica_seq_truncate(mica_context *c, int32_t seq, int32_t from);

/* ---- LoRA adapters ------------------------------------------------------------------- */

/* An adapter in llama.cpp's GGUF LoRA format (docs/lora.md), checked against the model it
 * adapts: architecture, tensor names, shapes, rank. It must be freed before that model and
 * must not be freed while a context still applies it. */
typedef struct mica_lora mica_lora;

mica_status mica_lora_load(mica_lora **out, mica_model *m, const char *path, mica_err *err);
void mica_lora_free(mica_lora *a);
float mica_lora_alpha(const mica_lora *a); /* adapter.lora.alpha; 0 when absent */

/* From the next decode on, sequence `seq` (-1: every sequence of the context) applies
 * loras[0..n) with scales[0..n) (n = 0: none), as llama.cpp does: each adapted projection
 * gets scale * alpha / rank * B (A x) added (scale alone when alpha is 0; scale 0 leaves the
 * adapter out). Sequences with different adapters may share a batch (mica_decode_multi).
 * What the sequence's KV cache already holds is not recomputed. At most 8 adapters per
 * sequence and 32 distinct ones per context; an error changes nothing. */
mica_status mica_context_set_loras(mica_context *c, int32_t seq, mica_lora *const *loras,
                                   const float *scales, int32_t n, mica_err *err);

/* ---- Mixture-of-Experts routing statistics ------------------------------------------ */

/* What the router of one layer did with one expert since the context was made or its
 * statistics were last reset: how many tokens it sent there, and the mean gate weight those
 * tokens gave the expert's output (after renormalisation where the architecture does it). */
typedef struct mica_expert_stat {
    uint64_t n_tokens;
    double mean_weight; /* 0 when n_tokens is 0 */
} mica_expert_stat;

/* MICA_ERANGE for a layer or expert out of range (any expert of a dense model). */
mica_status mica_context_expert_stat(const mica_context *c, int32_t layer, int32_t expert,
                                     mica_expert_stat *out, mica_err *err);
void mica_context_reset_expert_stats(mica_context *c);

/* ---- sampling ------------------------------------------------------------------------ */

typedef struct mica_sampler_params {
    float temperature;    /* <= 0: greedy */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off; divides positive logits of recent tokens */
    float frequency_penalty;
    float presence_penalty;
    int32_t penalty_last_n; /* how many recent tokens the penalties look at */
    uint64_t seed;
} mica_sampler_params;

typedef struct mica_sampler mica_sampler;

mica_sampler_params mica_sampler_default_params(void);
mica_status mica_sampler_new(mica_sampler **out, mica_sampler_params p, int32_t n_vocab,
                             mica_err *err);
void mica_sampler_free(mica_sampler *s);
/* Picks a token from one row of logits (which it may modify) and remembers it for the
 * penalties. */
mica_token mica_sampler_sample(mica_sampler *s, float *logits);
/* Tells the sampler about a token it did not pick (a prompt token), for the penalties. */
void mica_sampler_accept(mica_sampler *s, mica_token t);

/* ---- structured output ----------------------------------------------------------------- */

/* A grammar that constrains what one sequence may generate (llama.cpp's GBNF syntax; the rule
 * "root" is the whole document). The first grammar of a model builds a byte trie of its
 * vocabulary, kept with the model. MICA_EINVAL with "grammar: line N: ..." for bad text. */
typedef struct mica_grammar mica_grammar;

mica_status mica_grammar_new(mica_grammar **out, mica_model *m, const char *gbnf, size_t len,
                             mica_err *err);
void mica_grammar_free(mica_grammar *g);
/* Sets the logits of tokens that cannot continue the document to -infinity (end-of-generation
 * tokens stay only where the document may end). MICA_EINVAL when no token can continue it. */
mica_status mica_grammar_apply(mica_grammar *g, float *logits, mica_err *err);
/* Moves past token t (an end-of-generation token changes nothing); MICA_EINVAL when the
 * grammar does not allow t here. */
mica_status mica_grammar_accept(mica_grammar *g, mica_token t, mica_err *err);
/* The document is complete and nothing but an end-of-generation token may follow. */
bool mica_grammar_done(const mica_grammar *g);

#ifdef __cplusplus
}
#endif

#endif
