/*
 * embed.c - POST /v1/embeddings: "input" as a string, a list of strings, a list of token ids
 * or a list of such lists; each becomes the L2-normalised mean of the model's final hidden
 * states (mica_embed). Runs on the HTTP thread that received it (the daemon has a pool of
 * them) in a context of its own per model, one request at a time. Called by http.c.
 */
#include "srv_int.h"

#include <stdlib.h>
#include <string.h>

#define SRV_MAX_INPUTS 256

mica_status srv_embed_init(srv_model *m, const srv_config *c, mica_err *err)
{
    pthread_mutex_init(&m->embed_mu, NULL);
    mica_context_params p = mica_context_default_params();
    p.n_ctx = c->n_ctx;
    p.n_seq = 1;
    p.n_threads = c->n_threads;
    return mica_context_new(&m->embed_ctx, m->m, p, err);
}

void srv_embed_free(srv_model *m)
{
    mica_context_free(m->embed_ctx);
    m->embed_ctx = NULL;
    pthread_mutex_destroy(&m->embed_mu);
}

/* One input as tokens: a string (tokenized with BOS) or a list of token ids. */
static bool input_tokens(const srv_model *m, json_t *in, size_t i, mica_token **toks, int32_t *n,
                         srv_error *e)
{
    const int32_t n_vocab = mica_model_n_vocab(m->m);
    if (json_is_string(in)) {
        const size_t len = json_string_length(in);
        size_t got;
        *toks = malloc((3 * len + 16) * sizeof **toks); /* mica_tokenize's most */
        mica_err err;
        if (!*toks) return srv_fail(e, 500, "input", "out of memory");
        if (mica_tokenize(m->m, json_string_value(in), len, true, false, *toks, 3 * len + 16, &got,
                          &err))
            return srv_fail(e, 400, "input", "input[%zu]: %s", i, err.msg);
        *n = (int32_t)got;
        return true;
    }
    if (!json_is_array(in) || json_array_size(in) == 0)
        return srv_fail(e, 400, "input", "input[%zu] must be a string or a list of token ids", i);
    *n = (int32_t)json_array_size(in);
    *toks = malloc((size_t)*n * sizeof **toks);
    if (!*toks) return srv_fail(e, 500, "input", "out of memory");
    for (int32_t k = 0; k < *n; k++) {
        json_t *t = json_array_get(in, (size_t)k);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= n_vocab)
            return srv_fail(e, 400, "input", "input[%zu][%d] is not a token id in [0, %d)", i, k,
                            n_vocab);
        (*toks)[k] = (mica_token)json_integer_value(t);
    }
    return true;
}

/* The inputs as a JSON list: one string or token list becomes a list of one. */
static json_t *input_list(json_t *input, srv_error *e)
{
    if (json_is_string(input)) return json_pack("[O]", input);
    if (!json_is_array(input) || json_array_size(input) == 0 ||
        json_array_size(input) > SRV_MAX_INPUTS) {
        srv_fail(e, 400, "input", "'input' must be a string or a non-empty list of at most %d",
                 SRV_MAX_INPUTS);
        return NULL;
    }
    if (json_is_integer(json_array_get(input, 0))) return json_pack("[O]", input);
    return json_incref(input);
}

