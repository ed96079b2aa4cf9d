/*
 * sched.c - continuous batching (see sched.h for the contract). A request's tokens are its
 * prompt followed by what it generated; its KV row holds the first n_past of them. Every
 * step feeds each running request the tokens it has not fed yet — exactly one for a request
 * that is generating, a chunk of its prompt for one that is not — in one mica_decode_multi
 * call, then samples for the requests whose last token was fed.
 *
 * Locking: s->mu guards the waiting list, the counters and the request states that submit,
 * cancel and stats look at. The stepping thread holds it while it admits and finishes
 * requests, never during the forward pass or a callback.
 */
#include "sched.h"
#include "engine.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum req_state { REQ_WAITING, REQ_RUNNING, REQ_DONE } req_state;

struct eng_req {
    eng_sched *s;
    atomic_int refs;
    atomic_bool cancelled;
    req_state state;
    eng_req *next; /* in the waiting list */
    /* what was asked */
    int priority, boost; /* boost: +1 each time it was paused (see admit) */
    int32_t max_tokens, n_prompt;
    bool ignore_eos, logprobs;
    int32_t top_logprobs;
    mica_token *bias_tokens;
    float *bias_values;
    int32_t n_bias;
    eng_event_fn on_event;
    void *ud;
    /* progress */
    mica_token *toks; /* (n_ctx) prompt, then generated tokens */
    int32_t n_toks, n_past;
    int32_t kv_seq;      /* KV row, -1 when it holds none */
    int32_t slot;        /* index in s->running, -1 when not running */
    double prio_running; /* effective priority when admitted */
    mica_sampler *sampler;
    mica_grammar *grammar;           /* NULL: unconstrained */
    mica_lora *loras[ENG_MAX_LORAS]; /* applied to its KV row whenever it is admitted */
    float lora_scales[ENG_MAX_LORAS];
    int32_t n_loras;
    char error[MICA_ERR_MSG_MAX]; /* why it ended with ENG_FINISH_ERROR */
    eng_text text;
    double t_submit, t_enqueue, t_admit, t_first;
    int32_t n_preempted;
};

struct eng_sched {
    mica_model *model;
    mica_context *ctx;
    eng_sched_params p;
    int32_t n_vocab, n_kv_rows;
    eng_req **running; /* (n_slots) NULL when free */
    bool *kv_row_used; /* (n_kv_rows) */
    mica_batch_token *batch;
    eng_req **batch_owner; /* (n_slots) the request of each logits row */
    float *logits;         /* (n_slots, n_vocab) */
    float *scratch;        /* (n_vocab) log-softmax for logprobs */
    core_buf text_out;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    eng_req *waiting; /* singly linked, in submit order */
    int32_t n_waiting[ENG_MAX_PRIORITY + 1];
    uint64_t n_steps, n_preemptions;
    int64_t kv_used; /* positions in the KV cache after the last step */
    pthread_t thread;
    bool thread_started, quit;
};

eng_sched_params eng_sched_default_params(void)
{
    return (eng_sched_params){.n_slots = 4,
                              .n_spare = 2,
                              .n_ctx = 2048,
                              .n_batch = 256,
                              .n_threads = 0,
                              .max_waiting = 256,
                              .preempt = true,
                              .aging_per_s = 0.1};
}

/* ---- requests ------------------------------------------------------------------------ */

static void req_free(eng_req *r)
{
    mica_sampler_free(r->sampler);
    mica_grammar_free(r->grammar);
    eng_text_free(&r->text);
    free(r->toks);
    free(r->bias_tokens);
    free(r->bias_values);
    free(r);
}

void eng_req_release(eng_req *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) req_free(r);
}

void eng_req_cancel(eng_req *r)
{
    atomic_store(&r->cancelled, true);
    pthread_mutex_lock(&r->s->mu);
    pthread_cond_signal(&r->s->cv);
    pthread_mutex_unlock(&r->s->mu);
}

