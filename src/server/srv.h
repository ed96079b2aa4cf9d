/*
 * srv.h - the gateway (`mica serve`): an OpenAI-compatible HTTP API over libmicrohttpd in
 * front of one continuous-batching scheduler (src/engine/sched.h) per loaded model, with
 * priority tiers, SSE streaming and Prometheus metrics. What the CLI and the tests use.
 */
#ifndef MICA_SERVER_SRV_H
#define MICA_SERVER_SRV_H

#include "mica.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SRV_MAX_MODELS 8
#define SRV_MAX_TIERS  8
#define SRV_NAME_MAX   128
#define SRV_PATH_MAX   1024

#define SRV_MAX_LORAS       8  /* adapters per model */
#define SRV_MAX_LORAS_TOTAL 16 /* adapters in a config */

/* A LoRA adapter a request may ask for by name ("lora"), for one model. */
typedef struct srv_lora_cfg {
    char model[SRV_NAME_MAX]; /* "" until checked: the first model */
    char name[64];
    char path[SRV_PATH_MAX];
} srv_lora_cfg;

typedef struct srv_model_cfg {
    char name[SRV_NAME_MAX]; /* what clients put in "model" */
    char path[SRV_PATH_MAX]; /* GGUF file */
} srv_model_cfg;

/* A priority tier: requests of higher `priority` are admitted first (0 .. 15). */
typedef struct srv_tier_cfg {
    char name[32];
    int priority;
    int max_waiting; /* a full queue answers 429 */
} srv_tier_cfg;

typedef struct srv_config {
    char host[64];
    int port;       /* 0: any free port (tests) */
    int n_parallel; /* sequence slots per model */
    int n_ctx;      /* positions per sequence */
    int n_batch;    /* tokens per engine step */
    int n_threads;  /* 0: all CPUs */
    int n_spare;    /* KV rows kept for paused sequences */
    bool preempt;
    double aging_per_s;
    int n_models;
    srv_model_cfg models[SRV_MAX_MODELS];
    int n_loras;
    srv_lora_cfg loras[SRV_MAX_LORAS_TOTAL];
    int n_tiers;
    srv_tier_cfg tiers[SRV_MAX_TIERS];
    char default_tier[32];
    bool trust_tier_header;       /* honour X-Mica-Tier (set by a trusted proxy) */
    size_t max_body;              /* bytes; larger bodies get 413 */
    double ping_s;                /* SSE comment pings while a stream waits */
    char data_dir[SRV_PATH_MAX];  /* keys and the request log (default ./mica-data) */
    char keys_file[SRV_PATH_MAX]; /* default DATA_DIR/keys.json */
    char tls_cert[SRV_PATH_MAX], tls_key[SRV_PATH_MAX]; /* PEM files: HTTPS */
    bool insecure_http; /* allow plain HTTP on a non-loopback address */
    /* The request log (DATA_DIR/requests.db, src/store): rows older than log_retention_ms
     * are deleted (at most 72 h unless allow_long_retention); no_content_logs keeps every
     * prompt and answer out of it; redact masks personal numbers and addresses in them. */
    int64_t log_retention_ms;
    bool allow_long_retention, no_content_logs, redact;
} srv_config;

/* Defaults: 127.0.0.1:8080, 4 slots, 2048 positions, tiers vip (10) > standard (5) >
 * batch (1), default tier standard, 1 MiB bodies, pings every 5 s, request log kept 72 h. */
void srv_config_defaults(srv_config *c);
/* Reads a JSON config file over c (keys as in docs/gateway.md); errors name the file and key. */
mica_status srv_config_load(srv_config *c, const char *path, mica_err *err);
/* Adds "NAME=PATH" (or a bare PATH, named after its file name). */
mica_status srv_config_add_model(srv_config *c, const char *spec, mica_err *err);
/* Adds "[MODEL:]NAME=PATH": an adapter of MODEL (default: the first model) requests may ask
 * for as "lora": "NAME". */
mica_status srv_config_add_lora(srv_config *c, const char *spec, mica_err *err);
/* The name of the model an adapter is for. */
const char *srv_lora_model(const srv_config *c, const srv_lora_cfg *l);
/* Checks values and cross-references (default tier exists, names unique, ...). */
mica_status srv_config_check(const srv_config *c, mica_err *err);

/* ---- API keys (keys.c) ------------------------------------------------------------------ */

typedef struct srv_key {
    char id[24];      /* "key_" + 12 hex digits: what logs and operators see */
    uint8_t hash[32]; /* SHA-256 of the secret */
    char tier[32];
    char models[SRV_MAX_MODELS][SRV_NAME_MAX]; /* none: every model */
    int n_models;
    int rpm, tpm; /* requests / tokens per minute; 0: unlimited */
    bool no_content_logs, revoked;
    int64_t created; /* unix seconds */
} srv_key;

typedef struct srv_keyring {
    srv_key *keys;
    int n;
    int64_t mtime_ns; /* of the file when loaded */
} srv_keyring;

/* A missing file is an empty keyring. */
mica_status srv_keys_load(srv_keyring *k, const char *path, mica_err *err);
/* Writes PATH.tmp (mode 0600) and renames it over PATH. */
mica_status srv_keys_save(const srv_keyring *k, const char *path, mica_err *err);
/* Adds a key like tmpl (tier, models, limits) with a new random secret written to secret
 * ("mk-" + 64 hex digits; cap >= 68); only its hash is kept. */
mica_status srv_keys_add(srv_keyring *k, const srv_key *tmpl, char *secret, size_t cap,
                         mica_err *err);
mica_status srv_keys_revoke(srv_keyring *k, const char *id, mica_err *err);
/* The index of the key whose secret this is (revoked ones included), or -1. */
int srv_keys_find(const srv_keyring *k, const char *secret, size_t len);
bool srv_key_allows_model(const srv_key *k, const char *model);
void srv_keys_free(srv_keyring *k);
/* DATA_DIR/keys.json unless the config names a file. */
void srv_config_keys_path(const srv_config *c, char *out, size_t cap);

typedef struct srv srv;

/* Loads the models and starts serving; returns once the port is bound and the models are
 * loaded (GET /health answers 503 before that only when models load in the background). */
mica_status srv_start(srv **out, const srv_config *c, mica_err *err);
uint16_t srv_port(const srv *s);
/* Cancels every request, finishes every connection, stops. */
void srv_stop(srv *s);

#endif
