/*
 * keys.c - the gateway's API keys: a JSON file (mode 0600, replaced atomically) holding, per
 * key, an id, the SHA-256 of the secret (never the secret), its tier, the models it may use,
 * its requests/tokens per minute and whether its content is kept out of the logs. Secrets
 * are 32 random bytes from GnuTLS, shown once by `mica keys add`; checking a secret hashes it
 * and compares with every key in constant time. Called by cmd_keys.c and http.c.
 */
#include "srv_int.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEY_PREFIX "mk-"

void srv_keys_free(srv_keyring *k)
{
    free(k->keys);
    memset(k, 0, sizeof *k);
}

static void hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool unhex(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n) return false;
    for (size_t i = 0; i < 2 * n; i++) {
        const char c = s[i];
        const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return false;
        out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | v) : v << 4);
    }
    return true;
}

static bool sha256(const void *data, size_t n, uint8_t out[32])
{
    return gnutls_hash_fast(GNUTLS_DIG_SHA256, data, n, out) == 0;
}

/* ---- the file -------------------------------------------------------------------------- */

static mica_status key_from_json(json_t *o, srv_key *k, const char *path, size_t i, mica_err *err)
{
    memset(k, 0, sizeof *k);
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *hash = json_string_value(json_object_get(o, "hash"));
    const char *tier = json_string_value(json_object_get(o, "tier"));
    if (!id || strlen(id) >= sizeof k->id || !hash || !unhex(hash, k->hash, 32) || !tier ||
        strlen(tier) >= sizeof k->tier)
        return core_fail(err, MICA_EFORMAT,
                         "%s: keys[%zu]: needs 'id', a 64-digit 'hash' and "
                         "'tier'",
                         path, i);
    strcpy(k->id, id);
    strcpy(k->tier, tier);
    k->rpm = (int)json_integer_value(json_object_get(o, "rpm"));
    k->tpm = (int)json_integer_value(json_object_get(o, "tpm"));
    k->no_content_logs = json_is_true(json_object_get(o, "no_content_logs"));
    k->revoked = json_is_true(json_object_get(o, "revoked"));
    k->created = (int64_t)json_integer_value(json_object_get(o, "created"));
    json_t *models = json_object_get(o, "models");
    size_t j;
    json_t *m;
    json_array_foreach(models, j, m)
    {
        if (!json_is_string(m) || k->n_models >= SRV_MAX_MODELS ||
            json_string_length(m) >= SRV_NAME_MAX)
            return core_fail(err, MICA_EFORMAT, "%s: keys[%zu].models: at most %d names", path, i,
                             SRV_MAX_MODELS);
        strcpy(k->models[k->n_models++], json_string_value(m));
    }
    return MICA_OK;
}

mica_status srv_keys_load(srv_keyring *k, const char *path, mica_err *err)
{
    memset(k, 0, sizeof *k);
    struct stat st;
    if (stat(path, &st)) {
        if (errno == ENOENT) return MICA_OK; /* no keys yet */
        return core_fail(err, MICA_EIO, "%s: %s", path, strerror(errno));
    }
    k->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return core_fail(err, MICA_EFORMAT, "%s: line %d: %s", path, je.line, je.text);
    json_t *keys = json_object_get(root, "keys");
    mica_status st_ = MICA_OK;
    if (!json_is_array(keys)) {
        st_ = core_fail(err, MICA_EFORMAT, "%s: expected {\"keys\": [...]}", path);
        goto done;
    }
    k->keys = core_calloc(json_array_size(keys) + 1, sizeof *k->keys);
    if (!k->keys) {
        st_ = core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < json_array_size(keys) && !st_; i++)
        if (!(st_ = key_from_json(json_array_get(keys, i), &k->keys[i], path, i, err))) k->n++;
done:
    json_decref(root);
    if (st_) srv_keys_free(k);
    return st_;
}

static json_t *key_to_json(const srv_key *k)
{
    char h[65];
    hex(k->hash, 32, h);
    json_t *models = json_array();
    for (int i = 0; i < k->n_models; i++) json_array_append_new(models, json_string(k->models[i]));
    return json_pack("{s:s,s:s,s:s,s:o,s:i,s:i,s:b,s:b,s:I}", "id", k->id, "hash", h, "tier",
                     k->tier, "models", models, "rpm", k->rpm, "tpm", k->tpm, "no_content_logs",
                     k->no_content_logs, "revoked", k->revoked, "created", (json_int_t)k->created);
}

mica_status srv_keys_save(const srv_keyring *k, const char *path, mica_err *err)
{
    json_t *keys = json_array();
    for (int i = 0; i < k->n; i++) json_array_append_new(keys, key_to_json(&k->keys[i]));
    json_t *root = json_pack("{s:o}", "keys", keys);
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!text) return core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
    char tmp[SRV_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    mica_status st = MICA_OK;
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const size_t len = strlen(text);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) ||
        close(fd) || rename(tmp, path))
        st = core_fail(err, MICA_EIO, "%s: %s", path, strerror(errno));
    if (st && fd >= 0) unlink(tmp);
    free(text);
    return st;
}

mica_status srv_keys_add(srv_keyring *k, const srv_key *tmpl, char *secret, size_t cap,
                         mica_err *err)
{
    uint8_t raw[32], id_raw[6];
    if (cap < sizeof KEY_PREFIX + 64) return core_fail(err, MICA_EINVAL, "key buffer too small");
    if (gnutls_rnd(GNUTLS_RND_KEY, raw, sizeof raw) || gnutls_rnd(GNUTLS_RND_NONCE, id_raw, 6))
        return core_fail(err, MICA_EIO, "no random bytes for a key");
    srv_key *grown = realloc(k->keys, (size_t)(k->n + 1) * sizeof *grown);
    if (!grown) return core_fail(err, MICA_ENOMEM, "out of memory");
    k->keys = grown;
    srv_key *n = &k->keys[k->n];
    *n = *tmpl;
    memcpy(secret, KEY_PREFIX, sizeof KEY_PREFIX - 1);
    hex(raw, sizeof raw, secret + sizeof KEY_PREFIX - 1);
    char idhex[13];
    hex(id_raw, sizeof id_raw, idhex);
    snprintf(n->id, sizeof n->id, "key_%s", idhex);
    if (!sha256(secret, strlen(secret), n->hash))
        return core_fail(err, MICA_EIO, "cannot hash the key");
    n->revoked = false;
    n->created = (int64_t)time(NULL);
    k->n++;
    memset(raw, 0, sizeof raw);
    return MICA_OK;
}

mica_status srv_keys_revoke(srv_keyring *k, const char *id, mica_err *err)
{
    for (int i = 0; i < k->n; i++)
        if (!strcmp(k->keys[i].id, id)) {
            k->keys[i].revoked = true;
            return MICA_OK;
        }
    return core_fail(err, MICA_EINVAL, "no key with id '%s'", id);
}

int srv_keys_find(const srv_keyring *k, const char *secret, size_t len)
{
    uint8_t h[32];
    if (!sha256(secret, len, h)) return -1;
    int found = -1;
    /* Every key is compared, each in constant time, so timing says nothing of which. */
    for (int i = 0; i < k->n; i++)
        if (gnutls_memcmp(h, k->keys[i].hash, 32) == 0) found = i;
    return found;
}

bool srv_key_allows_model(const srv_key *k, const char *model)
{
    if (k->n_models == 0) return true;
    for (int i = 0; i < k->n_models; i++)
        if (!strcmp(k->models[i], model)) return true;
    return false;
}