static mica_status req_check(const eng_sched *s, const eng_req_params *p, mica_err *err)
{
    if (!p->on_event) return core_fail(err, MICA_EINVAL, "request without a callback");
    if (p->n_prompt < 1) return core_fail(err, MICA_EINVAL, "the prompt has no tokens");
    if (p->priority < 0 || p->priority > ENG_MAX_PRIORITY)
        return core_fail(err, MICA_EINVAL, "priority %d out of range [0, %d]", p->priority,
                         ENG_MAX_PRIORITY);
    if (p->top_logprobs < 0 || p->top_logprobs > ENG_MAX_TOP_LOGPROBS)
        return core_fail(err, MICA_EINVAL, "top_logprobs %d out of range [0, %d]", p->top_logprobs,
                         ENG_MAX_TOP_LOGPROBS);
    if (p->n_bias < 0 || p->n_bias > s->n_vocab)
        return core_fail(err, MICA_EINVAL, "%d logit biases for a vocabulary of %d", p->n_bias,
                         s->n_vocab);
    for (int32_t i = 0; i < p->n_bias; i++)
        if (p->bias_tokens[i] < 0 || p->bias_tokens[i] >= s->n_vocab)
            return core_fail(err, MICA_EINVAL, "logit_bias token %d out of range [0, %d)",
                             p->bias_tokens[i], s->n_vocab);
    for (int32_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= s->n_vocab)
            return core_fail(err, MICA_EINVAL, "prompt token %d out of range [0, %d)", p->prompt[i],
                             s->n_vocab);
    /* The prompt and at least one generated token must fit; max_tokens beyond the context
     * is cut there (finish reason "length"), as llama-server does. */
    if (p->n_prompt >= s->p.n_ctx)
        return core_fail(err, MICA_ERANGE,
                         "the prompt has %d tokens; the context holds %d (prompt and at least one "
                         "generated token)",
                         p->n_prompt, s->p.n_ctx);
    return MICA_OK;
}

static mica_status req_new(eng_sched *s, const eng_req_params *p, eng_req **out, mica_err *err)
{
    eng_req *r = core_calloc(1, sizeof *r);
    if (!r) return core_fail(err, MICA_ENOMEM, "out of memory");
    r->s = s;
    atomic_init(&r->refs, 2); /* the caller's and the scheduler's */
    atomic_init(&r->cancelled, false);
    r->priority = p->priority;
    r->max_tokens = p->max_tokens;
    r->n_prompt = r->n_toks = p->n_prompt;
    r->ignore_eos = p->ignore_eos;
    r->logprobs = p->logprobs || p->top_logprobs > 0;
    r->top_logprobs = p->top_logprobs;
    r->on_event = p->on_event;
    r->ud = p->ud;
    r->kv_seq = r->slot = -1;
    r->t_submit = r->t_enqueue = core_now();
    mica_status st = MICA_ENOMEM;
    r->toks = malloc((size_t)s->p.n_ctx * sizeof *r->toks);
    if (!r->toks) goto oom;
    memcpy(r->toks, p->prompt, (size_t)p->n_prompt * sizeof *r->toks);
    if (p->n_bias) {
        r->bias_tokens = malloc((size_t)p->n_bias * sizeof *r->bias_tokens);
        r->bias_values = malloc((size_t)p->n_bias * sizeof *r->bias_values);
        if (!r->bias_tokens || !r->bias_values) goto oom;
        memcpy(r->bias_tokens, p->bias_tokens, (size_t)p->n_bias * sizeof *r->bias_tokens);
        memcpy(r->bias_values, p->bias_values, (size_t)p->n_bias * sizeof *r->bias_values);
        r->n_bias = p->n_bias;
    }
    if ((st = eng_text_init(&r->text, p->stops, p->n_stops, 1 << 20, err))) goto fail;
    if ((st = mica_sampler_new(&r->sampler, p->sampling, s->n_vocab, err))) goto fail;
    if (p->grammar &&
        (st = mica_grammar_new(&r->grammar, s->model, p->grammar, p->grammar_len, err)))
        goto fail;
    if (p->n_loras < 0 || p->n_loras > ENG_MAX_LORAS) {
        st = core_fail(err, MICA_EINVAL, "at most %d LoRA adapters per request", ENG_MAX_LORAS);
        goto fail;
    }
    for (int32_t i = 0; i < p->n_loras; i++) {
        r->loras[i] = p->loras[i];
        r->lora_scales[i] = p->lora_scales[i];
    }
    r->n_loras = p->n_loras;
    for (int32_t i = 0; i < p->n_prompt; i++) mica_sampler_accept(r->sampler, p->prompt[i]);
    *out = r;
    return MICA_OK;
oom:
    st = core_fail(err, MICA_ENOMEM, "out of memory for a request");
fail:
    req_free(r);
    return st;
}

