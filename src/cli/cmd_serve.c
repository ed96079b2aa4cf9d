/*
 * cmd_serve.c - `mica serve`: reads the config file and flags (flags win), starts the
 * gateway (src/server) and runs until SIGINT or SIGTERM, then stops cleanly (running
 * requests end, connections close). Built only with the gateway (MICA_SERVER).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "server/srv.h"
#include "store/store.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char serve_help[] =
    "usage: mica serve [-c mica.json] [-m NAME=PATH ...] [options]\n"
    "\n"
    "Serves the models over an OpenAI-compatible HTTP API: POST /v1/chat/completions,\n"
    "POST /v1/completions (streaming with SSE or not), GET /v1/models, GET /health,\n"
    "GET /metrics (Prometheus). Each model runs its own continuous-batching engine.\n"
    "\n"
    "  -c, --config FILE       JSON config (see docs/gateway.md); flags override it\n"
    "  -m, --model NAME=PATH   a GGUF model served as NAME (repeatable; PATH alone: named\n"
    "                          after the file; none: the embedded mica-sensor-moe)\n"
    "      --lora [MODEL:]NAME=PATH  a LoRA adapter (llama.cpp GGUF) of MODEL (default: the\n"
    "                          first) that requests apply with \"lora\": \"NAME\" (repeatable)\n"
    "      --host ADDR         IPv4 address to listen on (default 127.0.0.1)\n"
    "      --port N            port (default 8080; 0 = any free port, printed at start)\n"
    "      --parallel N        sequences generating at once per model (default 4)\n"
    "      --ctx N             positions per sequence: prompt + answer (default 2048)\n"
    "      --batch N           tokens per engine step (default 256)\n"
    "  -t, --threads N         threads per model (default: all CPUs)\n"
    "      --no-preempt        never pause a running request for a more important one\n"
    "      --trust-tier-header honour X-Mica-Tier: vip|standard|batch (behind a trusted proxy)\n"
    "      --data-dir DIR      API keys and the request log (default ./mica-data)\n"
    "      --keys-file FILE    API keys (default DATA_DIR/keys.json; see mica keys)\n"
    "      --tls-cert FILE --tls-key FILE   serve HTTPS with this PEM certificate and key\n"
    "      --insecure-http     allow plain HTTP on a non-loopback address\n"
    "      --log-retention DUR delete request-log rows older than DUR: 30m, 12h, 3d\n"
    "                          (default and maximum 72h)\n"
    "      --allow-long-retention  permit a retention longer than 72h\n"
    "      --no-content-logs   never store prompts or answers (metadata rows only)\n"
    "      --redact            mask e-mail addresses, phone, card and ID numbers in stored\n"
    "                          prompts and answers\n"
    "\n"
    "Tiers (default): vip (priority 10) > standard (5, the default) > batch (1). A request\n"
    "may lower its tier with \"service_tier\" or \"priority\" (0-15, higher first), never\n"
    "raise it. Waiting requests gain priority over time, so none waits forever.\n"
    "\n"
    "With API keys (mica keys add) every /v1 request needs `Authorization: Bearer KEY` and\n"
    "gets its key's tier; without keys the server listens on loopback only. Off loopback it\n"
    "needs TLS unless --insecure-http.\n"
    "\n"
    "Request log: DATA_DIR/requests.db (SQLite) holds one row per answered request: id, time,\n"
    "key id, tier, model, status, tokens, timings and, unless disabled, prompt and answer.\n"
    "A request keeps its content out of every log with \"disable_logs\": true in the body or\n"
    "the header X-Disable-Logs: 1; so do keys made with --no-content-logs. Rows past the\n"
    "retention are deleted on start and at least every 10 minutes (see mica logs).\n";

static volatile sig_atomic_t serve_stop;

static void on_signal(int sig)
{
    (void)sig;
    serve_stop = 1;
}

/* Takes the value of a path option into dst; true when the option matched (a->i is set to
 * -1 after printing an error). */
static bool cli_path_opt(cli_args *a, const char *name, char *dst, size_t cap)
{
    if (!cli_is(a, NULL, name)) return false;
    const char *v = cli_value(a);
    if (!v || strlen(v) >= cap) {
        if (v) cli_fail("serve: %s: path too long", name);
        a->i = -1;
        return true;
    }
    strcpy(dst, v);
    return true;
}

/* No model given: the embedded default, served under its name. */
static int serve_default_model(srv_config *c)
{
    const char *path = NULL;
    if (cli_need_default_model("serve", &path)) return 1;
    char spec[4200];
    snprintf(spec, sizeof spec, "%s=%s", CLI_DEFAULT_MODEL_NAME, path);
    mica_err err;
    return srv_config_add_model(c, spec, &err) ? cli_fail_err(&err) : 0;
}

