/*
 * metrics.c - the gateway's Prometheus metrics (text format 0.0.4, prefix mica_): latency
 * histograms (queue, time to first token, inter-token, end to end) and token/finish
 * counters per model and tier, responses by HTTP status, and gauges read from each model's
 * scheduler at scrape time (running and waiting requests per tier, free slots, KV cache use,
 * preemptions) plus the MoE routing counts per layer and expert. Called by job.c (observe)
 * and http.c (GET /metrics).
 */
#include "srv_int.h"

#include <string.h>

static const double bucket_le[SRV_N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                1,     2.5,  5,     10,   30,  60,   120};

static const char *const hist_name[SRV_H_COUNT] = {
    "mica_queue_seconds", "mica_time_to_first_token_seconds", "mica_inter_token_seconds",
    "mica_request_seconds"};
static const char *const hist_help[SRV_H_COUNT] = {
    "Time from arrival to admission into a batch slot.",
    "Time from arrival to the first generated token.",
    "Time between consecutive generated tokens of a request.",
    "Time from arrival to the last token (end to end).",
};
static const char *const finish_label[5] = {"none", "length", "stop", "cancelled", "error"};

void srv_metrics_init(srv_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void srv_metrics_free(srv_metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

void srv_metrics_observe(srv_metrics *m, int model, int tier, srv_hist_kind k, double seconds)
{
    if (seconds < 0) seconds = 0;
    pthread_mutex_lock(&m->mu);
    srv_histogram *h = &m->series[model][tier].h[k];
    int b = 0;
    while (b < SRV_N_BUCKETS && seconds > bucket_le[b]) b++;
    if (b < SRV_N_BUCKETS) h->counts[b]++;
    h->n++;
    h->sum += seconds;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_response(srv_metrics *m, int status)
{
    pthread_mutex_lock(&m->mu);
    if (status >= 100 && status < 600) m->by_code[status]++;
    pthread_mutex_unlock(&m->mu);
}

/* Prometheus label values escape backslash, quote and newline. */
static void label_value(core_buf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            core_buf_printf(out, "\\%c", *v);
        else if (*v == '\n')
            core_buf_printf(out, "\\n");
        else
            core_buf_append(out, v, 1);
    }
}

static void model_label(core_buf *out, const srv *s, int model)
{
    core_buf_printf(out, "model=\"");
    label_value(out, s->models[model].name);
    core_buf_printf(out, "\"");
}

static void labels(core_buf *out, const srv *s, int model, int tier)
{
    model_label(out, s, model);
    core_buf_printf(out, ",tier=\"");
    label_value(out, s->cfg.tiers[tier].name);
    core_buf_printf(out, "\"");
}

static void render_histograms(srv *s, core_buf *out)
{
    for (int k = 0; k < SRV_H_COUNT; k++) {
        core_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", hist_name[k], hist_help[k],
                        hist_name[k]);
        for (int mi = 0; mi < s->n_models; mi++)
            for (int t = 0; t < s->cfg.n_tiers; t++) {
                const srv_histogram *h = &s->metrics.series[mi][t].h[k];
                uint64_t cum = 0;
                for (int b = 0; b < SRV_N_BUCKETS; b++) {
                    cum += h->counts[b];
                    core_buf_printf(out, "%s_bucket{", hist_name[k]);
                    labels(out, s, mi, t);
                    core_buf_printf(out, ",le=\"%g\"} %llu\n", bucket_le[b],
                                    (unsigned long long)cum);
                }
                core_buf_printf(out, "%s_bucket{", hist_name[k]);
                labels(out, s, mi, t);
                core_buf_printf(out, ",le=\"+Inf\"} %llu\n%s_sum{", (unsigned long long)h->n,
                                hist_name[k]);
                labels(out, s, mi, t);
                core_buf_printf(out, "} %.6f\n%s_count{", h->sum, hist_name[k]);
                labels(out, s, mi, t);
                core_buf_printf(out, "} %llu\n", (unsigned long long)h->n);
            }
    }
}

static void render_counters(srv *s, core_buf *out)
{
    core_buf_printf(out, "# HELP mica_requests_finished_total Generations finished, by reason.\n"
                         "# TYPE mica_requests_finished_total counter\n");
    for (int mi = 0; mi < s->n_models; mi++)
        for (int t = 0; t < s->cfg.n_tiers; t++)
            for (int f = 1; f < 5; f++) {
                core_buf_printf(out, "mica_requests_finished_total{");
                labels(out, s, mi, t);
                core_buf_printf(out, ",reason=\"%s\"} %llu\n", finish_label[f],
                                (unsigned long long)s->metrics.series[mi][t].finish[f]);
            }
    static const char *const tok_name[2] = {"mica_prompt_tokens_total",
                                            "mica_generated_tokens_total"};
    for (int which = 0; which < 2; which++) {
        core_buf_printf(out, "# HELP %s %s tokens.\n# TYPE %s counter\n", tok_name[which],
                        which ? "Generated" : "Prompt", tok_name[which]);
        for (int mi = 0; mi < s->n_models; mi++)
            for (int t = 0; t < s->cfg.n_tiers; t++) {
                const srv_series *se = &s->metrics.series[mi][t];
                core_buf_printf(out, "%s{", tok_name[which]);
                labels(out, s, mi, t);
                core_buf_printf(out, "} %llu\n",
                                (unsigned long long)(which ? se->gen_tokens : se->prompt_tokens));
            }
    }
    core_buf_printf(out, "# HELP mica_http_responses_total HTTP responses by status code.\n"
                         "# TYPE mica_http_responses_total counter\n");
    for (int code = 100; code < 600; code++)
        if (s->metrics.by_code[code])
            core_buf_printf(out, "mica_http_responses_total{code=\"%d\"} %llu\n", code,
                            (unsigned long long)s->metrics.by_code[code]);
}

/* The tier a priority belongs to (the first tier with that priority), or -1. */
static int tier_of(const srv *s, int priority)
{
    for (int t = 0; t < s->cfg.n_tiers; t++)
        if (s->cfg.tiers[t].priority == priority) return t;
    return -1;
}

static void render_scheduler(srv *s, core_buf *out)
{
    eng_sched_stats st[SRV_MAX_MODELS];
    for (int mi = 0; mi < s->n_models; mi++) eng_sched_stats_get(s->models[mi].sched, &st[mi]);
    static const char *const state_name[2] = {"mica_requests_running", "mica_requests_waiting"};
    for (int which = 0; which < 2; which++) {
        core_buf_printf(out, "# HELP %s Requests %s, by tier.\n# TYPE %s gauge\n",
                        state_name[which], which ? "waiting for a slot" : "in a batch slot",
                        state_name[which]);
        for (int mi = 0; mi < s->n_models; mi++)
            for (int t = 0; t < s->cfg.n_tiers; t++) {
                int n = 0;
                for (int p = 0; p <= ENG_MAX_PRIORITY; p++)
                    if (tier_of(s, p) == t) n += which ? st[mi].waiting[p] : st[mi].running[p];
                core_buf_printf(out, "%s{", state_name[which]);
                labels(out, s, mi, t);
                core_buf_printf(out, "} %d\n", n);
            }
    }
    core_buf_printf(out, "# HELP mica_free_slots Sequence slots not in use.\n"
                         "# TYPE mica_free_slots gauge\n");
    for (int mi = 0; mi < s->n_models; mi++) {
        core_buf_printf(out, "mica_free_slots{");
        model_label(out, s, mi);
        core_buf_printf(out, "} %d\n", st[mi].n_slots - st[mi].n_running);
    }
    core_buf_printf(out, "# HELP mica_kv_cache_usage_ratio Share of KV cache positions in use.\n"
                         "# TYPE mica_kv_cache_usage_ratio gauge\n");
    for (int mi = 0; mi < s->n_models; mi++) {
        core_buf_printf(out, "mica_kv_cache_usage_ratio{");
        model_label(out, s, mi);
        core_buf_printf(out, "} %.6f\n",
                        st[mi].kv_total ? (double)st[mi].kv_used / (double)st[mi].kv_total : 0.0);
    }
    core_buf_printf(out, "# HELP mica_preemptions_total Running requests paused for more "
                         "important ones.\n# TYPE mica_preemptions_total counter\n");
    for (int mi = 0; mi < s->n_models; mi++) {
        core_buf_printf(out, "mica_preemptions_total{");
        model_label(out, s, mi);
        core_buf_printf(out, "} %llu\n", (unsigned long long)st[mi].n_preemptions);
    }
}

static void render_moe(srv *s, core_buf *out)
{
    core_buf_printf(out, "# HELP mica_moe_expert_tokens_total Tokens routed to each expert.\n"
                         "# TYPE mica_moe_expert_tokens_total counter\n");
    for (int mi = 0; mi < s->n_models; mi++) {
        const mica_model *m = s->models[mi].m;
        const mica_context *c = eng_sched_context(s->models[mi].sched);
        for (int32_t l = 0; l < mica_model_n_layer(m); l++)
            for (int32_t e = 0; e < mica_model_n_expert(m); e++) {
                mica_expert_stat es;
                if (mica_context_expert_stat(c, l, e, &es, NULL)) continue;
                core_buf_printf(out, "mica_moe_expert_tokens_total{");
                model_label(out, s, mi);
                core_buf_printf(out, ",layer=\"%d\",expert=\"%d\"} %llu\n", l, e,
                                (unsigned long long)es.n_tokens);
            }
    }
}

void srv_metrics_render(srv *s, core_buf *out)
{
    core_buf_printf(out, "# HELP mica_build_info The running mica.\n# TYPE mica_build_info gauge\n"
                         "mica_build_info{version=\"0.1.0\"} 1\n");
    pthread_mutex_lock(&s->metrics.mu);
    render_histograms(s, out);
    render_counters(s, out);
    pthread_mutex_unlock(&s->metrics.mu);
    render_scheduler(s, out);
    render_moe(s, out);
}