mica_status eng_sched_submit(eng_sched *s, const eng_req_params *p, eng_req **out, mica_err *err)
{
    *out = NULL;
    mica_status st = req_check(s, p, err);
    if (st) return st;
    eng_req *r = NULL;
    if ((st = req_new(s, p, &r, err))) return st;
    pthread_mutex_lock(&s->mu);
    if (s->n_waiting[r->priority] >= s->p.max_waiting) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return core_fail(err, MICA_EBUSY, "%d requests of priority %d are already waiting",
                         s->p.max_waiting, p->priority);
    }
    eng_req **tail = &s->waiting;
    while (*tail) tail = &(*tail)->next;
    *tail = r;
    s->n_waiting[r->priority]++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *out = r;
    return MICA_OK;
}

/* ---- events -------------------------------------------------------------------------- */

static eng_event req_event(const eng_req *r)
{
    return (eng_event){.token = -1,
                       .n_prompt = r->n_prompt,
                       .n_gen = r->n_toks - r->n_prompt,
                       .t_submit = r->t_submit,
                       .t_admit = r->t_admit,
                       .t_first = r->t_first,
                       .n_preempted = r->n_preempted};
}

/* Gives back the request's KV row and slot. Called with s->mu held. */
static void req_detach(eng_sched *s, eng_req *r)
{
    if (r->kv_seq >= 0) {
        mica_seq_truncate(s->ctx, r->kv_seq, 0);
        s->kv_row_used[r->kv_seq] = false;
        r->kv_seq = -1;
    }
    if (r->slot >= 0) s->running[r->slot] = NULL;
    r->slot = -1;
    r->n_past = 0;
}

/* Sends the final event (with the text held back) and drops the scheduler's reference.
 * The request must already be out of every list. */
static void req_finish(eng_sched *s, eng_req *r, eng_finish why, const char *error)
{
    s->text_out.len = 0;
    if (why != ENG_FINISH_CANCELLED && why != ENG_FINISH_ERROR)
        eng_text_flush(&r->text, &s->text_out);
    eng_event ev = req_event(r);
    ev.done = true;
    ev.finish = why;
    ev.error = error;
    ev.text = s->text_out.data ? s->text_out.data : "";
    ev.text_len = s->text_out.len;
    r->on_event(r->ud, &ev);
    eng_req_release(r);
}

/* ---- admission and preemption -------------------------------------------------------- */

/* What admission orders by: the priority asked for plus what waiting has earned. */
static double effective_priority(const eng_sched *s, const eng_req *r, double now)
{
    return r->priority + s->p.aging_per_s * (now - r->t_enqueue);
}

/* The waiting request to run next: highest effective priority, then the earliest. */
static eng_req **best_waiting(eng_sched *s, double now)
{
    eng_req **best = NULL;
    for (eng_req **p = &s->waiting; *p; p = &(*p)->next)
        if (!best || effective_priority(s, *p, now) > effective_priority(s, *best, now)) best = p;
    return best;
}

static int32_t free_slot(const eng_sched *s)
{
    for (int32_t i = 0; i < s->p.n_slots; i++)
        if (!s->running[i]) return i;
    return -1;
}

static int32_t free_kv_row(const eng_sched *s)
{
    for (int32_t i = 0; i < s->n_kv_rows; i++)
        if (!s->kv_row_used[i]) return i;
    return -1;
}

/* The running request a waiting one at priority `prio` may pause: the least important
 * running one, if it is less important by at least one whole level (a little aging alone
 * must not make requests of one tier pause each other back and forth). */
static eng_req *preemption_victim(const eng_sched *s, double prio)
{
    eng_req *victim = NULL;
    for (int32_t i = 0; i < s->p.n_slots; i++) {
        eng_req *r = s->running[i];
        if (r && r->prio_running + 1.0 <= prio &&
            (!victim || r->prio_running < victim->prio_running))
            victim = r;
    }
    return victim;
}

/* A paused request that still holds a KV row, when one must be freed: the least important. */
static eng_req *paused_kv_holder(eng_sched *s, double now)
{
    eng_req *pick = NULL;
    for (eng_req *r = s->waiting; r; r = r->next)
        if (r->kv_seq >= 0 &&
            (!pick || effective_priority(s, r, now) < effective_priority(s, pick, now)))
            pick = r;
    return pick;
}

