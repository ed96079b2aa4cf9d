/*
 * engine.h - what the public API's handles are made of. The engine owns sequences, the KV
 * cache memory, the thread pool and sampling; model/ does the arithmetic. Internal to
 * libmica (the CLI and tests may look inside through this header).
 */
#ifndef MICA_ENGINE_H
#define MICA_ENGINE_H

#include "mica.h"
#include "model/model.h"

struct mica_model {
    model *m;
};

struct mica_context {
    mica_model *model;
    model_work *work;
    tensor_pool *pool;
    model_kv kv;
    int32_t *seq_len;       /* (n_seq) positions held per sequence */
    int32_t n_batch;        /* tokens per forward pass; longer inputs are split */
    model_batch_tok *batch; /* (n_batch) */
};

#endif
