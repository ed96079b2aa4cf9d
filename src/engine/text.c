/*
 * text.c - the text side of generation: turns the pieces of sampled tokens into chunks that
 * are safe to send (valid UTF-8, invalid bytes replaced by U+FFFD; a character split over two
 * tokens waits for its end) and watches for stop strings, holding back any tail that could
 * still become one. Called by the scheduler (sched.c) once per generated token.
 */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

mica_status eng_text_init(eng_text *t, const char *const *stops, int32_t n_stops, size_t max_len,
                          mica_err *err)
{
    memset(t, 0, sizeof *t);
    core_buf_init(&t->pending, max_len);
    if (n_stops < 0 || n_stops > ENG_MAX_STOPS)
        return core_fail(err, MICA_EINVAL, "at most %d stop strings", ENG_MAX_STOPS);
    for (int32_t i = 0; i < n_stops; i++) {
        const size_t len = strlen(stops[i]);
        if (!len) continue; /* an empty stop string would stop before any text */
        if (len > ENG_MAX_STOP_LEN)
            return core_fail(err, MICA_EINVAL, "stop string %d is longer than %d bytes", i,
                             ENG_MAX_STOP_LEN);
        memcpy(t->stops[t->n_stops], stops[i], len + 1);
        t->n_stops++;
    }
    return MICA_OK;
}

void eng_text_free(eng_text *t)
{
    core_buf_free(&t->pending);
}

/* Bytes at the end of s[0..n) that start a valid but unfinished UTF-8 character. */
static size_t incomplete_utf8_tail(const char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        const unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue; /* a continuation byte: look further back */
        const int need = core_utf8_len(c);
        return need > 1 && (size_t)need > back ? back : 0;
    }
    return 0;
}

/* The longest tail of s[0..n) that is a proper prefix of a stop string. */
static size_t stop_prefix_tail(const eng_text *t, const char *s, size_t n)
{
    size_t best = 0;
    for (int32_t i = 0; i < t->n_stops; i++) {
        const size_t len = strlen(t->stops[i]);
        for (size_t h = len - 1 < n ? len - 1 : n; h > best; h--)
            if (!memcmp(s + n - h, t->stops[i], h)) {
                best = h;
                break;
            }
    }
    return best;
}

/* Offset of the first stop string in s[0..n), or n. */
static size_t find_stop(const eng_text *t, const char *s, size_t n)
{
    size_t first = n;
    for (int32_t i = 0; i < t->n_stops; i++) {
        const size_t len = strlen(t->stops[i]);
        for (size_t at = 0; at + len <= n && at < first; at++)
            if (!memcmp(s + at, t->stops[i], len)) {
                first = at;
                break;
            }
    }
    return first;
}

static void drop_front(core_buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

eng_text_result eng_text_push(eng_text *t, const char *piece, size_t len, core_buf *out)
{
    if (!core_buf_append(&t->pending, piece, len)) return ENG_TEXT_FULL;
    const char *p = t->pending.data;
    const size_t n = t->pending.len;
    const size_t stop = find_stop(t, p, n);
    if (stop < n) {
        const bool ok = core_buf_append_utf8(out, p, stop);
        t->pending.len = 0;
        return ok ? ENG_TEXT_STOP : ENG_TEXT_FULL;
    }
    size_t hold = stop_prefix_tail(t, p, n);
    const size_t partial = incomplete_utf8_tail(p, n);
    hold = partial > hold ? partial : hold;
    if (!core_buf_append_utf8(out, p, n - hold)) return ENG_TEXT_FULL;
    drop_front(&t->pending, n - hold);
    return ENG_TEXT_OK;
}

bool eng_text_flush(eng_text *t, core_buf *out)
{
    const bool ok = core_buf_append_utf8(out, t->pending.data, t->pending.len);
    t->pending.len = 0;
    return ok;
}
