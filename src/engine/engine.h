/*
 * engine.h - what the public API's handles are made of. The engine owns sequences, the KV
 * cache memory, the thread pool and sampling; model/ does the arithmetic. Internal to
 * libmica (the CLI and tests may look inside through this header).
 */
#ifndef MICA_ENGINE_H
#define MICA_ENGINE_H

#include "mica.h"
#include "model/lora.h"
#include "model/model.h"

#include <pthread.h>

struct mica_model {
    model *m;
    struct gram_vocab *gram_vocab; /* the vocabulary's byte trie, built by the first grammar */
    pthread_mutex_t gram_mu;
};

struct mica_lora {
    lora_adapter *a;
};

struct mica_context {
    mica_model *model;
    model_work *work;
    tensor_pool *pool;
    model_kv kv;
    int32_t *seq_len;       /* (n_seq) positions held per sequence */
    int32_t *next_pos;      /* (n_seq) scratch of mica_decode_multi's checks */
    int32_t n_batch;        /* tokens per forward pass; longer inputs are split */
    model_batch_tok *batch; /* (n_batch) */
    lora_work *lora;        /* which adapters each sequence applies */
};

/* ---- generated text (text.c) ---------------------------------------------------------- */

#define ENG_MAX_STOPS    8
#define ENG_MAX_STOP_LEN 128

/* Text of one generation that is not yet safe to send, and the stop strings it watches. */
typedef struct eng_text {
    core_buf pending;
    char stops[ENG_MAX_STOPS][ENG_MAX_STOP_LEN + 1];
    int32_t n_stops;
} eng_text;

typedef enum eng_text_result {
    ENG_TEXT_OK,   /* the safe part was appended to out */
    ENG_TEXT_STOP, /* a stop string was found: out got the text before it; generation ends */
    ENG_TEXT_FULL, /* a buffer cap was reached */
} eng_text_result;

/* Empty stop strings are ignored; max_len caps the text held back. */
mica_status eng_text_init(eng_text *t, const char *const *stops, int32_t n_stops, size_t max_len,
                          mica_err *err);
void eng_text_free(eng_text *t);
/* Adds a token's piece; appends to out what can be sent now (valid UTF-8). */
eng_text_result eng_text_push(eng_text *t, const char *piece, size_t len, core_buf *out);
/* At the end of generation: appends whatever was held back (invalid bytes as U+FFFD). */
bool eng_text_flush(eng_text *t, core_buf *out);

#endif
