/*
 * config.c - the gateway's configuration: defaults, a JSON config file (the keys of
 * srv_config, documented in docs/gateway.md), "-m NAME=PATH" specs and the checks that run
 * before anything is loaded. Called by the CLI (cmd_serve.c) and tests.
 */
#include "srv_int.h"

#include <stdio.h>
#include <string.h>

void srv_config_defaults(srv_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8080;
    c->n_parallel = 4;
    c->n_ctx = 2048;
    c->n_batch = 256;
    c->n_spare = 2;
    c->preempt = true;
    c->aging_per_s = 0.1;
    c->n_tiers = 3;
    c->tiers[0] = (srv_tier_cfg){"vip", 10, 64};
    c->tiers[1] = (srv_tier_cfg){"standard", 5, 256};
    c->tiers[2] = (srv_tier_cfg){"batch", 1, 1024};
    snprintf(c->default_tier, sizeof c->default_tier, "standard");
    c->max_body = 1 << 20;
    c->ping_s = 5.0;
    snprintf(c->data_dir, sizeof c->data_dir, "mica-data");
    c->log_retention_ms = STORE_RETENTION_MAX_MS;
}

void srv_config_keys_path(const srv_config *c, char *out, size_t cap)
{
    if (c->keys_file[0])
        snprintf(out, cap, "%s", c->keys_file);
    else
        snprintf(out, cap, "%s/keys.json", c->data_dir);
}

static bool copy_str(char *dst, size_t cap, const char *src)
{
    const size_t n = strlen(src);
    if (n >= cap) return false;
    memcpy(dst, src, n + 1);
    return true;
}

mica_status srv_config_add_model(srv_config *c, const char *spec, mica_err *err)
{
    if (c->n_models >= SRV_MAX_MODELS)
        return core_fail(err, MICA_EINVAL, "at most %d models", SRV_MAX_MODELS);
    srv_model_cfg *m = &c->models[c->n_models];
    const char *eq = strchr(spec, '=');
    const char *path = eq ? eq + 1 : spec;
    if (eq) {
        const size_t n = (size_t)(eq - spec);
        if (n == 0 || n >= sizeof m->name)
            return core_fail(err, MICA_EINVAL, "model '%s': the name must have 1 to %zu bytes",
                             spec, sizeof m->name - 1);
        memcpy(m->name, spec, n);
        m->name[n] = '\0';
    } else {
        /* Named after the file: "dir/stories260K.F32.gguf" -> "stories260K.F32". */
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        size_t n = strlen(base);
        if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
        if (n == 0 || n >= sizeof m->name)
            return core_fail(err, MICA_EINVAL, "model '%s': cannot name it after its file", spec);
        memcpy(m->name, base, n);
        m->name[n] = '\0';
    }
    if (!*path || !copy_str(m->path, sizeof m->path, path))
        return core_fail(err, MICA_EINVAL, "model '%s': the path is empty or too long", spec);
    c->n_models++;
    return MICA_OK;
}

const char *srv_lora_model(const srv_config *c, const srv_lora_cfg *l)
{
    return l->model[0] ? l->model : c->models[0].name;
}

mica_status srv_config_add_lora(srv_config *c, const char *spec, mica_err *err)
{
    if (c->n_loras == SRV_MAX_LORAS_TOTAL)
        return core_fail(err, MICA_EINVAL, "at most %d LoRA adapters", SRV_MAX_LORAS_TOTAL);
    srv_lora_cfg *l = &c->loras[c->n_loras];
    memset(l, 0, sizeof *l);
    const char *eq = strchr(spec, '='), *colon = strchr(spec, ':');
    if (colon && eq && colon > eq) colon = NULL; /* a ':' in the path */
    const char *name = colon ? colon + 1 : spec;
    const size_t model_len = colon ? (size_t)(colon - spec) : 0;
    const size_t name_len = eq ? (size_t)(eq - name) : 0;
    if (!eq || name_len == 0 || name_len >= sizeof l->name || model_len >= sizeof l->model ||
        !eq[1] || !copy_str(l->path, sizeof l->path, eq + 1))
        return core_fail(err, MICA_EINVAL, "LoRA '%s': expected [MODEL:]NAME=PATH", spec);
    memcpy(l->model, spec, model_len);
    memcpy(l->name, name, name_len);
    c->n_loras++;
    return MICA_OK;
}