static void pause_request(eng_sched *s, eng_req *r, double now)
{
    s->running[r->slot] = NULL;
    r->slot = -1;
    r->state = REQ_WAITING;
    r->boost++;
    r->n_preempted++;
    r->t_enqueue = now;
    r->next = s->waiting;
    s->waiting = r;
    s->n_waiting[r->priority]++;
    s->n_preemptions++;
}

/* Gives r a KV row: its own if it kept one, a free one, or the row of the least important
 * paused request (which will recompute its tokens when it resumes). */
static void assign_kv_row(eng_sched *s, eng_req *r, double now)
{
    if (r->kv_seq >= 0) return;
    int32_t row = free_kv_row(s);
    if (row < 0) {
        eng_req *holder = paused_kv_holder(s, now);
        row = holder->kv_seq; /* rows = slots + spare, so a paused holder exists */
        mica_seq_truncate(s->ctx, row, 0);
        holder->kv_seq = -1;
        holder->n_past = 0;
    }
    s->kv_row_used[row] = true;
    mica_seq_truncate(s->ctx, row, 0);
    r->kv_seq = row;
    r->n_past = 0;
}

static void admit(eng_sched *s, eng_req *r, int32_t slot, double now)
{
    eng_req **link = &s->waiting;
    while (*link != r) link = &(*link)->next;
    *link = r->next;
    r->next = NULL;
    s->n_waiting[r->priority]--;
    /* Each pause raises what it takes to pause the request again, so a stream of more
     * important requests cannot keep pausing the same one. */
    r->prio_running = effective_priority(s, r, now) + r->boost;
    if (r->t_admit == 0) r->t_admit = now;
    r->state = REQ_RUNNING;
    r->slot = slot;
    s->running[slot] = r;
    assign_kv_row(s, r, now);
    /* The row may have served another request's adapters; a failure needs more distinct
     * adapters than a context holds, and leaves the row's adapters as they were. */
    mica_err err;
    if (mica_context_set_loras(s->ctx, r->kv_seq, r->loras, r->lora_scales, r->n_loras, &err))
        snprintf(r->error, sizeof r->error, "%s", err.msg);
}

/* Finishes cancelled requests, waiting or running. Called with s->mu held; collects them in
 * *done (the callbacks run after the lock is released). */
static void collect_cancelled(eng_sched *s, eng_req **done)
{
    for (eng_req **p = &s->waiting; *p;) {
        eng_req *r = *p;
        if (!atomic_load(&r->cancelled)) {
            p = &r->next;
            continue;
        }
        *p = r->next;
        s->n_waiting[r->priority]--;
        req_detach(s, r);
        r->state = REQ_DONE;
        r->next = *done;
        *done = r;
    }
    for (int32_t i = 0; i < s->p.n_slots; i++) {
        eng_req *r = s->running[i];
        if (!r || !atomic_load(&r->cancelled)) continue;
        req_detach(s, r);
        r->state = REQ_DONE;
        r->next = *done;
        *done = r;
    }
}

/* Fills free slots by effective priority; with preemption, a waiting request more important
 * than the least important running one takes its slot. */
static void schedule(eng_sched *s, double now)
{
    for (;;) {
        eng_req **best = best_waiting(s, now);
        if (!best) return;
        eng_req *want = *best;
        int32_t slot = free_slot(s);
        if (slot < 0 && s->p.preempt) {
            eng_req *victim = preemption_victim(s, effective_priority(s, want, now));
            if (!victim) return;
            slot = victim->slot;
            pause_request(s, victim, now);
        }
        if (slot < 0) return;
        admit(s, want, slot, now);
    }
}

/* ---- the step ------------------------------------------------------------------------ */

/* Adds the tokens each running request has not fed yet: one for a generating request, a
 * chunk of the prompt (within the batch budget) for the others, most important first. */
static int32_t build_batch(eng_sched *s, int32_t *n_rows)
{
    int32_t n = 0;
    *n_rows = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t i = 0; i < s->p.n_slots; i++) {
            eng_req *r = s->running[i];
            if (!r) continue;
            const int32_t todo = r->n_toks - r->n_past;
            const bool generating = todo == 1;
            if (generating != (pass == 0) || todo < 1) continue;
            const int32_t take = todo < s->p.n_batch - n ? todo : s->p.n_batch - n;
            for (int32_t k = 0; k < take; k++) {
                const int32_t pos = r->n_past + k;
                const bool last = pos == r->n_toks - 1;
                s->batch[n++] = (mica_batch_token){r->toks[pos], r->kv_seq, pos, last};
                if (last) s->batch_owner[(*n_rows)++] = r;
            }
        }
    }
    return n;
}

