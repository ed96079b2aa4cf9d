/*
 * srv_int.h - what the gateway's files share: the server, its models, a generation job (one
 * HTTP request's choices and the bytes they produce), the metrics, and the helpers that
 * parse OpenAI requests and render responses. Internal to src/server.
 */
#ifndef MICA_SERVER_SRV_INT_H
#define MICA_SERVER_SRV_INT_H

#include "core/core.h"
#include "engine/sched.h"
#include "store/store.h"
#include "srv.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#define SRV_MAX_CHOICES 8
#define SRV_MAX_STOPS   4

/* ---- metrics (metrics.c) --------------------------------------------------------------- */

#define SRV_N_BUCKETS 14

typedef struct srv_histogram {
    uint64_t counts[SRV_N_BUCKETS]; /* cumulative at render time; per bucket here */
    uint64_t n;
    double sum;
} srv_histogram;

typedef enum srv_hist_kind {
    SRV_H_QUEUE,
    SRV_H_TTFT,
    SRV_H_ITL,
    SRV_H_E2E,
    SRV_H_COUNT
} srv_hist_kind;

/* Per model and tier. */
typedef struct srv_series {
    srv_histogram h[SRV_H_COUNT];
    uint64_t finish[5]; /* by eng_finish */
    uint64_t prompt_tokens, gen_tokens;
} srv_series;