/* ---- the JSON file --------------------------------------------------------------------- */

typedef struct cfg_reader {
    const char *path;
    mica_err *err;
} cfg_reader;

static mica_status cfg_int(const cfg_reader *r, json_t *o, const char *key, int lo, int hi,
                           int *out)
{
    json_t *v = json_object_get(o, key);
    if (!v) return MICA_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return core_fail(r->err, MICA_EINVAL, "%s: '%s' must be an integer from %d to %d", r->path,
                         key, lo, hi);
    *out = (int)json_integer_value(v);
    return MICA_OK;
}

static mica_status cfg_num(const cfg_reader *r, json_t *o, const char *key, double lo, double hi,
                           double *out)
{
    json_t *v = json_object_get(o, key);
    if (!v) return MICA_OK;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
        return core_fail(r->err, MICA_EINVAL, "%s: '%s' must be a number from %g to %g", r->path,
                         key, lo, hi);
    *out = json_number_value(v);
    return MICA_OK;
}

static mica_status cfg_bool(const cfg_reader *r, json_t *o, const char *key, bool *out)
{
    json_t *v = json_object_get(o, key);
    if (!v) return MICA_OK;
    if (!json_is_boolean(v))
        return core_fail(r->err, MICA_EINVAL, "%s: '%s' must be true or false", r->path, key);
    *out = json_is_true(v);
    return MICA_OK;
}

static mica_status cfg_str(const cfg_reader *r, json_t *o, const char *key, char *out, size_t cap)
{
    json_t *v = json_object_get(o, key);
    if (!v) return MICA_OK;
    if (!json_is_string(v) || !copy_str(out, cap, json_string_value(v)))
        return core_fail(r->err, MICA_EINVAL, "%s: '%s' must be a string of at most %zu bytes",
                         r->path, key, cap - 1);
    return MICA_OK;
}

#define CFG_TRY(x)                                                                                 \
    do {                                                                                           \
        mica_status st_ = (x);                                                                     \
        if (st_) return st_;                                                                       \
    } while (0)

/* "models": {"name": "path.gguf", ...} */
static mica_status cfg_models(const cfg_reader *r, srv_config *c, json_t *models)
{
    if (!models) return MICA_OK;
    if (!json_is_object(models))
        return core_fail(r->err, MICA_EINVAL, "%s: 'models' must be an object of name: path",
                         r->path);
    const char *name;
    json_t *v;
    json_object_foreach(models, name, v)
    {
        if (!json_is_string(v))
            return core_fail(r->err, MICA_EINVAL, "%s: models.%s must be a file path", r->path,
                             name);
        char spec[SRV_NAME_MAX + SRV_PATH_MAX + 2];
        if ((size_t)snprintf(spec, sizeof spec, "%s=%s", name, json_string_value(v)) >= sizeof spec)
            return core_fail(r->err, MICA_EINVAL, "%s: models.%s: too long", r->path, name);
        mica_status st = srv_config_add_model(c, spec, r->err);
        if (st) return core_fail_prefix(r->err, r->path);
    }
    return MICA_OK;
}

/* "loras": [{"model": "m", "name": "site-b", "path": "site-b.gguf"}, ...] (model optional). */
static mica_status cfg_loras(const cfg_reader *r, srv_config *c, json_t *loras)
{
    if (!loras) return MICA_OK;
    if (!json_is_array(loras))
        return core_fail(r->err, MICA_EINVAL, "%s: 'loras' must be a list", r->path);
    size_t i;
    json_t *v;
    json_array_foreach(loras, i, v)
    {
        const char *model = json_string_value(json_object_get(v, "model"));
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *path = json_string_value(json_object_get(v, "path"));
        char spec[SRV_NAME_MAX + 64 + SRV_PATH_MAX + 4];
        if (!name || !path)
            return core_fail(r->err, MICA_EINVAL, "%s: loras[%zu] needs \"name\" and \"path\"",
                             r->path, i);
        snprintf(spec, sizeof spec, "%s%s%s=%s", model ? model : "", model ? ":" : "", name, path);
        if (srv_config_add_lora(c, spec, r->err)) return core_fail_prefix(r->err, r->path);
    }
    return MICA_OK;
}

