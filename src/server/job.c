/*
 * job.c - one generation request of the gateway, from submission to the engine to the last
 * byte: the engine's events (on the scheduler thread) become SSE chunks or accumulate into
 * a JSON body; the connection is suspended while nothing is ready and resumed by the next
 * event (or by the ticker for a comment ping). A client that disconnects cancels its
 * requests; the engine then frees their slots within one step.
 *
 * Lifetime: a job is referenced by each of its engine requests until their final event, by
 * its connection until MHD reports it complete, and (streams) by the MHD response until it is
 * destroyed; the last reference frees it. Lock order: s->jobs_mu, then job->mu.
 */
#include "srv_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct srv_choice {
    srv_job *job;
    int index;
    eng_req *req;
    bool done, sent_role;
    eng_finish finish;
    const char *error;
    char error_msg[256];
    int32_t n_gen;
    core_buf text;    /* non-streaming: everything generated */
    json_t *lp;       /* non-streaming logprobs: chat "content" array or completions object */
    double t_last;    /* the previous token, for inter-token latency */
    bool tools;       /* output goes through the tool-call parser */
    core_buf content; /* non-streaming with tools: the text outside the calls */
    srv_tool_parser tp;
    int calls_sent; /* streams: tool calls already sent */
} srv_choice;

struct srv_job {
    srv *s;
    srv_job *prev, *next; /* s->jobs */
    pthread_mutex_t mu;
    int refs;
    struct MHD_Connection *conn;
    bool suspended, ping, eof, gone;
    srv_gen g;
    char id[48];
    int64_t created;
    srv_choice ch[SRV_MAX_CHOICES];
    int n_done;
    core_buf out; /* SSE bytes not yet handed to MHD */
    size_t out_pos;
    double t_submit, t_admit, t_first; /* core_now() seconds; 0: not yet */
    bool logged;
};

static void job_free(srv_job *j)
{
    srv *s = j->s;
    pthread_mutex_lock(&s->jobs_mu);
    if (j->prev)
        j->prev->next = j->next;
    else
        s->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    pthread_mutex_unlock(&s->jobs_mu);
    for (int i = 0; i < j->g.n; i++) {
        eng_req_release(j->ch[i].req);
        core_buf_free(&j->ch[i].text);
        json_decref(j->ch[i].lp);
        if (j->ch[i].tools) srv_tools_free(&j->ch[i].tp);
        core_buf_free(&j->ch[i].content);
    }
    srv_gen_free(&j->g);
    core_buf_free(&j->out);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static void job_unref(srv_job *j)
{
    pthread_mutex_lock(&j->mu);
    const int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left == 0) job_free(j);
}

/* Wakes the connection if it sleeps. Called with j->mu held. */
static void job_wake(srv_job *j)
{
    if (!j->suspended || !j->conn) return;
    j->suspended = false;
    MHD_resume_connection(j->conn);
}

/* ---- rendering ----------------------------------------------------------------------- */

static json_t *json_text(const char *s, size_t n)
{
    core_buf b;
    core_buf_init(&b, n * 3 + 16);
    core_buf_append_utf8(&b, s, n);
    json_t *v = json_stringn(b.data ? b.data : "", b.len);
    core_buf_free(&b);
    return v;
}

static json_t *token_json(const srv_job *j, mica_token t)
{
    char piece[256];
    size_t n = mica_token_to_piece(j->s->models[j->g.model].m, t, false, piece, sizeof piece);
    return json_text(piece, n < sizeof piece ? n : sizeof piece);
}

static json_t *token_bytes(const srv_job *j, mica_token t)
{
    char piece[256];
    size_t n = mica_token_to_piece(j->s->models[j->g.model].m, t, false, piece, sizeof piece);
    json_t *a = json_array();
    for (size_t i = 0; i < n && i < sizeof piece; i++)
        json_array_append_new(a, json_integer((unsigned char)piece[i]));
    return a;
}

/* Chat: {"token", "logprob", "bytes", "top_logprobs": [...]} */
static json_t *chat_logprob(const srv_job *j, const eng_event *ev)
{
    json_t *top = json_array();
    for (int32_t i = 0; i < ev->n_top; i++)
        json_array_append_new(
            top, json_pack("{s:o,s:f,s:o}", "token", token_json(j, ev->top[i].token), "logprob",
                           (double)ev->top[i].logprob, "bytes", token_bytes(j, ev->top[i].token)));
    return json_pack("{s:o,s:f,s:o,s:o}", "token", token_json(j, ev->token), "logprob",
                     (double)ev->logprob, "bytes", token_bytes(j, ev->token), "top_logprobs", top);
}

