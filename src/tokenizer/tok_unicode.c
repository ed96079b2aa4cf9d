/*
 * tok_unicode.c - lookups over the generated Unicode tables (categories, White_Space,
 * lowercase, NFD base letter) and llama.cpp-compatible UTF-8 decoding. Binary search over
 * sorted ranges; no allocation, no state. Does not split text (tok_pre.c) or normalize whole
 * strings (tok_wpm.c). Called by the pre-tokenizers, the regex engine and WordPiece.
 */
#include "tok_unicode.h"

#include "core/core.h"

unsigned tok_ucat(uint32_t cp)
{
    if (cp > TOK_UNICODE_MAX) return TOK_UCAT_UNDEFINED;
    /* last range whose first <= cp; the table starts at 0, so one always exists */
    size_t lo = 0, hi = tok_udata_n_cat;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((tok_udata_cat[mid] >> 8) <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return tok_udata_cat[lo] & 0xFFu;
}

bool tok_uspace(uint32_t cp)
{
    size_t lo = 0, hi = tok_udata_n_space;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tok_udata_space[mid] == cp) return true;
        if (tok_udata_space[mid] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Index of the last lowercase run with first <= cp, or n_lower when there is none. */
static size_t tok_lower_find(uint32_t cp)
{
    size_t lo = 0, hi = tok_udata_n_lower;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tok_udata_lower[mid].first <= cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == 0 ? tok_udata_n_lower : lo - 1;
}

/* Index of the last NFD range with first <= cp, or n_nfd when there is none. */
static size_t tok_nfd_find(uint32_t cp)
{
    size_t lo = 0, hi = tok_udata_n_nfd;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tok_udata_nfd[mid].first <= cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == 0 ? tok_udata_n_nfd : lo - 1;
}

uint32_t tok_ulower(uint32_t cp)
{
    size_t i = tok_lower_find(cp);
    if (i == tok_udata_n_lower) return cp;
    const tok_urun *r = &tok_udata_lower[i];
    if (cp > r->last || (cp - r->first) % r->stride != 0) return cp;
    return (uint32_t)((int64_t)cp + r->delta);
}

uint32_t tok_unfd_base(uint32_t cp)
{
    size_t i = tok_nfd_find(cp);
    if (i == tok_udata_n_nfd || cp > tok_udata_nfd[i].last) return cp;
    return tok_udata_nfd[i].value;
}

uint32_t tok_utf8_decode(const char *s, size_t n, size_t *len)
{
    int l = 1;
    uint32_t cp = core_utf8_decode(s, n, &l);
    /* F5..F7 leads decode past U+10FFFF; llama.cpp cannot re-encode those (it throws), so
     * mica treats them like any other invalid byte. */
    if (cp > TOK_UNICODE_MAX) {
        *len = 1;
        return 0xFFFD;
    }
    *len = (size_t)l;
    return cp;
}

size_t tok_utf8_to_cps(const char *s, size_t n, uint32_t *cps)
{
    size_t count = 0;
    for (size_t off = 0; off < n;) {
        size_t l;
        cps[count++] = tok_utf8_decode(s + off, n - off, &l);
        off += l;
    }
    return count;
}
