/*
 * cli_default.c - where the embedded default model is: the model mica trained itself
 * (models/mica-sensor-moe.gguf, see models/README.md) that `mica run`, `mica chat` and
 * `mica serve` use when no -m is given. Looked up in $MICA_DEFAULT_MODEL, then next to the
 * binary (build/mica finds ../models/), then in the source tree the binary was built from.
 */
#define _DEFAULT_SOURCE /* readlink */
#include "cli.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_FILE "models/" CLI_DEFAULT_MODEL_NAME ".gguf"

static bool readable(const char *path)
{
    return access(path, R_OK) == 0;
}

/* dir/rel when readable, into buf. */
static bool try_path(char *buf, size_t cap, const char *dir, const char *rel)
{
    const int n = snprintf(buf, cap, "%s/%s", dir, rel);
    return n > 0 && (size_t)n < cap && readable(buf);
}

const char *cli_default_model(void)
{
    static char path[PATH_MAX + 64];
    const char *env = getenv("MICA_DEFAULT_MODEL");
    if (env && *env) return env;
    char exe[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        if (try_path(path, sizeof path, exe, "../" DEFAULT_FILE) ||
            try_path(path, sizeof path, exe, DEFAULT_FILE))
            return path;
    }
#ifdef MICA_SOURCE_DIR
    if (try_path(path, sizeof path, MICA_SOURCE_DIR, DEFAULT_FILE)) return path;
#endif
    return NULL;
}

int cli_need_default_model(const char *cmd, const char **model)
{
    if (*model) return 0;
    if ((*model = cli_default_model())) return 0;
    return cli_fail("%s: no -m MODEL given and the default model (%s) was not found next to "
                    "the binary; set MICA_DEFAULT_MODEL or rebuild it with `make default-model`",
                    cmd, DEFAULT_FILE);
}