/* Completions: parallel arrays tokens / token_logprobs / top_logprobs / text_offset. */
static json_t *completion_logprobs_new(void)
{
    return json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

static void completion_logprobs_add(const srv_job *j, json_t *lp, const eng_event *ev,
                                    size_t offset)
{
    json_array_append_new(json_object_get(lp, "tokens"), token_json(j, ev->token));
    json_array_append_new(json_object_get(lp, "token_logprobs"), json_real(ev->logprob));
    json_t *top = json_object();
    for (int32_t i = 0; i < ev->n_top; i++) {
        json_t *piece = token_json(j, ev->top[i].token);
        json_object_set_new(top, json_string_value(piece), json_real(ev->top[i].logprob));
        json_decref(piece);
    }
    json_array_append_new(json_object_get(lp, "top_logprobs"), top);
    json_array_append_new(json_object_get(lp, "text_offset"), json_integer((json_int_t)offset));
}

static const char *finish_name(const srv_choice *c)
{
    if (c->tools && c->tp.n_calls > 0) return "tool_calls";
    return c->finish == ENG_FINISH_LENGTH ? "length" : "stop";
}

static json_t *usage_json(const srv_job *j)
{
    int32_t gen = 0;
    for (int i = 0; i < j->g.n; i++) gen += j->ch[i].n_gen;
    const int32_t prompt = j->g.n_prompt;
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", prompt, "completion_tokens", gen,
                     "total_tokens", prompt + gen);
}

static json_t *envelope(const srv_job *j, const char *object)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:s}", "id", j->id, "object", object, "created",
                     (json_int_t)j->created, "model", j->s->models[j->g.model].name,
                     "system_fingerprint", "mica", "service_tier", j->s->cfg.tiers[j->g.tier].name);
}

/* Appends "data: <json>\n\n" to the stream. */
static void sse_json(srv_job *j, json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!text) return;
    core_buf_append(&j->out, "data: ", 6);
    core_buf_append(&j->out, text, strlen(text));
    core_buf_append(&j->out, "\n\n", 2);
    free(text);
}

