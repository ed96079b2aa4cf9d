/*
 * openai.c - parses and validates the body of POST /v1/chat/completions and
 * /v1/completions into a srv_gen (tokens, sampling, stops, biases, tier, n, streaming),
 * with OpenAI's error messages naming the offending parameter. Sampling defaults are
 * llama.cpp's (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05). Called by http.c.
 */
#include "srv_int.h"
#include "grammar/grammar.h"
#include "grammar/schema_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool srv_fail(srv_error *e, int status, const char *param, const char *fmt, ...)
{
    e->status = status;
    e->type = status >= 500 ? "server_error" : "invalid_request_error";
    e->code = NULL;
    e->retry_after = 0;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

void srv_gen_free(srv_gen *g)
{
    free(g->prompt);
    free(g->log_prompt);
    json_decref(g->tools);
    free(g->grammar);
    free(g->bias_tokens);
    free(g->bias_values);
    for (int i = 0; i < g->n_stops; i++) free(g->stops[i]);
    memset(g, 0, sizeof *g);
}

/* ---- typed fields ---------------------------------------------------------------------- */

static bool get_num(json_t *body, const char *key, double lo, double hi, double *out, srv_error *e)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return srv_fail(e, 400, key, "'%s' must be a number", key);
    const double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return srv_fail(e, 400, key, "'%s' must be between %g and %g (got %g)", key, lo, hi, d);
    *out = d;
    return true;
}

static bool get_int(json_t *body, const char *key, long long lo, long long hi, long long *out,
                    srv_error *e)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_integer(v)) return srv_fail(e, 400, key, "'%s' must be an integer", key);
    const long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return srv_fail(e, 400, key, "'%s' must be between %lld and %lld (got %lld)", key, lo, hi,
                        x);
    *out = x;
    return true;
}

static bool get_bool(json_t *body, const char *key, bool *out, srv_error *e)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return srv_fail(e, 400, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return true;
}

/* ---- parts of a request ---------------------------------------------------------------- */

static bool parse_model(srv *s, json_t *body, srv_gen *g, srv_error *e)
{
    json_t *v = json_object_get(body, "model");
    if (!json_is_string(v)) return srv_fail(e, 400, "model", "'model' must be a string");
    for (int i = 0; i < s->n_models; i++)
        if (!strcmp(s->models[i].name, json_string_value(v))) {
            g->model = i;
            return true;
        }
    srv_fail(e, 404, "model", "The model '%s' does not exist", json_string_value(v));
    e->code = "model_not_found";
    return false;
}

static bool parse_stops(json_t *body, srv_gen *g, srv_error *e)
{
    json_t *v = json_object_get(body, "stop");
    if (!v || json_is_null(v)) return true;
    json_t *list = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
    bool ok = json_is_array(list) && json_array_size(list) <= SRV_MAX_STOPS;
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        if (!ok) break;
        ok = json_is_string(s) && json_string_length(s) > 0 && json_string_length(s) <= 128;
        if (ok && !(g->stops[g->n_stops++] = strdup(json_string_value(s)))) ok = false;
    }
    json_decref(list);
    return ok || srv_fail(e, 400, "stop",
                          "'stop' must be a string or a list of at most %d non-empty strings "
                          "of at most 128 bytes",
                          SRV_MAX_STOPS);
}

