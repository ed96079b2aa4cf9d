/*
 * cmd_keys.c - `mica keys add|list|revoke`: manages the gateway's API keys file (only
 * SHA-256 hashes are stored; a new key is printed once). A running server re-reads the file
 * when it changes. Built only with the gateway (MICA_SERVER).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "server/srv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char keys_help[] =
    "usage: mica keys add [--tier TIER] [--models a,b] [--rpm N] [--tpm N] [--no-content-logs]\n"
    "       mica keys list\n"
    "       mica keys revoke KEY_ID\n"
    "options for all: [--data-dir DIR] (default ./mica-data) [--keys-file FILE]\n"
    "\n"
    "add prints a new key once (\"mk-...\"); only its SHA-256 hash is stored. Clients send it\n"
    "as `Authorization: Bearer KEY`. --tier picks the key's priority tier (default standard),\n"
    "--models the models it may use (default all), --rpm / --tpm its requests and tokens per\n"
    "minute (default unlimited), --no-content-logs keeps its prompts and answers out of the\n"
    "request log. list shows ids, tiers and limits, never keys. revoke disables a key at once,\n"
    "also in a running server.\n";

typedef struct keys_opts {
    srv_config cfg;
    srv_key tmpl;
    const char *action, *id;
} keys_opts;

static int parse_models(const char *list, srv_key *k)
{
    char buf[SRV_MAX_MODELS * SRV_NAME_MAX];
    if (strlen(list) >= sizeof buf) return cli_fail("keys: --models: too long");
    strcpy(buf, list);
    for (char *save = NULL, *m = strtok_r(buf, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        if (k->n_models >= SRV_MAX_MODELS || strlen(m) >= SRV_NAME_MAX)
            return cli_fail("keys: --models: at most %d names of under %d bytes", SRV_MAX_MODELS,
                            SRV_NAME_MAX);
        strcpy(k->models[k->n_models++], m);
    }
    return 0;
}

static int keys_parse(int argc, char **argv, keys_opts *o)
{
    cli_args a = {argc, argv, 0};
    long l;
    for (a.i = 1; a.i < argc; a.i++) {
        const char *v;
        if (cli_is(&a, NULL, "--data-dir")) {
            if (!(v = cli_value(&a))) return 1;
            snprintf(o->cfg.data_dir, sizeof o->cfg.data_dir, "%s", v);
        } else if (cli_is(&a, NULL, "--keys-file")) {
            if (!(v = cli_value(&a))) return 1;
            snprintf(o->cfg.keys_file, sizeof o->cfg.keys_file, "%s", v);
        } else if (cli_is(&a, NULL, "--tier")) {
            if (!(v = cli_value(&a))) return 1;
            snprintf(o->tmpl.tier, sizeof o->tmpl.tier, "%s", v);
        } else if (cli_is(&a, NULL, "--models")) {
            if (!(v = cli_value(&a)) || parse_models(v, &o->tmpl)) return 1;
        } else if (cli_is(&a, NULL, "--rpm")) {
            if (!cli_int(&a, 0, 1 << 24, &l)) return 1;
            o->tmpl.rpm = (int)l;
        } else if (cli_is(&a, NULL, "--tpm")) {
            if (!cli_int(&a, 0, 1 << 30, &l)) return 1;
            o->tmpl.tpm = (int)l;
        } else if (cli_is(&a, NULL, "--no-content-logs")) {
            o->tmpl.no_content_logs = true;
        } else if (argv[a.i][0] == '-') {
            return cli_unknown(&a);
        } else if (!o->action) {
            o->action = argv[a.i];
        } else if (!o->id) {
            o->id = argv[a.i];
        } else {
            return cli_fail("keys: unexpected argument '%s'", argv[a.i]);
        }
    }
    if (!o->action) return cli_fail("keys: say add, list or revoke (see mica keys --help)");
    return 0;
}

static int keys_add(const keys_opts *o, srv_keyring *ring, const char *path)
{
    bool known = false;
    for (int i = 0; i < o->cfg.n_tiers; i++) known |= !strcmp(o->cfg.tiers[i].name, o->tmpl.tier);
    if (!known)
        fprintf(stderr,
                "mica: warning: tier '%s' is not a default tier; configure it in the "
                "server's \"tiers\"\n",
                o->tmpl.tier);
    char secret[80];
    mica_err err;
    if (srv_keys_add(ring, &o->tmpl, secret, sizeof secret, &err) ||
        srv_keys_save(ring, path, &err))
        return cli_fail_err(&err);
    printf("%s\n", secret);
    fprintf(stderr, "mica: added %s (tier %s); the key above is shown only now\n",
            ring->keys[ring->n - 1].id, o->tmpl.tier);
    return 0;
}

static void keys_list(const srv_keyring *ring)
{
    printf("%-18s %-10s %-8s %8s %10s  %s\n", "id", "tier", "state", "rpm", "tpm", "models");
    for (int i = 0; i < ring->n; i++) {
        const srv_key *k = &ring->keys[i];
        printf("%-18s %-10s %-8s %8d %10d  ", k->id, k->tier, k->revoked ? "revoked" : "active",
               k->rpm, k->tpm);
        if (!k->n_models) printf("all");
        for (int m = 0; m < k->n_models; m++) printf("%s%s", m ? "," : "", k->models[m]);
        printf("%s\n", k->no_content_logs ? "  (no content logs)" : "");
    }
}

int cmd_keys(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(keys_help, stdout);
        return 0;
    }
    keys_opts o = {0};
    srv_config_defaults(&o.cfg);
    snprintf(o.tmpl.tier, sizeof o.tmpl.tier, "%s", o.cfg.default_tier);
    if (keys_parse(argc, argv, &o)) return 1;
    char path[SRV_PATH_MAX];
    srv_config_keys_path(&o.cfg, path, sizeof path);
    if (!o.cfg.keys_file[0] && mkdir(o.cfg.data_dir, 0700) && errno != EEXIST)
        return cli_fail("%s: %s", o.cfg.data_dir, strerror(errno));
    srv_keyring ring;
    mica_err err;
    if (srv_keys_load(&ring, path, &err)) return cli_fail_err(&err);
    int rc = 0;
    if (!strcmp(o.action, "add")) {
        rc = keys_add(&o, &ring, path);
    } else if (!strcmp(o.action, "list")) {
        keys_list(&ring);
    } else if (!strcmp(o.action, "revoke")) {
        if (!o.id)
            rc = cli_fail("keys: revoke needs a key id (see mica keys list)");
        else if (srv_keys_revoke(&ring, o.id, &err) || srv_keys_save(&ring, path, &err))
            rc = cli_fail("%s: %s", path, err.msg);
        else
            fprintf(stderr, "mica: revoked %s\n", o.id);
    } else {
        rc = cli_fail("keys: unknown action '%s' (add, list or revoke)", o.action);
    }
    srv_keys_free(&ring);
    return rc;
}
