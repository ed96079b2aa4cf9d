/*
 * store_time.c - the request log's time values: retention durations ("72h") with the 72 h
 * cap, points in time as unix seconds or ISO-8601 (`mica logs --before`), ISO-8601 output and
 * the wall clock. Pure functions over strings; no database. Called by the gateway's flag
 * parsing, `mica logs` and the other store files.
 */
#define _POSIX_C_SOURCE 200809L
#include "store_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Reads exactly n decimal digits at *p (advancing it); false if any is missing. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Reads a run of 1..18 decimal digits; false for none or too many. */
static bool number(const char **p, int64_t *out)
{
    const char *s = *p;
    int64_t v = 0;
    int n = 0;
    while (*s >= '0' && *s <= '9') {
        if (++n > 18) return false;
        v = v * 10 + (*s++ - '0');
    }
    if (!n) return false;
    *p = s;
    *out = v;
    return true;
}

mica_status store_parse_retention(const char *s, bool allow_long, int64_t *ms, mica_err *err)
{
    const char *p = s;
    int64_t v, unit = 0;
    if (!number(&p, &v))
        return core_fail(err, MICA_EINVAL,
                         "retention '%s': not a duration such as 72h, 30m, 3d or 3600s", s);
    switch (*p) {
    case 's':
        unit = 1000;
        break;
    case 'm':
        unit = 60 * 1000;
        break;
    case 'h':
        unit = 3600 * 1000;
        break;
    case 'd':
        unit = 24 * 3600 * 1000;
        break;
    default:
        return core_fail(err, MICA_EINVAL, "retention '%s': needs a unit (s, m, h or d)", s);
    }
    if (p[1] != '\0')
        return core_fail(err, MICA_EINVAL, "retention '%s': unexpected '%s' after the unit", s,
                         p + 1);
    int64_t r;
    if (__builtin_mul_overflow(v, unit, &r))
        return core_fail(err, MICA_ERANGE, "retention '%s': too long", s);
    if (r <= 0) return core_fail(err, MICA_EINVAL, "retention '%s': must be positive", s);
    if (r > STORE_RETENTION_MAX_MS && !allow_long)
        return core_fail(err, MICA_ERANGE,
                         "retention '%s': longer than the 72h maximum (allowed only with "
                         "--allow-long-retention)",
                         s);
    *ms = r;
    return MICA_OK;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : len[m - 1];
}

/* "Z", "+HH:MM", "-HHMM" -> offset east of UTC in minutes. */
static bool zone(const char *p, int *minutes)
{
    if (!strcmp(p, "Z") || !strcmp(p, "z")) {
        *minutes = 0;
        return true;
    }
    if (*p != '+' && *p != '-') return false;
    int sign = *p++ == '-' ? -1 : 1, hh, mm;
    if (!digits(&p, 2, &hh)) return false;
    if (*p == ':') p++;
    if (!digits(&p, 2, &mm) || *p || hh > 23 || mm > 59) return false;
    *minutes = sign * (hh * 60 + mm);
    return true;
}

/* The time of day after a date: "THH:MM[:SS[.fff]]" and a zone -> ms since midnight UTC
 * (may be negative or past a day after the offset). */
static bool time_of_day(const char *p, int64_t *ms)
{
    int hh, mi, ss = 0, frac = 0, off;
    if (*p != 'T' && *p != 't' && *p != ' ') return false;
    p++;
    if (!digits(&p, 2, &hh) || *p++ != ':' || !digits(&p, 2, &mi)) return false;
    if (*p == ':') {
        p++;
        if (!digits(&p, 2, &ss)) return false;
        if (*p == '.' || *p == ',') {
            p++;
            int scale = 100, n = 0;
            for (; *p >= '0' && *p <= '9'; p++, n++, scale /= 10) frac += (*p - '0') * scale;
            if (!n) return false;
        }
    }
    if (hh > 23 || mi > 59 || ss > 59 || !zone(p, &off)) return false;
    *ms = ((int64_t)hh * 3600 + mi * 60 + ss - (int64_t)off * 60) * 1000 + frac;
    return true;
}

mica_status store_parse_time(const char *s, int64_t *ms, mica_err *err)
{
    const char *p = s;
    int64_t secs;
    /* A bare 4-digit number is more likely a year than a time in 1970: refused below. */
    if (number(&p, &secs) && *p == '\0' && p - s != 4) {
        int64_t v;
        if (__builtin_mul_overflow(secs, 1000, &v))
            return core_fail(err, MICA_ERANGE, "time '%s': too far in the future", s);
        *ms = v;
        return MICA_OK;
    }
    p = s;
    int y, m, d;
    int64_t tod = 0;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &m) || *p++ != '-' ||
        !digits(&p, 2, &d) || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m) ||
        (*p && !time_of_day(p, &tod)))
        return core_fail(err, MICA_EINVAL,
                         "time '%s': not unix seconds or ISO-8601 (2026-11-28 or "
                         "2026-11-28T12:00:00Z)",
                         s);
    *ms = days_from_civil(y, m, d) * 86400000LL + tod;
    return MICA_OK;
}

void store_format_time(int64_t ms, char *buf, size_t cap)
{
    int64_t secs = ms / 1000, rem = ms % 1000;
    if (rem < 0) rem += 1000, secs--;
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        snprintf(buf, cap, "%lld", (long long)ms);
        return;
    }
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)rem);
}

int64_t store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