/* "tiers": {"vip": {"priority": 10, "max_waiting": 64}, ...} replaces the defaults. */
static mica_status cfg_tiers(const cfg_reader *r, srv_config *c, json_t *tiers)
{
    if (!tiers) return MICA_OK;
    if (!json_is_object(tiers) || json_object_size(tiers) == 0 ||
        json_object_size(tiers) > SRV_MAX_TIERS)
        return core_fail(r->err, MICA_EINVAL, "%s: 'tiers' must be an object of 1 to %d tiers",
                         r->path, SRV_MAX_TIERS);
    c->n_tiers = 0;
    const char *name;
    json_t *v;
    json_object_foreach(tiers, name, v)
    {
        srv_tier_cfg *t = &c->tiers[c->n_tiers++];
        *t = (srv_tier_cfg){"", 5, 256};
        if (!json_is_object(v) || !copy_str(t->name, sizeof t->name, name))
            return core_fail(r->err, MICA_EINVAL,
                             "%s: tiers.%s must be an object with a name under 32 bytes", r->path,
                             name);
        CFG_TRY(cfg_int(r, v, "priority", 0, ENG_MAX_PRIORITY, &t->priority));
        CFG_TRY(cfg_int(r, v, "max_waiting", 1, 1 << 20, &t->max_waiting));
    }
    return MICA_OK;
}

/* "log_retention": "72h" (store_parse_retention's forms). */
static mica_status cfg_retention(const cfg_reader *r, json_t *o, srv_config *c)
{
    json_t *v = json_object_get(o, "log_retention");
    if (!v) return MICA_OK;
    if (!json_is_string(v))
        return core_fail(r->err, MICA_EINVAL, "%s: 'log_retention' must be a string like \"72h\"",
                         r->path);
    mica_err e;
    /* The 72 h cap is checked by srv_config_check, once the flags are known too. */
    if (store_parse_retention(json_string_value(v), true, &c->log_retention_ms, &e))
        return core_fail(r->err, MICA_EINVAL, "%s: 'log_retention': %s", r->path, e.msg);
    return MICA_OK;
}

static const char *const cfg_keys[] = {
    "host",
    "port",
    "parallel",
    "ctx",
    "batch",
    "threads",
    "spare",
    "preempt",
    "aging_per_s",
    "models",
    "tiers",
    "default_tier",
    "trust_tier_header",
    "max_body_bytes",
    "ping_seconds",
    "data_dir",
    "keys_file",
    "tls_cert",
    "tls_key",
    "insecure_http",
    "log_retention",
    "allow_long_retention",
    "no_content_logs",
    "redact",
    "loras",
};

static mica_status cfg_unknown_keys(const cfg_reader *r, json_t *root)
{
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof cfg_keys / sizeof cfg_keys[0]; i++)
            known |= !strcmp(key, cfg_keys[i]);
        if (!known) return core_fail(r->err, MICA_EINVAL, "%s: unknown key '%s'", r->path, key);
    }
    return MICA_OK;
}