static bool parse_logit_bias(json_t *body, int32_t n_vocab, srv_gen *g, srv_error *e)
{
    json_t *v = json_object_get(body, "logit_bias");
    if (!v || json_is_null(v)) return true;
    if (!json_is_object(v) || json_object_size(v) > 1024)
        return srv_fail(e, 400, "logit_bias",
                        "'logit_bias' must be an object of at most 1024 token ids");
    const size_t n = json_object_size(v);
    g->bias_tokens = malloc((n ? n : 1) * sizeof *g->bias_tokens);
    g->bias_values = malloc((n ? n : 1) * sizeof *g->bias_values);
    if (!g->bias_tokens || !g->bias_values) return srv_fail(e, 500, "logit_bias", "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        char *end;
        const long id = strtol(key, &end, 10);
        if (*key == '\0' || *end || id < 0 || id >= n_vocab)
            return srv_fail(e, 400, "logit_bias",
                            "logit_bias key '%s' is not a token id in "
                            "[0, %d)",
                            key, n_vocab);
        if (!json_is_number(val) || fabs(json_number_value(val)) > 100)
            return srv_fail(e, 400, "logit_bias",
                            "logit_bias['%s'] must be a number from "
                            "-100 to 100",
                            key);
        g->bias_tokens[g->n_bias] = (mica_token)id;
        /* OpenAI: -100 bans the token, 100 makes it the only choice. */
        const double b = json_number_value(val);
        g->bias_values[g->n_bias++] = b <= -100 ? -INFINITY : (float)b;
    }
    return true;
}

static bool parse_sampling(json_t *body, srv_gen *g, srv_error *e)
{
    mica_sampler_params *p = &g->sampling;
    *p = mica_sampler_default_params();
    double d;
    long long x;
    d = p->temperature;
    if (!get_num(body, "temperature", 0, 2, &d, e)) return false;
    p->temperature = (float)d;
    d = p->top_p;
    if (!get_num(body, "top_p", 0, 1, &d, e)) return false;
    p->top_p = (float)d;
    d = p->min_p;
    if (!get_num(body, "min_p", 0, 1, &d, e)) return false;
    p->min_p = (float)d;
    x = p->top_k;
    if (!get_int(body, "top_k", 0, 1 << 30, &x, e)) return false;
    p->top_k = (int32_t)x;
    d = 0;
    if (!get_num(body, "presence_penalty", -2, 2, &d, e)) return false;
    p->presence_penalty = (float)d;
    d = 0;
    if (!get_num(body, "frequency_penalty", -2, 2, &d, e)) return false;
    p->frequency_penalty = (float)d;
    d = 1;
    if (!get_num(body, "repetition_penalty", 0.01, 100, &d, e)) return false;
    p->repeat_penalty = (float)d;
    x = -1;
    if (!get_int(body, "seed", INT64_MIN, INT64_MAX, &x, e)) return false;
    g->seed_given = json_object_get(body, "seed") && !json_is_null(json_object_get(body, "seed"));
    p->seed = g->seed_given ? (uint64_t)x : (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)g;
    return true;
}

static bool parse_lengths(json_t *body, srv_gen *g, srv_error *e)
{
    long long n = 1, max = -1;
    if (!get_int(body, "n", 1, SRV_MAX_CHOICES, &n, e)) return false;
    g->n = (int)n;
    if (!get_int(body, "max_tokens", 1, 1 << 24, &max, e)) return false;
    if (!get_int(body, "max_completion_tokens", 1, 1 << 24, &max, e)) return false;
    g->max_tokens = (int32_t)max;
    return get_bool(body, "ignore_eos", &g->ignore_eos, e);
}

