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
    int n_tiers;
    srv_tier_cfg tiers[SRV_MAX_TIERS];
    char default_tier[32];
    bool trust_tier_header; /* honour X-Mica-Tier (set by a trusted proxy) */
    size_t max_body;        /* bytes; larger bodies get 413 */
    double ping_s;          /* SSE comment pings while a stream waits */
} srv_config;

/* Defaults: 127.0.0.1:8080, 4 slots, 2048 positions, tiers vip (10) > standard (5) >
 * batch (1), default tier standard, 1 MiB bodies, pings every 5 s. */
void srv_config_defaults(srv_config *c);
/* Reads a JSON config file over c (keys as in docs/gateway.md); errors name the file and key. */
mica_status srv_config_load(srv_config *c, const char *path, mica_err *err);
/* Adds "NAME=PATH" (or a bare PATH, named after its file name). */
mica_status srv_config_add_model(srv_config *c, const char *spec, mica_err *err);
/* Checks values and cross-references (default tier exists, names unique, ...). */
mica_status srv_config_check(const srv_config *c, mica_err *err);

typedef struct srv srv;

/* Loads the models and starts serving; returns once the port is bound and the models are
 * loaded (GET /health answers 503 before that only when models load in the background). */
mica_status srv_start(srv **out, const srv_config *c, mica_err *err);
uint16_t srv_port(const srv *s);
/* Cancels every request, finishes every connection, stops. */
void srv_stop(srv *s);

#endif
