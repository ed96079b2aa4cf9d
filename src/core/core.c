/*
 * core.c - error messages, checked allocation, bounded buffers, file reading, clock, CPU
 * count and UTF-8 coding. Used by every module; calls only libc.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *mica_status_str(mica_status s)
{
    switch (s) {
    case MICA_OK:
        return "ok";
    case MICA_EIO:
        return "i/o error";
    case MICA_EFORMAT:
        return "format error";
    case MICA_EUNSUPPORTED:
        return "unsupported";
    case MICA_ENOMEM:
        return "out of memory";
    case MICA_EINVAL:
        return "invalid argument";
    case MICA_ERANGE:
        return "out of range";
    case MICA_EBUSY:
        return "busy";
    }
    return "unknown status";
}

mica_status core_fail(mica_err *err, mica_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

mica_status core_fail_prefix(mica_err *err, const char *ctx)
{
    if (!err) return MICA_EINVAL;
    char old[MICA_ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    core_buf b;
    core_buf_init(&b, sizeof err->msg - 1);
    /* A message that no longer fits is cut, never lost entirely. */
    if (!core_buf_printf(&b, "%s: %s", ctx, old)) {
        core_buf_free(&b);
        size_t n = strlen(ctx);
        if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
        memcpy(err->msg, ctx, n);
        memcpy(err->msg + n, ": ", 2);
        size_t rest = sizeof err->msg - n - 3;
        memcpy(err->msg + n + 2, old, rest);
        err->msg[sizeof err->msg - 1] = '\0';
        return err->status;
    }
    memcpy(err->msg, b.data, b.len + 1);
    core_buf_free(&b);
    return err->status;
}

void *core_calloc(size_t n, size_t size)
{
    if (n == 0 || size == 0) return calloc(1, 1);
    return calloc(n, size);
}

void core_buf_init(core_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

static bool core_buf_reserve(core_buf *b, size_t extra)
{
    uint64_t need;
    if (!core_add_ok(b->len, extra, &need) || !core_add_ok(need, 1, &need) || need > b->max + 1)
        return false;
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max + 1) cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (!p) return false;
    b->data = p;
    b->cap = cap;
    return true;
}

bool core_buf_append(core_buf *b, const void *p, size_t n)
{
    if (!core_buf_reserve(b, n)) return false;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

bool core_buf_printf(core_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !core_buf_reserve(b, (size_t)n)) return false;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

void core_buf_free(core_buf *b)
{
    free(b->data);
    core_buf_init(b, b->max);
}

mica_status core_read_file(const char *path, size_t max, char **out, size_t *len, mica_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return core_fail(err, MICA_EIO, "%s: %s", path, strerror(errno));
    core_buf b;
    core_buf_init(&b, max);
    char chunk[65536];
    size_t n;
    mica_status st = MICA_OK;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (!core_buf_append(&b, chunk, n)) {
            st = core_fail(err, MICA_ENOMEM, "%s: larger than %zu bytes", path, max);
            goto fail;
        }
    }
    if (ferror(f)) {
        st = core_fail(err, MICA_EIO, "%s: read error", path);
        goto fail;
    }
    if (!b.data && !core_buf_append(&b, "", 0)) {
        st = core_fail(err, MICA_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    fclose(f);
    *out = b.data;
    if (len) *len = b.len;
    return MICA_OK;
fail:
    fclose(f);
    core_buf_free(&b);
    return st;
}

double core_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int core_n_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

uint64_t core_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

int core_utf8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

uint32_t core_utf8_decode(const char *s, size_t n, int *len)
{
    const unsigned char *u = (const unsigned char *)s;
    int l = core_utf8_len(u[0]);
    if (l == 1) {
        *len = 1;
        return u[0] < 0x80 ? u[0] : 0xFFFD;
    }
    if ((size_t)l > n) {
        *len = 1;
        return 0xFFFD;
    }
    uint32_t cp = u[0] & (0xFF >> (l + 1));
    for (int i = 1; i < l; i++) {
        if ((u[i] & 0xC0) != 0x80) {
            *len = 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (u[i] & 0x3F);
    }
    *len = l;
    return cp;
}

/* A decoded sequence is valid when it is the shortest form of a scalar value (JSON
 * encoders reject overlong forms and surrogates). */
static bool utf8_valid(uint32_t cp, int len)
{
    switch (len) {
    case 1:
        return cp < 0x80;
    case 2:
        return cp >= 0x80;
    case 3:
        return cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
    default:
        return cp >= 0x10000 && cp <= 0x10FFFF;
    }
}

bool core_buf_append_utf8(core_buf *out, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int len;
        const uint32_t cp = core_utf8_decode(s + i, n - i, &len);
        if (!utf8_valid(cp, len) || (cp == 0xFFFD && len == 1)) {
            if (!core_buf_append(out, "\xEF\xBF\xBD", 3)) return false;
        } else if (!core_buf_append(out, s + i, (size_t)len)) {
            return false;
        }
        i += (size_t)len;
    }
    return true;
}

bool core_buf_append_json_str(core_buf *b, const char *s, size_t n)
{
    if (!core_buf_append(b, "\"", 1)) return false;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        bool ok;
        if (c == '"' || c == '\\') {
            const char esc[2] = {'\\', (char)c};
            ok = core_buf_append(b, esc, 2);
        } else if (c == '\n') {
            ok = core_buf_append(b, "\\n", 2);
        } else if (c < 0x20) {
            ok = core_buf_printf(b, "\\u%04x", c);
        } else {
            ok = core_buf_append(b, s + i, 1);
        }
        if (!ok) return false;
    }
    return core_buf_append(b, "\"", 1);
}