/* One chunk of one choice: text (may be empty), logprobs and finish reason optional. */
static void sse_chunk(srv_job *j, srv_choice *c, const char *text, size_t len, const eng_event *ev,
                      const char *finish)
{
    json_t *chunk = envelope(j, j->g.chat ? "chat.completion.chunk" : "text_completion");
    json_t *choice = json_pack("{s:i}", "index", c->index);
    json_t *lp = json_null();
    if (ev && j->g.logprobs && !ev->done) {
        if (j->g.chat) {
            lp = json_pack("{s:[o]}", "content", chat_logprob(j, ev));
        } else {
            lp = completion_logprobs_new();
            completion_logprobs_add(j, lp, ev, 0);
        }
    }
    if (j->g.chat) {
        json_t *delta = json_object();
        if (!c->sent_role) json_object_set_new(delta, "role", json_string("assistant"));
        if (len || !c->sent_role || !finish)
            json_object_set_new(delta, "content", json_text(text, len));
        c->sent_role = true;
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", json_text(text, len));
    }
    json_object_set_new(choice, "logprobs", lp);
    json_object_set_new(choice, "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(chunk, "choices", json_pack("[o]", choice));
    if (j->g.include_usage) json_object_set_new(chunk, "usage", json_null());
    sse_json(j, chunk);
}

static void sse_finish(srv_job *j)
{
    if (j->g.include_usage) {
        json_t *last = envelope(j, j->g.chat ? "chat.completion.chunk" : "text_completion");
        json_object_set_new(last, "choices", json_array());
        json_object_set_new(last, "usage", usage_json(j));
        sse_json(j, last);
    }
    core_buf_append(&j->out, "data: [DONE]\n\n", 14);
    j->eof = true;
}

/* ---- engine events (scheduler thread) ------------------------------------------------ */

static void observe_token(srv_job *j, srv_choice *c, const eng_event *ev)
{
    srv_metrics *m = &j->s->metrics;
    const double now = core_now();
    if (j->t_first == 0) {
        j->t_submit = ev->t_submit;
        j->t_admit = ev->t_admit;
        j->t_first = now;
    }
    if (c->t_last == 0) {
        srv_metrics_observe(m, j->g.model, j->g.tier, SRV_H_QUEUE, ev->t_admit - ev->t_submit);
        srv_metrics_observe(m, j->g.model, j->g.tier, SRV_H_TTFT, now - ev->t_submit);
    } else {
        srv_metrics_observe(m, j->g.model, j->g.tier, SRV_H_ITL, now - c->t_last);
    }
    c->t_last = now;
}

static void observe_done(srv_job *j, srv_choice *c, const eng_event *ev)
{
    srv_metrics *m = &j->s->metrics;
    srv_metrics_observe(m, j->g.model, j->g.tier, SRV_H_E2E, core_now() - ev->t_submit);
    pthread_mutex_lock(&m->mu);
    srv_series *se = &m->series[j->g.model][j->g.tier];
    se->finish[c->finish]++;
    se->gen_tokens += (uint64_t)ev->n_gen;
    if (c->index == 0) se->prompt_tokens += (uint64_t)ev->n_prompt;
    pthread_mutex_unlock(&m->mu);
}

/* ---- the request log ------------------------------------------------------------------ */

static int64_t ms_between(double t0, double t1)
{
    return t0 > 0 && t1 >= t0 ? (int64_t)((t1 - t0) * 1000.0 + 0.5) : 0;
}

/* The answer as the log stores it: the text of a single choice, a JSON array of n. */
static char *log_response(const srv_job *j)
{
    if (j->g.n == 1) {
        const core_buf *t = &j->ch[0].text;
        char *r = malloc(t->len + 1);
        if (r) {
            if (t->len) memcpy(r, t->data, t->len);
            r[t->len] = '\0';
        }
        return r;
    }
    json_t *a = json_array();
    for (int i = 0; i < j->g.n; i++)
        json_array_append_new(
            a, json_text(j->ch[i].text.data ? j->ch[i].text.data : "", j->ch[i].text.len));
    char *r = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return r;
}

/* Writes the request's row before its answer is complete, so that every answered request is
 * in the log even if the process dies right after. Called once, with j->mu held. A failure
 * is reported on stderr without the request's content; the answer still goes out. */
static void job_log(srv_job *j, int status)
{
    if (j->logged || !j->s->log) return;
    j->logged = true;
    int32_t gen = 0;
    for (int i = 0; i < j->g.n; i++) gen += j->ch[i].n_gen;
    const bool content = !j->g.no_content_logs;
    char *response = content ? log_response(j) : NULL;
    const double now = core_now();
    const store_log_row row = {
        .id = j->id,
        .created_at = j->created * 1000,
        .key_id = j->g.key_id[0] ? j->g.key_id : NULL,
        .tier = j->s->cfg.tiers[j->g.tier].name,
        .model = j->s->models[j->g.model].name,
        .endpoint = j->g.endpoint,
        .status = status,
        .prompt_tokens = j->g.n_prompt,
        .completion_tokens = gen,
        .queue_ms = ms_between(j->t_submit, j->t_admit),
        .ttft_ms = ms_between(j->t_submit, j->t_first),
        .total_ms = ms_between(j->t_submit, now),
        .prompt = content ? j->g.log_prompt : NULL,
        .response = response,
        .no_content = !content,
    };
    mica_err err;
    if (store_log_insert(j->s->log, &row, &err))
        fprintf(stderr, "mica: request log: %s: %s\n", j->id, err.msg);
    free(response);
}

/* Sends the calls the parser completed since the last time, one chunk each. */
static void sse_tool_calls(srv_job *j, srv_choice *c)
{
    for (; c->calls_sent < c->tp.n_calls; c->calls_sent++) {
        json_t *chunk = envelope(j, "chat.completion.chunk");
        json_t *delta = json_object();
        if (!c->sent_role) json_object_set_new(delta, "role", json_string("assistant"));
        c->sent_role = true;
        json_object_set_new(
            delta, "tool_calls",
            json_pack("[o]", srv_tool_call_json(&c->tp.calls[c->calls_sent], c->calls_sent, true)));
        json_object_set_new(chunk, "choices",
                            json_pack("[{s:i,s:o,s:n,s:n}]", "index", c->index, "delta", delta,
                                      "logprobs", "finish_reason"));
        if (j->g.include_usage) json_object_set_new(chunk, "usage", json_null());
        sse_json(j, chunk);
    }
}

/* A stream with tools: text that cannot be a call goes out as content at once, calls as
 * delta.tool_calls when complete. */
static void stream_through_tools(srv_job *j, srv_choice *c, const char *text, size_t len,
                                 const eng_event *ev)
{
    core_buf content;
    core_buf_init(&content, 64u << 20);
    srv_tools_feed(&c->tp, text, len, &content);
    if (content.len || (ev && j->g.logprobs))
        sse_chunk(j, c, content.data ? content.data : "", content.len, ev, NULL);
    core_buf_free(&content);
    sse_tool_calls(j, c);
}

/* The last chunk of a stream's choice: the rest of the text (and calls), the finish reason. */
static void stream_done(srv_job *j, srv_choice *c, const eng_event *ev)
{
    if (!c->tools) {
        sse_chunk(j, c, ev->text, ev->text_len, NULL, finish_name(c));
        return;
    }
    stream_through_tools(j, c, ev->text, ev->text_len, NULL);
    core_buf content;
    core_buf_init(&content, 64u << 20);
    srv_tools_finish(&c->tp, &content);
    sse_chunk(j, c, content.data ? content.data : "", content.len, NULL, finish_name(c));
    core_buf_free(&content);
}

static void on_token(srv_job *j, srv_choice *c, const eng_event *ev)
{
    observe_token(j, c, ev);
    if (j->g.stream) {
        if (!j->g.no_content_logs) core_buf_append(&c->text, ev->text, ev->text_len);
        if (c->tools)
            stream_through_tools(j, c, ev->text, ev->text_len, ev);
        else
            sse_chunk(j, c, ev->text, ev->text_len, ev, NULL);
        return;
    }
    const size_t offset = c->text.len;
    core_buf_append(&c->text, ev->text, ev->text_len);
    if (!j->g.logprobs) return;
    if (j->g.chat)
        json_array_append_new(c->lp, chat_logprob(j, ev));
    else
        completion_logprobs_add(j, c->lp, ev, offset);
}

static void on_done(srv_job *j, srv_choice *c, const eng_event *ev)
{
    c->done = true;
    c->finish = ev->finish;
    c->n_gen = ev->n_gen;
    srv_auth_charge(&j->s->auth, j->g.key_id, ev->n_gen);
    if (ev->error) {
        snprintf(c->error_msg, sizeof c->error_msg, "%s", ev->error);
        c->error = c->error_msg;
    }
    j->n_done++;
    observe_done(j, c, ev);
    if (j->g.stream && !j->g.no_content_logs) core_buf_append(&c->text, ev->text, ev->text_len);
    if (j->g.stream && j->n_done == j->g.n) job_log(j, j->gone ? 499 : 200);
    if (j->g.stream && !j->gone) {
        if (ev->finish == ENG_FINISH_ERROR) {
            sse_json(j, json_pack("{s:{s:s,s:s}}", "error", "message", c->error_msg, "type",
                                  "server_error"));
        } else {
            stream_done(j, c, ev);
        }
        if (j->n_done == j->g.n) sse_finish(j);
    } else if (!j->g.stream) {
        core_buf_append(&c->text, ev->text, ev->text_len);
        if (c->tools) {
            core_buf content;
            core_buf_init(&content, 64u << 20);
            srv_tools_feed(&c->tp, c->text.data ? c->text.data : "", c->text.len, &content);
            srv_tools_finish(&c->tp, &content);
            c->content = content; /* the text without the calls */
        }
    }
}

static void on_event(void *ud, const eng_event *ev)
{
    srv_choice *c = ud;
    srv_job *j = c->job;
    pthread_mutex_lock(&j->mu);
    if (ev->done)
        on_done(j, c, ev);
    else
        on_token(j, c, ev);
    if (j->g.stream || j->n_done == j->g.n) job_wake(j);
    const bool last = ev->done && --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (last) job_free(j);
}

/* ---- MHD side -------------------------------------------------------------------------- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    srv_job *j = cls;
    pthread_mutex_lock(&j->mu);
    ssize_t n = 0;
    if (j->out_pos < j->out.len) {
        const size_t left = j->out.len - j->out_pos;
        n = (ssize_t)(left < max ? left : max);
        memcpy(buf, j->out.data + j->out_pos, (size_t)n);
        j->out_pos += (size_t)n;
        if (j->out_pos == j->out.len) j->out.len = j->out_pos = 0;
    } else if (j->eof) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (j->ping && max >= 8) {
        j->ping = false;
        memcpy(buf, ": ping\n\n", 8);
        n = 8;
    } else {
        /* Nothing to send: sleep until the next event (returning 0 alone would spin). */
        j->suspended = true;
        MHD_suspend_connection(j->conn);
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

static void stream_free(void *cls)
{
    job_unref(cls);
}

static mica_status submit_choices(srv_job *j, mica_err *err)
{
    srv_model *m = &j->s->models[j->g.model];
    for (int i = 0; i < j->g.n; i++) {
        srv_choice *c = &j->ch[i];
        eng_req_params p = {0};
        p.prompt = j->g.prompt;
        p.n_prompt = j->g.n_prompt;
        p.max_tokens = j->g.max_tokens;
        p.sampling = j->g.sampling;
        p.sampling.seed += (uint64_t)i; /* n choices with one seed still differ */
        p.bias_tokens = j->g.bias_tokens;
        p.bias_values = j->g.bias_values;
        p.n_bias = j->g.n_bias;
        p.stops = (const char *const *)j->g.stops;
        p.n_stops = j->g.n_stops;
        p.ignore_eos = j->g.ignore_eos;
        p.grammar = j->g.grammar;
        p.grammar_len = j->g.grammar_len;
        p.loras = j->g.loras;
        p.lora_scales = j->g.lora_scales;
        p.n_loras = j->g.n_loras;
        p.logprobs = j->g.logprobs;
        p.top_logprobs = j->g.top_logprobs;
        p.priority = j->g.priority;
        p.on_event = on_event;
        p.ud = c;
        mica_status st = eng_sched_submit(m->sched, &p, &c->req, err);
        if (st) {
            /* Choices already submitted end as cancelled; this one never started. */
            for (int k = 0; k < i; k++) eng_req_cancel(j->ch[k].req);
            j->g.n = i;
            return st;
        }
        j->refs++;
    }
    return MICA_OK;
}

static srv_job *job_new(srv *s, struct MHD_Connection *conn, srv_gen *g)
{
    srv_job *j = core_calloc(1, sizeof *j);
    if (!j) return NULL;
    j->s = s;
    pthread_mutex_init(&j->mu, NULL);
    j->conn = conn;
    j->g = *g;
    memset(g, 0, sizeof *g);
    j->created = (int64_t)time(NULL);
    /* next_id starts at a random value (srv_start): ids are unique across restarts too, as
     * the request log needs. */
    snprintf(j->id, sizeof j->id, "%s-%016llx", j->g.chat ? "chatcmpl" : "cmpl",
             (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    core_buf_init(&j->out, 64u << 20);
    for (int i = 0; i < j->g.n; i++) {
        j->ch[i].job = j;
        j->ch[i].index = i;
        core_buf_init(&j->ch[i].text, 64u << 20);
        core_buf_init(&j->ch[i].content, 64u << 20);
        j->ch[i].tools = j->g.tools && j->g.tool_choice != SRV_TOOL_NONE;
        if (j->ch[i].tools)
            srv_tools_init(&j->ch[i].tp, s->models[j->g.model].tool_family,
                           j->g.parallel_tool_calls);
        if (j->g.logprobs && !j->g.stream)
            j->ch[i].lp = j->g.chat ? json_array() : completion_logprobs_new();
    }
    j->refs = 1; /* the connection's */
    pthread_mutex_lock(&s->jobs_mu);
    j->next = s->jobs;
    if (s->jobs) s->jobs->prev = j;
    s->jobs = j;
    pthread_mutex_unlock(&s->jobs_mu);
    return j;
}

static enum MHD_Result queue_stream(srv_job *j, struct MHD_Connection *conn)
{
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, j, stream_free);
    if (!r) return MHD_NO;
    j->refs++; /* the response's, dropped by stream_free */
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    const enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    srv_metrics_response(&j->s->metrics, MHD_HTTP_OK);
    return ret;
}

enum MHD_Result srv_job_start(srv *s, struct MHD_Connection *conn, srv_gen *g, srv_job **out)
{
    srv_error e;
    *out = NULL;
    srv_job *j = job_new(s, conn, g);
    if (!j) {
        srv_fail(&e, 500, NULL, "out of memory");
        return srv_send_error(s, conn, &e);
    }
    pthread_mutex_lock(&j->mu);
    mica_err err;
    const mica_status st = submit_choices(j, &err);
    if (st) {
        pthread_mutex_unlock(&j->mu);
        srv_fail(&e, st == MICA_EBUSY ? 429 : 400, NULL, "%s", err.msg);
        if (st == MICA_EBUSY) e.type = "rate_limit_exceeded";
        srv_job_detach(j);
        return srv_send_error(s, conn, &e);
    }
    enum MHD_Result ret = MHD_YES;
    if (j->g.stream) {
        ret = queue_stream(j, conn);
    } else {
        j->suspended = true;
        MHD_suspend_connection(conn);
    }
    pthread_mutex_unlock(&j->mu);
    *out = j;
    return ret;
}

bool srv_job_finished(srv_job *j)
{
    pthread_mutex_lock(&j->mu);
    const bool done = j->n_done == j->g.n;
    pthread_mutex_unlock(&j->mu);
    return done;
}

/* The chat message: content (null when only tool calls were written) and tool_calls. */
static json_t *response_message(const srv_choice *c)
{
    const core_buf *t = c->tools ? &c->content : &c->text;
    const bool calls = c->tools && c->tp.n_calls > 0;
    json_t *content =
        calls && t->len == 0 ? json_null() : json_text(t->data ? t->data : "", t->len);
    json_t *m = json_pack("{s:s,s:o}", "role", "assistant", "content", content);
    if (calls) {
        json_t *a = json_array();
        for (int i = 0; i < c->tp.n_calls; i++)
            json_array_append_new(a, srv_tool_call_json(&c->tp.calls[i], i, false));
        json_object_set_new(m, "tool_calls", a);
    }
    return m;
}

static json_t *response_choice(const srv_job *j, const srv_choice *c)
{
    json_t *lp = json_null();
    if (c->lp) lp = j->g.chat ? json_pack("{s:O}", "content", c->lp) : json_incref(c->lp);
    if (j->g.chat)
        return json_pack("{s:i,s:o,s:o,s:s}", "index", c->index, "message", response_message(c),
                         "logprobs", lp, "finish_reason", finish_name(c));
    json_t *text = json_text(c->text.data ? c->text.data : "", c->text.len);
    return json_pack("{s:i,s:o,s:o,s:s}", "index", c->index, "text", text, "logprobs", lp,
                     "finish_reason", finish_name(c));
}

enum MHD_Result srv_job_respond(srv_job *j, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&j->mu);
    for (int i = 0; i < j->g.n; i++)
        if (j->ch[i].finish == ENG_FINISH_ERROR || j->ch[i].finish == ENG_FINISH_CANCELLED) {
            srv_error e;
            srv_fail(&e, j->ch[i].finish == ENG_FINISH_ERROR ? 500 : 503, NULL, "%s",
                     j->ch[i].finish == ENG_FINISH_ERROR ? j->ch[i].error_msg
                                                         : "the server is shutting down");
            job_log(j, e.status);
            pthread_mutex_unlock(&j->mu);
            return srv_send_error(j->s, conn, &e);
        }
    json_t *body = envelope(j, j->g.chat ? "chat.completion" : "text_completion");
    json_t *choices = json_array();
    for (int i = 0; i < j->g.n; i++) json_array_append_new(choices, response_choice(j, &j->ch[i]));
    json_object_set_new(body, "choices", choices);
    json_object_set_new(body, "usage", usage_json(j));
    job_log(j, MHD_HTTP_OK);
    pthread_mutex_unlock(&j->mu);
    return srv_send_json(j->s, conn, MHD_HTTP_OK, body);
}

void srv_job_detach(srv_job *j)
{
    pthread_mutex_lock(&j->mu);
    j->gone = true;
    j->conn = NULL;
    j->suspended = false;
    for (int i = 0; i < j->g.n; i++)
        if (!j->ch[i].done && j->ch[i].req) eng_req_cancel(j->ch[i].req);
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
}

void srv_jobs_ping(srv *s)
{
    pthread_mutex_lock(&s->jobs_mu);
    for (srv_job *j = s->jobs; j; j = j->next) {
        pthread_mutex_lock(&j->mu);
        if (j->g.stream && j->suspended) {
            j->ping = true;
            job_wake(j);
        }
        pthread_mutex_unlock(&j->mu);
    }
    pthread_mutex_unlock(&s->jobs_mu);
}

void srv_jobs_cancel_all(srv *s)
{
    pthread_mutex_lock(&s->jobs_mu);
    for (srv_job *j = s->jobs; j; j = j->next) {
        pthread_mutex_lock(&j->mu);
        for (int i = 0; i < j->g.n; i++)
            if (!j->ch[i].done && j->ch[i].req) eng_req_cancel(j->ch[i].req);
        pthread_mutex_unlock(&j->mu);
    }
    pthread_mutex_unlock(&s->jobs_mu);
}