/* log-softmax of the raw logits, for logprobs. */
static void log_softmax(const float *x, float *y, int32_t n)
{
    float max = -INFINITY;
    for (int32_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)(x[i] - max));
    const float lse = max + (float)log(sum);
    for (int32_t i = 0; i < n; i++) y[i] = x[i] - lse;
}

static int32_t top_tokens(const float *lp, int32_t n_vocab, eng_logprob *top, int32_t k)
{
    int32_t n = 0;
    for (int32_t t = 0; t < n_vocab; t++) {
        if (n < k || lp[t] > top[n - 1].logprob) {
            int32_t j = n < k ? n++ : k - 1;
            while (j > 0 && top[j - 1].logprob < lp[t]) {
                top[j] = top[j - 1];
                j--;
            }
            top[j] = (eng_logprob){t, lp[t]};
        }
    }
    return n;
}

/* Biases, the grammar's mask, then samples; the logprobs are of the model's raw distribution.
 * -1 (with r->error) when the grammar leaves no token. */
static mica_token sample(eng_sched *s, eng_req *r, float *logits, eng_event *ev, eng_logprob *top)
{
    if (r->logprobs) log_softmax(logits, s->scratch, s->n_vocab);
    for (int32_t i = 0; i < r->n_bias; i++) logits[r->bias_tokens[i]] += r->bias_values[i];
    if (r->ignore_eos)
        for (mica_token t = 0; t < s->n_vocab; t++)
            if (mica_model_is_eog(s->model, t)) logits[t] = -INFINITY;
    mica_err err;
    if (r->grammar && mica_grammar_apply(r->grammar, logits, &err)) {
        snprintf(r->error, sizeof r->error, "%s", err.msg);
        return -1;
    }
    const mica_token t = mica_sampler_sample(r->sampler, logits);
    if (r->logprobs) {
        ev->logprob = s->scratch[t];
        ev->n_top = top_tokens(s->scratch, s->n_vocab, top, r->top_logprobs);
        ev->top = top;
    }
    return t;
}

/* Samples r's next token from its logits row and reports it; returns how r finished. */
static eng_finish advance(eng_sched *s, eng_req *r, float *logits)
{
    if (r->error[0]) return ENG_FINISH_ERROR; /* its adapters could not be attached (admit) */
    eng_event ev = req_event(r);
    eng_logprob top[ENG_MAX_TOP_LOGPROBS];
    const mica_token t = sample(s, r, logits, &ev, top);
    if (t < 0) return ENG_FINISH_ERROR;
    const double now = core_now();
    if (r->t_first == 0) r->t_first = now;
    if (mica_model_is_eog(s->model, t) && !r->ignore_eos) return ENG_FINISH_STOP;
    mica_err err;
    if (r->grammar && mica_grammar_accept(r->grammar, t, &err)) {
        snprintf(r->error, sizeof r->error, "%s", err.msg);
        return ENG_FINISH_ERROR;
    }
    r->toks[r->n_toks++] = t;
    char piece[256];
    size_t len = mica_token_to_piece(s->model, t, false, piece, sizeof piece);
    len = len < sizeof piece ? len : sizeof piece;
    s->text_out.len = 0;
    const eng_text_result tr = eng_text_push(&r->text, piece, len, &s->text_out);
    ev.token = t;
    ev.text = s->text_out.data ? s->text_out.data : "";
    ev.text_len = s->text_out.len;
    ev.n_gen = r->n_toks - r->n_prompt;
    ev.t_first = r->t_first;
    r->on_event(r->ud, &ev);
    if (tr == ENG_TEXT_STOP) return ENG_FINISH_STOP;
    if (tr == ENG_TEXT_FULL) return ENG_FINISH_LENGTH;
    /* A complete document allows only end-of-generation tokens: stop without another step. */
    if (r->grammar && mica_grammar_done(r->grammar)) return ENG_FINISH_STOP;
    const int32_t n_gen = r->n_toks - r->n_prompt;
    if ((r->max_tokens >= 0 && n_gen >= r->max_tokens) || r->n_toks >= s->p.n_ctx)
        return ENG_FINISH_LENGTH;
    return ENG_FINISH_NONE;
}

