/*
 * test_util.h - helpers shared by the cmocka tests: where ../shared is, skipping with a
 * visible message when it is absent, reading reference files, and float comparison that
 * names the index and both values (llm.c's check_tensor).
 */
#ifndef MICA_TEST_UTIL_H
#define MICA_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

/* The shared test data folder (CTest sets MICA_SHARED), or NULL when it is absent. */
static inline const char *tu_shared(void)
{
    const char *s = getenv("MICA_SHARED");
    struct stat st;
    if (!s || stat(s, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
    return s;
}

/* Builds "<shared>/<rel>" into buf; skips the test (with a message) when shared is absent. */
#define TU_SHARED_PATH(buf, rel)                                                                   \
    do {                                                                                           \
        const char *tu_s_ = tu_shared();                                                           \
        if (!tu_s_) {                                                                              \
            printf("SKIP: ../shared is absent; reference data test skipped\n");                    \
            skip();                                                                                \
        }                                                                                          \
        snprintf((buf), sizeof(buf), "%s/%s", tu_s_, (rel));                                       \
    } while (0)

static inline int tu_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A scratch directory for files a test writes (CTest sets MICA_TMP). */
static inline const char *tu_tmpdir(void)
{
    const char *t = getenv("MICA_TMP");
    return t ? t : "/tmp";
}

/* Reads a whole file; fails the test when it cannot. */
static inline char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) fail_msg("short read on %s", path);
    buf[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

/* Compares n floats; on the first element with |a-b| > atol fails with index and values.
 * Returns the maximum absolute difference. */
static inline double tu_check_close(const char *what, const float *got, const float *want, size_t n,
                                    double atol)
{
    double maxd = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)want[i];
        if (d < 0) d = -d;
        if (!(d <= atol))
            fail_msg("%s: index %zu: got %.9g want %.9g (|diff| %.3g > atol %.3g)", what, i,
                     (double)got[i], (double)want[i], d, atol);
        if (d > maxd) maxd = d;
    }
    return maxd;
}

/* Reads the numbers of the JSON array that follows "key": in text (a reference sidecar such
 * as llama.cpp's logits .json). Returns how many were read (at most max), -1 if absent. */
static inline int tu_json_numbers(const char *text, const char *key, double *out, int max)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (!p) return -1;
    p = strchr(p + strlen(pat), '[');
    if (!p) return -1;
    p++;
    int n = 0;
    while (*p && *p != ']' && n < max) {
        char *end;
        double v = strtod(p, &end);
        if (end == p) {
            p++;
            continue;
        }
        out[n++] = v;
        p = end;
    }
    return n;
}

/* Whether the bytes of needle occur anywhere in the file (a missing file holds nothing). */
static inline bool tu_file_has(const char *path, const char *needle)
{
    if (!tu_exists(path)) return false;
    size_t n, m = strlen(needle);
    char *data = tu_read_file(path, &n);
    bool found = false;
    for (size_t i = 0; !found && i + m <= n; i++) found = !memcmp(data + i, needle, m);
    free(data);
    return found;
}

#endif