typedef struct srv_metrics {
    pthread_mutex_t mu;
    srv_series series[SRV_MAX_MODELS][SRV_MAX_TIERS];
    uint64_t responses[6]; /* by HTTP status class: 2xx 4xx(other) 400 404 413 429 5xx */
    uint64_t by_code[600];
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_free(srv_metrics *m);
void srv_metrics_observe(srv_metrics *m, int model, int tier, srv_hist_kind k, double seconds);
void srv_metrics_response(srv_metrics *m, int status);

/* ---- the server ---------------------------------------------------------------------- */

typedef struct srv_model {
    char name[SRV_NAME_MAX];
    mica_model *m;
    eng_sched *sched;
    struct tmpl_chat *chat;          /* its chat format (src/template) */
    mica_lora *loras[SRV_MAX_LORAS]; /* the adapters requests may ask for, by name */
    char lora_names[SRV_MAX_LORAS][64];
    int n_loras;
    int tool_family; /* srv_tool_family of its template */
    int64_t created;
    mica_context *embed_ctx; /* /v1/embeddings, one request at a time */
    pthread_mutex_t embed_mu;
    bool embed_ready;
} srv_model;

mica_status srv_embed_init(srv_model *m, const srv_config *c, mica_err *err);
void srv_embed_free(srv_model *m);

typedef struct srv_job srv_job;

/* ---- API keys and rate limits (auth.c) -------------------------------------------------- */

typedef struct srv_bucket {
    char id[24];
    double requests, tokens; /* what is left this minute */
    double last;
    bool fresh;
} srv_bucket;

typedef struct srv_auth {
    pthread_mutex_t mu;
    char path[SRV_PATH_MAX];
    srv_keyring ring;
    srv_bucket *buckets;
    int n_buckets;
} srv_auth;

struct srv {
    srv_config cfg;
    struct MHD_Daemon *daemon;
    uint16_t port;
    srv_model models[SRV_MAX_MODELS];
    int n_models;
    atomic_bool ready;
    srv_metrics metrics;
    pthread_mutex_t jobs_mu; /* guards the list of streaming jobs (pings, shutdown) */
    srv_job *jobs;
    pthread_t ticker;
    bool ticker_started;
    pthread_mutex_t tick_mu;
    pthread_cond_t tick_cv;
    bool quit;
    atomic_uint_fast64_t next_id;
    srv_auth auth;
    bool auth_ready;
    store *log; /* the request log (DATA_DIR/requests.db) */
};

/* ---- tool calling (tools.c) ------------------------------------------------------------ */

#define SRV_MAX_TOOL_CALLS 16

/* How a model writes tool calls (picked from its chat template's text). */
typedef enum srv_tool_family {
    SRV_TOOLS_HERMES,
    SRV_TOOLS_LLAMA3,
    SRV_TOOLS_MISTRAL
} srv_tool_family;

typedef enum srv_tool_choice {
    SRV_TOOL_NONE,
    SRV_TOOL_AUTO,
    SRV_TOOL_REQUIRED,
    SRV_TOOL_NAMED
} srv_tool_choice;

typedef struct srv_tool_call {
    char id[32];     /* "call_" + 24 hex digits */
    char *name;      /* owned */
    char *arguments; /* owned: JSON text, as OpenAI sends it */
} srv_tool_call;

/* The incremental parser of one choice's output. */
typedef struct srv_tool_parser {
    srv_tool_family family;
    bool parallel;         /* false: calls after the first are dropped */
    bool in_call, decided; /* inside a call; (Llama 3) whether the answer is calls */
    core_buf held;         /* text that may still become part of a call */
    srv_tool_call calls[SRV_MAX_TOOL_CALLS];
    int n_calls;
} srv_tool_parser;

srv_tool_family srv_tools_family(const char *template_text);
void srv_tools_init(srv_tool_parser *p, srv_tool_family family, bool parallel);
void srv_tools_free(srv_tool_parser *p);
/* Feeds generated text: appends to content what is surely not a call; completed calls are
 * added to p->calls. srv_tools_finish releases whatever is still held as content. False only
 * when memory runs out. */
bool srv_tools_feed(srv_tool_parser *p, const char *text, size_t len, core_buf *content);
bool srv_tools_finish(srv_tool_parser *p, core_buf *content);
/* {"id", "type": "function", "function": {"name", "arguments"}} (+ "index" for streams). */
json_t *srv_tool_call_json(const srv_tool_call *c, int index, bool with_index);

/* ---- a parsed generation request (openai.c) -------------------------------------------- */

typedef struct srv_gen {
    bool chat, stream, include_usage, logprobs, echo;
    int model;          /* index in srv.models */
    int tier;           /* index in cfg.tiers */
    int priority;       /* the tier's, or lower when asked */
    int n;              /* choices */
    int32_t max_tokens; /* -1: until the context is full */
    int top_logprobs;
    mica_sampler_params sampling;
    bool seed_given;
    bool ignore_eos;
    mica_token *prompt; /* owned */
    int32_t n_prompt;
    char *stops[SRV_MAX_STOPS];
    int n_stops;
    mica_token *bias_tokens; /* owned */
    float *bias_values;
    int32_t n_bias;
    char key_id[24];      /* the caller's key, "" without keys */
    bool no_content_logs; /* keep prompt and answer out of every log (set before parsing too) */
    char *log_prompt;     /* owned: the prompt as the request log stores it; NULL when not */
    json_t *tools;        /* owned: the request's tools (NULL: none) */
    char *grammar;        /* owned: GBNF from response_format or "grammar" (NULL: none) */
    mica_lora *loras[SRV_MAX_LORAS]; /* "lora": the model's adapters to apply */
    float lora_scales[SRV_MAX_LORAS];
    int n_loras;
    size_t grammar_len;
    srv_tool_choice tool_choice;
    char tool_name[72]; /* SRV_TOOL_NAMED */
    bool parallel_tool_calls;
    const char *endpoint; /* "/v1/chat/completions" or "/v1/completions" */
} srv_gen;

/* An OpenAI-style error to answer with. */
typedef struct srv_error {
    int status;
    const char *type; /* "invalid_request_error", ... */
    char param[64];
    const char *code; /* NULL or e.g. "model_not_found" */
    char message[512];
    int retry_after; /* seconds, for 429 */
} srv_error;

mica_status srv_auth_init(srv_auth *a, const srv_config *c, mica_err *err);
void srv_auth_free(srv_auth *a);
bool srv_auth_enabled(srv_auth *a);
/* Fills *key with the caller's key (all zero when no keys are configured); false with a 401
 * in *e when the key is missing, wrong or revoked. */
bool srv_auth_check(srv_auth *a, struct MHD_Connection *conn, srv_key *key, srv_error *e);
/* Takes one request from the key's per-minute allowance; false with a 429 when used up. */
bool srv_auth_admit(srv_auth *a, const srv_key *key, srv_error *e);
/* Counts tokens a request of the key used against its tokens per minute. */
void srv_auth_charge(srv_auth *a, const char *key_id, int64_t tokens);

bool srv_fail(srv_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Parses and validates a /v1/chat/completions (chat) or /v1/completions body. The tier the
 * caller is entitled to comes in *g (g->tier); the body may only lower it. g->no_content_logs
 * set by the caller (header, key, server) stays set; "disable_logs": true in the body sets it. */
bool srv_parse_gen(srv *s, const char *body, size_t len, bool chat, srv_gen *g, srv_error *e);
void srv_gen_free(srv_gen *g);
/* tools, tool_choice, parallel_tool_calls (tools.c). */
bool srv_parse_tools(json_t *body, srv_gen *g, srv_error *e);
/* tool_choice required or named: the grammar that makes the answer one call (or several, with
 * parallel_tool_calls) in the family's markup, arguments following the function's parameters
 * when it is "strict". Sets g->grammar; a 400 when response_format or grammar is also given. */
bool srv_tools_grammar(srv_gen *g, srv_tool_family family, srv_error *e);

/* Renders the prompt of a chat request (and its tools, NULL: none) with the model's template
 * or format (chat.c): a
 * template's error is a 500 naming the template line. A prompt that starts with the BOS
 * text is tokenized without another BOS. */
bool srv_chat_render(const srv_model *m, json_t *messages, json_t *tools, core_buf *out,
                     bool *has_bos, srv_error *e);
/* Loads the model's chat format (a warning on stderr when its template does not parse and a
 * built-in format serves instead); srv_chat_free frees it. */
mica_status srv_chat_init(srv_model *m, mica_err *err);
void srv_chat_free(srv_model *m);

/* ---- jobs (job.c) ---------------------------------------------------------------------- */

/* Starts the engine requests of g; on success the job owns g's buffers. For a stream the
 * response is queued at once; otherwise the connection is suspended until the job ends. */
enum MHD_Result srv_job_start(srv *s, struct MHD_Connection *conn, srv_gen *g, srv_job **out);
/* For a non-streaming job whose connection was resumed: queues the JSON response. */
enum MHD_Result srv_job_respond(srv_job *j, struct MHD_Connection *conn);
bool srv_job_finished(srv_job *j);
/* The connection is gone (completed or failed): cancel what still runs, drop its ref. */
void srv_job_detach(srv_job *j);
/* Ticker: wakes suspended streams so they send a ping; on shutdown, cancels them all. */
void srv_jobs_ping(srv *s);
void srv_jobs_cancel_all(srv *s);

/* ---- responses (http.c) ---------------------------------------------------------------- */

enum MHD_Result srv_send_json(srv *s, struct MHD_Connection *conn, int status, json_t *body);
enum MHD_Result srv_send_error(srv *s, struct MHD_Connection *conn, const srv_error *e);
enum MHD_Result srv_send_text(srv *s, struct MHD_Connection *conn, int status,
                              const char *content_type, const char *text, size_t len,
                              int retry_after);

/* POST /v1/embeddings (embed.c) */
enum MHD_Result srv_embeddings(srv *s, struct MHD_Connection *conn, const char *body, size_t len,
                               const srv_key *key);

/* /metrics (metrics.c) */
void srv_metrics_render(srv *s, core_buf *out);

#endif