static void finish_list(eng_sched *s, eng_req *done, eng_finish why, const char *error)
{
    while (done) {
        eng_req *next = done->next;
        req_finish(s, done, why, error);
        done = next;
    }
}

/* Runs the batch; on failure every request in it ends with the error. */
static bool run_batch(eng_sched *s, int32_t n)
{
    mica_err err;
    if (mica_decode_multi(s->ctx, s->batch, n, s->logits, &err) == MICA_OK) return true;
    eng_req *failed = NULL;
    pthread_mutex_lock(&s->mu);
    for (int32_t i = 0; i < s->p.n_slots; i++) {
        eng_req *r = s->running[i];
        if (!r) continue;
        req_detach(s, r);
        r->state = REQ_DONE;
        r->next = failed;
        failed = r;
    }
    pthread_mutex_unlock(&s->mu);
    finish_list(s, failed, ENG_FINISH_ERROR, err.msg);
    return false;
}

bool eng_sched_step(eng_sched *s)
{
    eng_req *cancelled = NULL;
    pthread_mutex_lock(&s->mu);
    collect_cancelled(s, &cancelled);
    schedule(s, core_now());
    pthread_mutex_unlock(&s->mu);
    finish_list(s, cancelled, ENG_FINISH_CANCELLED, NULL);

    int32_t n_rows;
    const int32_t n = build_batch(s, &n_rows);
    if (n == 0) return cancelled != NULL;
    if (!run_batch(s, n)) return true;
    /* Every fed token is now in its request's KV row. */
    pthread_mutex_lock(&s->mu);
    s->n_steps++;
    s->kv_used = 0;
    for (int32_t j = 0; j < s->p.n_slots; j++) {
        eng_req *r = s->running[j];
        if (!r) continue;
        for (int32_t i = 0; i < n; i++)
            if (s->batch[i].seq == r->kv_seq) r->n_past = s->batch[i].pos + 1;
    }
    for (int32_t row = 0; row < s->n_kv_rows; row++) s->kv_used += mica_seq_len(s->ctx, row);
    pthread_mutex_unlock(&s->mu);
    eng_req *done = NULL;
    eng_finish why[64];
    int32_t n_done = 0;
    for (int32_t row = 0; row < n_rows; row++) {
        eng_req *r = s->batch_owner[row];
        const eng_finish f = advance(s, r, s->logits + (size_t)row * (size_t)s->n_vocab);
        if (f == ENG_FINISH_NONE) continue;
        pthread_mutex_lock(&s->mu);
        req_detach(s, r);
        r->state = REQ_DONE;
        pthread_mutex_unlock(&s->mu);
        r->next = done;
        done = r;
        why[n_done++] = f;
    }
    while (done) {
        eng_req *next = done->next;
        const eng_finish f = why[--n_done];
        req_finish(s, done, f, f == ENG_FINISH_ERROR ? done->error : NULL);
        done = next;
    }
    return true;
}

/* ---- the thread ---------------------------------------------------------------------- */

static bool has_work(const eng_sched *s)
{
    if (s->waiting) return true;
    for (int32_t i = 0; i < s->p.n_slots; i++)
        if (s->running[i]) return true;
    return false;
}