static bool parse_logprobs(json_t *body, srv_gen *g, srv_error *e)
{
    long long top = 0;
    json_t *lp = json_object_get(body, "logprobs");
    if (g->chat) {
        if (!get_bool(body, "logprobs", &g->logprobs, e)) return false;
        if (!get_int(body, "top_logprobs", 0, ENG_MAX_TOP_LOGPROBS, &top, e)) return false;
        if (top > 0 && !g->logprobs)
            return srv_fail(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    } else if (lp && !json_is_null(lp)) {
        /* /v1/completions: logprobs is the number of alternatives. */
        if (!get_int(body, "logprobs", 0, ENG_MAX_TOP_LOGPROBS, &top, e)) return false;
        g->logprobs = true;
    }
    g->top_logprobs = (int)top;
    return true;
}

static bool parse_stream(json_t *body, srv_gen *g, srv_error *e)
{
    if (!get_bool(body, "stream", &g->stream, e)) return false;
    json_t *so = json_object_get(body, "stream_options");
    if (!so || json_is_null(so)) return true;
    if (!json_is_object(so))
        return srv_fail(e, 400, "stream_options", "'stream_options' must be an object");
    if (!g->stream)
        return srv_fail(e, 400, "stream_options",
                        "'stream_options' is only allowed when 'stream' is true");
    return get_bool(so, "include_usage", &g->include_usage, e);
}

/* A request may lower its priority (service_tier, priority), never raise it. */
static bool parse_tier(srv *s, json_t *body, srv_gen *g, srv_error *e)
{
    g->priority = s->cfg.tiers[g->tier].priority;
    json_t *st = json_object_get(body, "service_tier");
    if (st && !json_is_null(st)) {
        if (!json_is_string(st)) return srv_fail(e, 400, "service_tier", "must be a string");
        const char *name = json_string_value(st);
        int want = -1;
        if (!strcmp(name, "auto") || !strcmp(name, "default")) want = g->tier;
        if (!strcmp(name, "flex")) name = "batch";
        for (int i = 0; i < s->cfg.n_tiers && want < 0; i++)
            if (!strcmp(s->cfg.tiers[i].name, name)) want = i;
        if (want < 0)
            return srv_fail(e, 400, "service_tier", "unknown service_tier '%s'",
                            json_string_value(st));
        if (s->cfg.tiers[want].priority <= g->priority) {
            g->tier = want;
            g->priority = s->cfg.tiers[want].priority;
        }
    }
    long long prio = g->priority;
    if (!get_int(body, "priority", 0, ENG_MAX_PRIORITY, &prio, e)) return false;
    if (prio < g->priority) g->priority = (int)prio;
    return true;
}

/* add_special: the tokenizer adds BOS (a chat template may have written it already). */
static bool tokenize(srv *s, srv_gen *g, const char *text, size_t len, bool add_special,
                     srv_error *e, const char *param)
{
    const mica_model *m = s->models[g->model].m;
    size_t cap = 3 * len + 16, n; /* the most mica_tokenize writes for len bytes */
    g->prompt = malloc(cap * sizeof *g->prompt);
    if (!g->prompt) return srv_fail(e, 500, param, "out of memory");
    mica_err err;
    if (mica_tokenize(m, text, len, add_special, true, g->prompt, cap, &n, &err))
        return srv_fail(e, 400, param, "cannot tokenize the prompt: %s", err.msg);
    g->n_prompt = (int32_t)n;
    return true;
}

/* "disable_logs": true keeps this request's prompt and answer out of every log. */
static bool parse_disable_logs(json_t *body, srv_gen *g, srv_error *e)
{
    bool off = false;
    if (!get_bool(body, "disable_logs", &off, e)) return false;
    g->no_content_logs |= off;
    return true;
}

/* Keeps a copy of the prompt text for the request log, unless logging content is off. */
static bool keep_log_prompt(srv_gen *g, const char *text, size_t len, srv_error *e)
{
    if (g->no_content_logs) return true;
    g->log_prompt = malloc(len + 1);
    if (!g->log_prompt) return srv_fail(e, 500, NULL, "out of memory");
    memcpy(g->log_prompt, text, len);
    g->log_prompt[len] = '\0';
    return true;
}

static bool parse_prompt(srv *s, json_t *body, srv_gen *g, srv_error *e)
{
    if (g->chat) {
        const srv_model *m = &s->models[g->model];
        core_buf text;
        core_buf_init(&text, s->cfg.max_body * 4 + 4096);
        json_t *tools = g->tool_choice != SRV_TOOL_NONE ? g->tools : NULL;
        bool has_bos = false;
        bool ok = srv_chat_render(m, json_object_get(body, "messages"), tools, &text, &has_bos, e);
        ok = ok && tokenize(s, g, text.data ? text.data : "", text.len, !has_bos, e, "messages") &&
             keep_log_prompt(g, text.data ? text.data : "", text.len, e);
        core_buf_free(&text);
        return ok;
    }
    json_t *p = json_object_get(body, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (json_is_string(p))
        return tokenize(s, g, json_string_value(p), json_string_length(p), true, e, "prompt") &&
               keep_log_prompt(g, json_string_value(p), json_string_length(p), e);
    if (!json_is_array(p) || json_array_size(p) == 0)
        return srv_fail(e, 400, "prompt",
                        "'prompt' must be a string, a list of one string or a list of token ids");
    const int32_t n_vocab = mica_model_n_vocab(s->models[g->model].m);
    g->n_prompt = (int32_t)json_array_size(p);
    g->prompt = malloc((size_t)g->n_prompt * sizeof *g->prompt);
    if (!g->prompt) return srv_fail(e, 500, "prompt", "out of memory");
    for (int32_t i = 0; i < g->n_prompt; i++) {
        json_t *t = json_array_get(p, (size_t)i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= n_vocab)
            return srv_fail(e, 400, "prompt", "prompt[%d] is not a token id in [0, %d)", i,
                            n_vocab);
        g->prompt[i] = (mica_token)json_integer_value(t);
    }
    char *ids = g->no_content_logs ? NULL : json_dumps(p, JSON_COMPACT);
    const bool ok = !ids || keep_log_prompt(g, ids, strlen(ids), e);
    free(ids);
    return ok;
}

/* The GBNF of response_format: text (none), json_object, or json_schema's schema. */
static bool response_format_gbnf(json_t *rf, core_buf *out, srv_error *e)
{
    const char *type = json_string_value(json_object_get(rf, "type"));
    mica_err err;
    if (!json_is_object(rf) || !type)
        return srv_fail(e, 400, "response_format",
                        "'response_format' must be an object with a 'type'");
    if (!strcmp(type, "text")) return true;
    if (!strcmp(type, "json_object")) {
        if (gram_schema_any_object(out, &err))
            return srv_fail(e, 500, "response_format", "%s", err.msg);
        return true;
    }
    if (strcmp(type, "json_schema"))
        return srv_fail(e, 400, "response_format", "unknown response_format type '%s'", type);
    json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
    if (!schema)
        return srv_fail(e, 400, "response_format",
                        "'response_format.json_schema.schema' is missing");
    if (gram_schema_gbnf(schema, out, &err))
        return srv_fail(e, 400, "response_format", "invalid JSON schema: %s", err.msg);
    return true;
}

/* What the output must follow: response_format, or llama.cpp's "grammar" (GBNF text). */
static bool parse_structured(json_t *body, srv_gen *g, srv_error *e)
{
    json_t *rf = json_object_get(body, "response_format");
    json_t *gr = json_object_get(body, "grammar");
    if (rf && json_is_null(rf)) rf = NULL;
    if (gr && json_is_null(gr)) gr = NULL;
    if (!rf && !gr) return true;
    if (rf && gr)
        return srv_fail(e, 400, "grammar", "'grammar' and 'response_format' exclude each other");
    if (gr && !json_is_string(gr)) return srv_fail(e, 400, "grammar", "'grammar' must be a string");
    core_buf gbnf;
    core_buf_init(&gbnf, 64u << 20);
    bool ok = gr ? core_buf_append(&gbnf, json_string_value(gr), json_string_length(gr)) ||
                       srv_fail(e, 400, "grammar", "'grammar' is too large")
                 : response_format_gbnf(rf, &gbnf, e);
    gram *parsed = NULL;
    mica_err err;
    if (ok && gbnf.len && gram_parse(&parsed, gbnf.data, gbnf.len, NULL, &err))
        ok = srv_fail(e, 400, gr ? "grammar" : "response_format", "%s", err.msg);
    gram_free(parsed);
    if (ok && gbnf.len) {
        g->grammar = gbnf.data; /* the job owns it now */
        g->grammar_len = gbnf.len;
    } else {
        core_buf_free(&gbnf);
    }
    return ok;
}

/* One entry of "lora": "NAME", {"name": NAME, "scale": S} or llama-server's {"id": I,
 * "scale": S}. */
static bool lora_entry(const srv_model *m, json_t *v, size_t i, srv_gen *g, srv_error *e)
{
    json_t *name = json_is_string(v) ? v : json_object_get(v, "name");
    json_t *id = json_object_get(v, "id"), *scale = json_object_get(v, "scale");
    int k = -1;
    if (json_is_string(name)) {
        for (int j = 0; j < m->n_loras; j++)
            if (!strcmp(m->lora_names[j], json_string_value(name))) k = j;
        if (k < 0)
            return srv_fail(e, 400, "lora", "the model '%s' has no LoRA adapter '%s'", m->name,
                            json_string_value(name));
    } else if (json_is_integer(id)) {
        k = json_integer_value(id) >= 0 && json_integer_value(id) < m->n_loras
                ? (int)json_integer_value(id)
                : -1;
        if (k < 0)
            return srv_fail(e, 400, "lora", "lora[%zu]: no adapter with id %lld", i,
                            (long long)json_integer_value(id));
    } else {
        return srv_fail(e, 400, "lora",
                        "lora[%zu] must be a name or {\"name\" or \"id\", \"scale\"}", i);
    }
    if (scale && !json_is_number(scale))
        return srv_fail(e, 400, "lora", "lora[%zu].scale must be a number", i);
    g->loras[g->n_loras] = m->loras[k];
    g->lora_scales[g->n_loras++] = scale ? (float)json_number_value(scale) : 1.0f;
    return true;
}

/* "lora": the model's adapters (configured by name) to apply to this request. */
static bool parse_lora(srv *s, json_t *body, srv_gen *g, srv_error *e)
{
    json_t *v = json_object_get(body, "lora");
    if (!v || json_is_null(v)) return true;
    const srv_model *m = &s->models[g->model];
    json_t *list = json_is_array(v) ? json_incref(v) : json_pack("[O]", v);
    bool ok = json_array_size(list) <= SRV_MAX_LORAS ||
              srv_fail(e, 400, "lora", "at most %d adapters", SRV_MAX_LORAS);
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x)
    {
        if (!ok) break;
        ok = lora_entry(m, x, i, g, e);
    }
    json_decref(list);
    return ok;
}

static bool check_length(srv *s, srv_gen *g, srv_error *e)
{
    if (g->n_prompt < s->cfg.n_ctx) return true;
    srv_fail(e, 400, g->chat ? "messages" : "prompt",
             "This model's maximum context length is %d tokens. However, your %s resulted in %d "
             "tokens.",
             s->cfg.n_ctx, g->chat ? "messages" : "prompt", g->n_prompt);
    e->code = "context_length_exceeded";
    return false;
}

bool srv_parse_gen(srv *s, const char *body, size_t len, bool chat, srv_gen *g, srv_error *e)
{
    const int tier = g->tier;
    const bool no_content = g->no_content_logs;
    memset(g, 0, sizeof *g);
    g->tier = tier;
    g->no_content_logs = no_content;
    g->chat = chat;
    g->endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return srv_fail(e, 400, NULL, "invalid JSON body: %s (at byte %d)", je.text, je.position);
    bool ok = json_is_object(root) || srv_fail(e, 400, NULL, "the body must be a JSON object");
    ok = ok && parse_disable_logs(root, g, e) && parse_model(s, root, g, e) &&
         parse_stream(root, g, e) && parse_lengths(root, g, e) && parse_sampling(root, g, e) &&
         parse_stops(root, g, e) && parse_logprobs(root, g, e) &&
         parse_logit_bias(root, mica_model_n_vocab(s->models[g->model].m), g, e) &&
         parse_tier(s, root, g, e) && srv_parse_tools(root, g, e) && parse_structured(root, g, e) &&
         srv_tools_grammar(g, s->models[g->model].tool_family, e) && parse_lora(s, root, g, e) &&
         parse_prompt(s, root, g, e) && check_length(s, g, e);
    json_decref(root);
    if (!ok) srv_gen_free(g);
    return ok;
}