static json_t *embedding_json(const float *v, int32_t n, bool base64)
{
    if (!base64) {
        json_t *a = json_array();
        for (int32_t i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
        return a;
    }
    /* OpenAI's base64: the little-endian float32 bytes. */
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *b = (const uint8_t *)v;
    const size_t len = (size_t)n * 4;
    char *out = malloc(len / 3 * 4 + 8);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        const uint32_t x = (uint32_t)b[i] << 16 | (i + 1 < len ? (uint32_t)b[i + 1] << 8 : 0) |
                           (i + 2 < len ? b[i + 2] : 0);
        out[o++] = abc[x >> 18 & 63];
        out[o++] = abc[x >> 12 & 63];
        out[o++] = i + 1 < len ? abc[x >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? abc[x & 63] : '=';
    }
    json_t *s = json_stringn(out, o);
    free(out);
    return s;
}

static bool parse_embed_request(srv *s, json_t *body, int *model, bool *base64, srv_error *e)
{
    json_t *mv = json_object_get(body, "model");
    if (!json_is_string(mv)) return srv_fail(e, 400, "model", "'model' must be a string");
    *model = -1;
    for (int i = 0; i < s->n_models; i++)
        if (!strcmp(s->models[i].name, json_string_value(mv))) *model = i;
    if (*model < 0) {
        srv_fail(e, 404, "model", "The model '%s' does not exist", json_string_value(mv));
        e->code = "model_not_found";
        return false;
    }
    json_t *fmt = json_object_get(body, "encoding_format");
    *base64 = json_is_string(fmt) && !strcmp(json_string_value(fmt), "base64");
    if (fmt && !json_is_null(fmt) && !*base64 &&
        !(json_is_string(fmt) && !strcmp(json_string_value(fmt), "float")))
        return srv_fail(e, 400, "encoding_format", "'encoding_format' must be float or base64");
    json_t *dims = json_object_get(body, "dimensions");
    if (dims && !json_is_null(dims) &&
        (!json_is_integer(dims) ||
         json_integer_value(dims) != mica_model_n_embd(s->models[*model].m)))
        return srv_fail(e, 400, "dimensions", "this model's embeddings have %d dimensions",
                        mica_model_n_embd(s->models[*model].m));
    return true;
}

/* Embeds every input into data[]; false with the error of the first bad input. */
static bool embed_all(srv_model *m, json_t *inputs, bool base64, const srv_config *c, json_t *data,
                      int64_t *n_tokens, srv_error *e)
{
    const int32_t ne = mica_model_n_embd(m->m);
    float *v = malloc((size_t)ne * sizeof *v);
    if (!v) return srv_fail(e, 500, NULL, "out of memory");
    bool ok = true;
    for (size_t i = 0; i < json_array_size(inputs) && ok; i++) {
        mica_token *toks = NULL;
        int32_t n = 0;
        ok = input_tokens(m, json_array_get(inputs, i), i, &toks, &n, e);
        if (ok && n > c->n_ctx) {
            ok = srv_fail(e, 400, "input", "input[%zu] has %d tokens; the context holds %d", i, n,
                          c->n_ctx);
            e->code = "context_length_exceeded";
        }
        mica_err err;
        if (ok) {
            pthread_mutex_lock(&m->embed_mu);
            ok = mica_embed(m->embed_ctx, 0, toks, n, v, &err) == MICA_OK ||
                 srv_fail(e, 500, NULL, "%s", err.msg);
            pthread_mutex_unlock(&m->embed_mu);
        }
        if (ok) {
            *n_tokens += n;
            json_array_append_new(data,
                                  json_pack("{s:s,s:i,s:o}", "object", "embedding", "index", (int)i,
                                            "embedding", embedding_json(v, ne, base64)));
        }
        free(toks);
    }
    free(v);
    return ok;
}

enum MHD_Result srv_embeddings(srv *s, struct MHD_Connection *conn, const char *body, size_t len,
                               const srv_key *key)
{
    srv_error e;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        srv_fail(&e, 400, NULL, "invalid JSON body: %s", root ? "not an object" : je.text);
        return srv_send_error(s, conn, &e);
    }
    int model = -1;
    bool base64 = false;
    json_t *inputs = NULL, *data = json_array();
    int64_t n_tokens = 0;
    const bool ok = parse_embed_request(s, root, &model, &base64, &e) &&
                    (!key->id[0] || srv_key_allows_model(key, s->models[model].name) ||
                     srv_fail(&e, 403, "model", "The key %s may not use the model '%s'", key->id,
                              s->models[model].name)) &&
                    srv_auth_admit(&s->auth, key, &e) &&
                    (inputs = input_list(json_object_get(root, "input"), &e)) &&
                    embed_all(&s->models[model], inputs, base64, &s->cfg, data, &n_tokens, &e);
    json_decref(inputs);
    enum MHD_Result ret;
    if (ok) {
        srv_auth_charge(&s->auth, key->id, n_tokens);
        ret = srv_send_json(s, conn, 200,
                            json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data,
                                      "model", s->models[model].name, "usage", "prompt_tokens",
                                      (json_int_t)n_tokens, "total_tokens", (json_int_t)n_tokens));
    } else {
        json_decref(data);
        ret = srv_send_error(s, conn, &e);
    }
    json_decref(root);
    return ret;
}