static void *sched_thread(void *arg)
{
    eng_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->quit) {
        if (!has_work(s)) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        eng_sched_step(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

mica_status eng_sched_start(eng_sched *s, mica_err *err)
{
    if (s->thread_started) return MICA_OK;
    if (pthread_create(&s->thread, NULL, sched_thread, s))
        return core_fail(err, MICA_ENOMEM, "cannot start the scheduler thread");
    s->thread_started = true;
    return MICA_OK;
}

/* ---- life cycle ---------------------------------------------------------------------- */

static mica_status sched_check_params(const eng_sched_params *p, mica_err *err)
{
    if (p->n_slots < 1 || p->n_slots > 1024)
        return core_fail(err, MICA_EINVAL, "slots %d out of range [1, 1024]", p->n_slots);
    if (p->n_spare < 0 || p->n_spare > 1024)
        return core_fail(err, MICA_EINVAL, "spare KV rows %d out of range [0, 1024]", p->n_spare);
    if (p->n_ctx < 2) return core_fail(err, MICA_EINVAL, "context %d is too small", p->n_ctx);
    if (p->n_batch < p->n_slots + 1)
        return core_fail(err, MICA_EINVAL, "batch %d must exceed the %d slots", p->n_batch,
                         p->n_slots);
    if (p->max_waiting < 1) return core_fail(err, MICA_EINVAL, "max_waiting must be >= 1");
    if (p->aging_per_s < 0 || !isfinite(p->aging_per_s))
        return core_fail(err, MICA_EINVAL, "aging must be a finite value >= 0");
    if (p->n_slots > 64) return core_fail(err, MICA_EINVAL, "at most 64 slots");
    return MICA_OK;
}

mica_status eng_sched_new(eng_sched **out, mica_model *m, const eng_sched_params *p, mica_err *err)
{
    *out = NULL;
    mica_status st = sched_check_params(p, err);
    if (st) return st;
    eng_sched *s = core_calloc(1, sizeof *s);
    if (!s) return core_fail(err, MICA_ENOMEM, "out of memory");
    s->model = m;
    s->p = *p;
    s->n_vocab = mica_model_n_vocab(m);
    s->n_kv_rows = p->n_slots + p->n_spare;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    core_buf_init(&s->text_out, 1 << 21);
    mica_context_params cp = mica_context_default_params();
    cp.n_ctx = p->n_ctx;
    cp.n_seq = s->n_kv_rows;
    cp.n_threads = p->n_threads;
    if ((st = mica_context_new(&s->ctx, m, cp, err))) goto fail;
    s->running = core_calloc((size_t)p->n_slots, sizeof *s->running);
    s->kv_row_used = core_calloc((size_t)s->n_kv_rows, sizeof *s->kv_row_used);
    s->batch = core_calloc((size_t)p->n_batch, sizeof *s->batch);
    s->batch_owner = core_calloc((size_t)p->n_slots, sizeof *s->batch_owner);
    s->logits = core_calloc((size_t)p->n_slots * (size_t)s->n_vocab, sizeof *s->logits);
    s->scratch = core_calloc((size_t)s->n_vocab, sizeof *s->scratch);
    if (!s->running || !s->kv_row_used || !s->batch || !s->batch_owner || !s->logits ||
        !s->scratch) {
        st = core_fail(err, MICA_ENOMEM, "out of memory for %d slots", p->n_slots);
        goto fail;
    }
    *out = s;
    return MICA_OK;
fail:
    eng_sched_free(s);
    return st;
}

void eng_sched_free(eng_sched *s)
{
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->quit = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    eng_req *all = NULL;
    for (eng_req *r = s->waiting; r;) {
        eng_req *next = r->next;
        r->next = all;
        all = r;
        r = next;
    }
    s->waiting = NULL;
    for (int32_t i = 0; s->running && i < s->p.n_slots; i++)
        if (s->running[i]) {
            s->running[i]->next = all;
            all = s->running[i];
            s->running[i] = NULL;
        }
    finish_list(s, all, ENG_FINISH_CANCELLED, NULL);
    mica_context_free(s->ctx);
    free(s->running);
    free(s->kv_row_used);
    free(s->batch);
    free(s->batch_owner);
    free(s->logits);
    free(s->scratch);
    core_buf_free(&s->text_out);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- observation --------------------------------------------------------------------- */

void eng_sched_stats_get(eng_sched *s, eng_sched_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    out->n_slots = s->p.n_slots;
    for (int32_t i = 0; i < s->p.n_slots; i++) {
        const eng_req *r = s->running[i];
        if (!r) continue;
        out->n_running++;
        out->running[r->priority]++;
    }
    for (const eng_req *r = s->waiting; r; r = r->next) {
        out->n_waiting++;
        out->waiting[r->priority]++;
        out->n_paused_with_kv += r->kv_seq >= 0;
    }
    out->kv_used = s->kv_used;
    out->kv_total = (int64_t)s->n_kv_rows * s->p.n_ctx;
    out->n_steps = s->n_steps;
    out->n_preemptions = s->n_preemptions;
    pthread_mutex_unlock(&s->mu);
}

mica_model *eng_sched_model(const eng_sched *s)
{
    return s->model;
}

const mica_context *eng_sched_context(const eng_sched *s)
{
    return s->ctx;
}
