/*
 * sched.h - continuous batching: many generation requests share one context of n_slots
 * running sequences. Each step admits waiting requests by effective priority (priority +
 * aging, so nobody waits forever), may pause the lowest-priority running sequence for a more
 * important waiting one (preemption: its KV rows are kept when a spare row exists, else the
 * sequence is recomputed when it resumes), then runs ONE batched forward pass holding one new
 * token for every sequence that is generating plus chunks of prompts being processed, samples,
 * and reports each token through the request's callback.
 *
 * The gateway (src/server) drives it from its own thread with eng_sched_start; tests call
 * eng_sched_step directly. Callbacks run on the stepping thread and must be quick; they may
 * call eng_req_cancel but not eng_sched_submit.
 */
#ifndef MICA_ENGINE_SCHED_H
#define MICA_ENGINE_SCHED_H

#include "mica.h"

#include <stdbool.h>
#include <stdint.h>

#define ENG_MAX_PRIORITY     15 /* priorities are 0 (least urgent) .. ENG_MAX_PRIORITY */
#define ENG_MAX_TOP_LOGPROBS 20
#define ENG_MAX_LORAS        8 /* adapters per request (mica_context_set_loras' limit) */

typedef struct eng_sched eng_sched;
typedef struct eng_req eng_req;

typedef enum eng_finish {
    ENG_FINISH_NONE,      /* still running (token events) */
    ENG_FINISH_LENGTH,    /* max_tokens reached or the context is full */
    ENG_FINISH_STOP,      /* an end-of-generation token or a stop string */
    ENG_FINISH_CANCELLED, /* eng_req_cancel */
    ENG_FINISH_ERROR,     /* see eng_event.error */
} eng_finish;

typedef struct eng_logprob {
    mica_token token;
    float logprob;
} eng_logprob;

/* What a request's callback receives: one event per generated token, then one final event
 * (done = true) that may carry the last held-back text. Pointers are valid during the call. */
typedef struct eng_event {
    bool done;
    mica_token token; /* -1 in the final event */
    const char *text; /* text that can be sent now: valid UTF-8, possibly empty */
    size_t text_len;
    float logprob; /* log-probability of token under the model (when logprobs were asked) */
    const eng_logprob *top; /* the n_top most likely tokens, most likely first */
    int32_t n_top;
    eng_finish finish;
    const char *error;
    int32_t n_prompt, n_gen;
    double t_submit, t_admit, t_first; /* core_now() clock; t_first 0 before the first token */
    int32_t n_preempted;               /* times this request was paused for another */
} eng_event;

typedef void (*eng_event_fn)(void *ud, const eng_event *ev);

typedef struct eng_req_params {
    const mica_token *prompt; /* copied at submit */
    int32_t n_prompt;
    int32_t max_tokens; /* < 0: until the context is full */
    mica_sampler_params sampling;
    const mica_token *bias_tokens; /* logit_bias: added to these tokens' logits; copied */
    const float *bias_values;
    int32_t n_bias;
    const char *const *stops; /* stop strings (copied), at most 8 */
    int32_t n_stops;
    bool ignore_eos;     /* keep generating past end-of-generation tokens */
    const char *grammar; /* GBNF the output must follow (mica_grammar_new), NULL: none; the
                            request ends when the document is complete */
    size_t grammar_len;
    mica_lora *const *loras; /* LoRA adapters of this request's sequence (copied; the adapters
                                themselves must outlive it), at most ENG_MAX_LORAS */
    const float *lora_scales;
    int32_t n_loras;
    bool logprobs;        /* fill eng_event.logprob */
    int32_t top_logprobs; /* 0 .. ENG_MAX_TOP_LOGPROBS alternatives per token */
    int priority;         /* 0 .. ENG_MAX_PRIORITY, higher goes first */
    eng_event_fn on_event;
    void *ud;
} eng_req_params;

typedef struct eng_sched_params {
    int32_t n_slots;     /* sequences generating at once */
    int32_t n_spare;     /* extra KV rows that keep paused sequences' caches */
    int32_t n_ctx;       /* positions per sequence (prompt + generated) */
    int32_t n_batch;     /* tokens per step: one per generating sequence + prompt chunks */
    int32_t n_threads;   /* 0: all CPUs */
    int32_t max_waiting; /* requests waiting per priority before submit refuses (MICA_EBUSY) */
    bool preempt;
    double aging_per_s; /* priority levels a waiting request gains per second */
} eng_sched_params;

eng_sched_params eng_sched_default_params(void);

mica_status eng_sched_new(eng_sched **out, mica_model *m, const eng_sched_params *p, mica_err *err);
/* Stops the thread, finishes every request as cancelled (their callbacks run), frees. */
void eng_sched_free(eng_sched *s);

/* Queues a request. On success *out holds a reference the caller gives back with
 * eng_req_release (after which the callback may still run until the final event).
 * Errors: MICA_EINVAL (bad parameters), MICA_ERANGE (prompt + max_tokens do not fit the
 * context: the message gives the lengths), MICA_EBUSY (this priority's queue is full). */
mica_status eng_sched_submit(eng_sched *s, const eng_req_params *p, eng_req **out, mica_err *err);
/* Asks the request to stop; it finishes (ENG_FINISH_CANCELLED) within one step. */
void eng_req_cancel(eng_req *r);
void eng_req_release(eng_req *r);

/* Runs one step; false when there was nothing to do. Not while the thread runs. */
bool eng_sched_step(eng_sched *s);
/* Steps on a thread of its own while there is work; stopped by eng_sched_free. */
mica_status eng_sched_start(eng_sched *s, mica_err *err);

typedef struct eng_sched_stats {
    int32_t n_slots, n_running, n_waiting, n_paused_with_kv;
    int32_t running[ENG_MAX_PRIORITY + 1], waiting[ENG_MAX_PRIORITY + 1]; /* by priority */
    int64_t kv_used, kv_total; /* positions held in the KV cache, and its size */
    uint64_t n_steps, n_preemptions;
} eng_sched_stats;

void eng_sched_stats_get(eng_sched *s, eng_sched_stats *out);
mica_model *eng_sched_model(const eng_sched *s);
/* The context the steps run in (its MoE routing statistics, for metrics). */
const mica_context *eng_sched_context(const eng_sched *s);

#endif