static mica_status cfg_apply(const cfg_reader *r, srv_config *c, json_t *root)
{
    CFG_TRY(cfg_unknown_keys(r, root));
    CFG_TRY(cfg_str(r, root, "host", c->host, sizeof c->host));
    CFG_TRY(cfg_int(r, root, "port", 0, 65535, &c->port));
    CFG_TRY(cfg_int(r, root, "parallel", 1, 64, &c->n_parallel));
    CFG_TRY(cfg_int(r, root, "ctx", 16, 1 << 20, &c->n_ctx));
    CFG_TRY(cfg_int(r, root, "batch", 2, 1 << 16, &c->n_batch));
    CFG_TRY(cfg_int(r, root, "threads", 0, 1024, &c->n_threads));
    CFG_TRY(cfg_int(r, root, "spare", 0, 1024, &c->n_spare));
    CFG_TRY(cfg_bool(r, root, "preempt", &c->preempt));
    CFG_TRY(cfg_num(r, root, "aging_per_s", 0, 1e6, &c->aging_per_s));
    CFG_TRY(cfg_models(r, c, json_object_get(root, "models")));
    CFG_TRY(cfg_tiers(r, c, json_object_get(root, "tiers")));
    CFG_TRY(cfg_loras(r, c, json_object_get(root, "loras")));
    CFG_TRY(cfg_str(r, root, "default_tier", c->default_tier, sizeof c->default_tier));
    CFG_TRY(cfg_bool(r, root, "trust_tier_header", &c->trust_tier_header));
    double body = (double)c->max_body;
    CFG_TRY(cfg_num(r, root, "max_body_bytes", 1024, 1 << 30, &body));
    c->max_body = (size_t)body;
    CFG_TRY(cfg_str(r, root, "data_dir", c->data_dir, sizeof c->data_dir));
    CFG_TRY(cfg_str(r, root, "keys_file", c->keys_file, sizeof c->keys_file));
    CFG_TRY(cfg_str(r, root, "tls_cert", c->tls_cert, sizeof c->tls_cert));
    CFG_TRY(cfg_str(r, root, "tls_key", c->tls_key, sizeof c->tls_key));
    CFG_TRY(cfg_bool(r, root, "insecure_http", &c->insecure_http));
    CFG_TRY(cfg_bool(r, root, "allow_long_retention", &c->allow_long_retention));
    CFG_TRY(cfg_bool(r, root, "no_content_logs", &c->no_content_logs));
    CFG_TRY(cfg_bool(r, root, "redact", &c->redact));
    CFG_TRY(cfg_retention(r, root, c));
    return cfg_num(r, root, "ping_seconds", 0.05, 3600, &c->ping_s);
}

mica_status srv_config_load(srv_config *c, const char *path, mica_err *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return core_fail(err, MICA_EFORMAT, "%s: line %d: %s", path, je.line, je.text);
    cfg_reader r = {path, err};
    mica_status st = json_is_object(root)
                         ? cfg_apply(&r, c, root)
                         : core_fail(err, MICA_EFORMAT, "%s: expected a JSON object", path);
    json_decref(root);
    return st;
}

mica_status srv_config_check(const srv_config *c, mica_err *err)
{
    if (c->n_models < 1)
        return core_fail(err, MICA_EINVAL, "no model to serve (give -m NAME=PATH or 'models')");
    for (int i = 0; i < c->n_models; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(c->models[i].name, c->models[j].name))
                return core_fail(err, MICA_EINVAL, "model name '%s' is used twice",
                                 c->models[i].name);
    bool found = false;
    for (int i = 0; i < c->n_tiers; i++) found |= !strcmp(c->tiers[i].name, c->default_tier);
    if (!found)
        return core_fail(err, MICA_EINVAL, "default tier '%s' is not one of the tiers",
                         c->default_tier);
    if (!c->tls_cert[0] != !c->tls_key[0])
        return core_fail(err, MICA_EINVAL, "TLS needs both a certificate and a key");
    if (c->n_batch <= c->n_parallel)
        return core_fail(err, MICA_EINVAL, "batch %d must exceed parallel %d", c->n_batch,
                         c->n_parallel);
    for (int i = 0; i < c->n_loras; i++) {
        const srv_lora_cfg *l = &c->loras[i];
        const char *model = srv_lora_model(c, l);
        bool known = false;
        for (int m = 0; m < c->n_models; m++) known |= !strcmp(c->models[m].name, model);
        if (!known)
            return core_fail(err, MICA_EINVAL, "LoRA '%s' is for model '%s', which is not served",
                             l->name, model);
        for (int j = 0; j < i; j++)
            if (!strcmp(c->loras[j].name, l->name) &&
                !strcmp(srv_lora_model(c, &c->loras[j]), model))
                return core_fail(err, MICA_EINVAL, "LoRA name '%s' is used twice for model '%s'",
                                 l->name, model);
    }
    if (c->log_retention_ms <= 0)
        return core_fail(err, MICA_EINVAL, "the log retention must be positive");
    if (c->log_retention_ms > STORE_RETENTION_MAX_MS && !c->allow_long_retention)
        return core_fail(err, MICA_EINVAL,
                         "a log retention of %.1f h is longer than the 72 h maximum (personal data "
                         "must not be kept longer); --allow-long-retention permits it",
                         (double)c->log_retention_ms / 3.6e6);
    return MICA_OK;
}