static int serve_parse(int argc, char **argv, srv_config *c)
{
    /* The config file first, wherever -c appears, so that flags override it. */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
            mica_err err;
            if (srv_config_load(c, argv[i + 1], &err)) return cli_fail_err(&err);
        }
    cli_args a = {argc, argv, 0};
    long l;
    for (a.i = 1; a.i < argc; a.i++) {
        mica_err err;
        if (cli_is(&a, "-c", "--config")) {
            if (!cli_value(&a)) return 1;
        } else if (cli_is(&a, "-m", "--model")) {
            const char *v = cli_value(&a);
            if (!v) return 1;
            if (srv_config_add_model(c, v, &err)) return cli_fail_err(&err);
        } else if (cli_is(&a, NULL, "--lora")) {
            const char *v = cli_value(&a);
            if (!v) return 1;
            if (srv_config_add_lora(c, v, &err)) return cli_fail_err(&err);
        } else if (cli_is(&a, NULL, "--host")) {
            const char *v = cli_value(&a);
            if (!v) return 1;
            if (strlen(v) >= sizeof c->host) return cli_fail("serve: --host: too long");
            strcpy(c->host, v);
        } else if (cli_is(&a, NULL, "--port")) {
            if (!cli_int(&a, 0, 65535, &l)) return 1;
            c->port = (int)l;
        } else if (cli_is(&a, NULL, "--parallel")) {
            if (!cli_int(&a, 1, 64, &l)) return 1;
            c->n_parallel = (int)l;
        } else if (cli_is(&a, NULL, "--ctx")) {
            if (!cli_int(&a, 16, 1 << 20, &l)) return 1;
            c->n_ctx = (int)l;
        } else if (cli_is(&a, NULL, "--batch")) {
            if (!cli_int(&a, 2, 1 << 16, &l)) return 1;
            c->n_batch = (int)l;
        } else if (cli_is(&a, "-t", "--threads")) {
            if (!cli_int(&a, 1, 1024, &l)) return 1;
            c->n_threads = (int)l;
        } else if (cli_is(&a, NULL, "--no-preempt")) {
            c->preempt = false;
        } else if (cli_is(&a, NULL, "--trust-tier-header")) {
            c->trust_tier_header = true;
        } else if (cli_is(&a, NULL, "--insecure-http")) {
            c->insecure_http = true;
        } else if (cli_is(&a, NULL, "--log-retention")) {
            const char *v = cli_value(&a);
            if (!v) return 1;
            /* The 72 h cap is checked once --allow-long-retention may have been seen. */
            if (store_parse_retention(v, true, &c->log_retention_ms, &err))
                return cli_fail("serve: --log-retention: %s", err.msg);
        } else if (cli_is(&a, NULL, "--allow-long-retention")) {
            c->allow_long_retention = true;
        } else if (cli_is(&a, NULL, "--no-content-logs")) {
            c->no_content_logs = true;
        } else if (cli_is(&a, NULL, "--redact")) {
            c->redact = true;
        } else if (cli_path_opt(&a, "--data-dir", c->data_dir, sizeof c->data_dir) ||
                   cli_path_opt(&a, "--keys-file", c->keys_file, sizeof c->keys_file) ||
                   cli_path_opt(&a, "--tls-cert", c->tls_cert, sizeof c->tls_cert) ||
                   cli_path_opt(&a, "--tls-key", c->tls_key, sizeof c->tls_key)) {
            if (a.i < 0) return 1;
        } else {
            return cli_unknown(&a);
        }
    }
    if (c->n_batch <= c->n_parallel) c->n_batch = c->n_parallel + 1;
    return c->n_models ? 0 : serve_default_model(c);
}

int cmd_serve(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(serve_help, stdout);
        return 0;
    }
    srv_config c;
    srv_config_defaults(&c);
    if (serve_parse(argc, argv, &c)) return 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    srv *s;
    mica_err err;
    if (srv_start(&s, &c, &err)) return cli_fail_err(&err);
    fprintf(stderr, "mica: serving %d model%s on http://%s:%u (parallel %d, ctx %d)\n", c.n_models,
            c.n_models == 1 ? "" : "s", c.host, (unsigned)srv_port(s), c.n_parallel, c.n_ctx);
    while (!serve_stop) pause();
    fprintf(stderr, "mica: stopping\n");
    srv_stop(s);
    return 0;
}
