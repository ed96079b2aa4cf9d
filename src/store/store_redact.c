/*
 * store_redact.c - masks personal data in prompts and responses before they are stored
 * (`mica serve --redact`): e-mail addresses, payment card numbers, phone numbers and ID-like
 * numbers become "[email]", "[card]", "[phone]" and "[id]". A single left-to-right pass in
 * linear time (prompts are up to the gateway's body cap); ASCII patterns only, other bytes
 * are copied. Heuristics, not a guarantee: the rules favour masking, and keep what is
 * clearly not personal (dates, times, versions, IP addresses, decimals, short numbers).
 * Called by store_log_insert and the tests.
 */
#include "store_int.h"

#include <string.h>

#define MAX_GROUPS 24

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}
static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static bool is_alnum(char c)
{
    return is_digit(c) || is_alpha(c);
}
static bool is_local_char(char c)
{
    return is_alnum(c) || (c && strchr("._%+-", c));
}
static bool is_domain_char(char c)
{
    return is_alnum(c) || c == '-' || c == '.';
}

/* The length of an e-mail address at p (local@label.label...tld), 0 if there is none. */
static size_t match_email(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && is_local_char(p[i])) i++;
    if (i == 0 || i >= n || p[i] != '@') return 0;
    size_t d0 = i + 1, end = d0;
    while (end < n && is_domain_char(p[end])) end++;
    while (end > d0 && (p[end - 1] == '.' || p[end - 1] == '-')) end--; /* sentence ends */
    size_t labels = 0, start = d0, last = d0;
    for (size_t k = d0; k <= end; k++) {
        if (k < end && p[k] != '.') continue;
        if (k == start) return 0; /* empty label: "a@b..c" */
        labels++;
        last = start;
        start = k + 1;
    }
    if (labels < 2 || end - last < 2) return 0;
    for (size_t k = last; k < end; k++)
        if (!is_alpha(p[k])) return 0; /* the top-level domain is letters */
    return end;
}

/* A run of digit groups: "+1 (555) 123-4567", "4111 1111 1111 1111", "2026-11-28". */
typedef struct num_run {
    size_t len; /* bytes */
    int n_digits, n_groups;
    int group[MAX_GROUPS];
    char digits[20]; /* the first 19 digits, for the Luhn check */
    bool plus, parens_ok;
    int n_open, n_close;
    unsigned seps; /* SEP_* seen between groups */
} num_run;

enum { SEP_SPACE = 1, SEP_DASH = 2, SEP_DOT = 4 };

static unsigned sep_bit(char c)
{
    return c == ' ' ? SEP_SPACE : c == '-' ? SEP_DASH : c == '.' ? SEP_DOT : 0;
}

/* Separator run before the next group: 1-2 of " -.()", then a digit; returns its length. */
static size_t separator(const char *p, size_t n)
{
    size_t k = 0;
    while (k < n && k < 2 && p[k] && strchr(" -.()", p[k])) k++;
    return k > 0 && k < n && is_digit(p[k]) ? k : 0;
}

/* Scans digit groups from p (which starts with a digit, '+' or '('). Extends over separators
 * while the digits stay at most 19 (a card's length) so rescans stay cheap. */
static void scan_number(const char *p, size_t n, num_run *r)
{
    memset(r, 0, sizeof *r);
    size_t i = 0;
    if (p[i] == '+') r->plus = true, i++;
    if (i < n && p[i] == '(') r->n_open++, i++;
    for (;;) {
        size_t g = i;
        while (g < n && is_digit(p[g])) g++;
        int len = (int)(g - i);
        if (len == 0 || (r->n_groups > 0 && r->n_digits + len > 19) || r->n_groups == MAX_GROUPS)
            break;
        for (size_t k = i; k < g && r->n_digits + (int)(k - i) < 19; k++)
            r->digits[r->n_digits + (k - i)] = p[k];
        r->n_digits += len;
        r->group[r->n_groups++] = len;
        r->len = g;
        /* A closing parenthesis right after a group belongs to it: "(555)". */
        size_t s = separator(p + g, n - g);
        if (!s) {
            if (g < n && p[g] == ')' && r->n_open > r->n_close) r->n_close++, r->len = g + 1;
            break;
        }
        for (size_t k = g; k < g + s; k++) {
            r->seps |= sep_bit(p[k]);
            r->n_open += p[k] == '(';
            r->n_close += p[k] == ')';
        }
        i = g + s;
    }
    r->parens_ok = r->n_open > 0 && r->n_open == r->n_close;
}

static bool luhn_ok(const num_run *r)
{
    int sum = 0;
    for (int i = r->n_digits - 1, k = 0; i >= 0; i--, k++) {
        int d = r->digits[i] - '0';
        if (k & 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
    }
    return sum % 10 == 0;
}

static bool one_sep(unsigned seps)
{
    return seps == SEP_SPACE || seps == SEP_DASH || seps == SEP_DOT;
}

/* What a run of digit groups is: "[card]", "[phone]", "[id]" or NULL (keep it). */
static const char *classify(const num_run *r)
{
    int nd = r->n_digits, ng = r->n_groups;
    bool parens = r->n_open || r->n_close;
    if (r->plus) return nd >= 7 && nd <= 15 ? "[phone]" : NULL;
    if (!parens && nd >= 13 && nd <= 19 &&
        (ng == 1 || (one_sep(r->seps) && !(r->seps & SEP_DOT))) && luhn_ok(r))
        return "[card]";
    if (r->parens_ok) return nd >= 7 && nd <= 15 ? "[phone]" : NULL;
    if (parens) return NULL;
    if (ng == 1) return nd >= 8 ? "[id]" : NULL;
    if (!one_sep(r->seps)) return NULL; /* "2026-11-28 10:30" */
    if (r->seps == SEP_DASH && ng == 3 && r->group[0] == 3 && r->group[1] == 2 && r->group[2] == 4)
        return "[id]"; /* 123-45-6789 */
    if (r->seps == SEP_DOT) {
        bool ip = ng == 4;
        for (int i = 0; i < ng; i++) ip &= r->group[i] <= 3;
        return ng >= 3 && nd >= 9 && nd <= 15 && !ip ? "[phone]" : NULL;
    }
    if (nd >= 9 && nd <= 15) return "[phone]";
    if (ng == 2 && r->group[0] == 3 && r->group[1] == 4) return "[phone]"; /* 555-1234 */
    return nd >= 13 ? "[id]" : NULL; /* grouped account numbers that are no card */
}

/* Whether a run of digit groups may start at p[i]: not inside a word, and not inside a
 * number already seen ("3.14159265", "1,234,567", the "11-28" of "2026-11-28"). */
static bool number_start(const char *p, size_t i, size_t n)
{
    char c = p[i];
    bool opener =
        is_digit(c) ||
        ((c == '+' || c == '(') && i + 1 < n &&
         (is_digit(p[i + 1]) || (c == '+' && p[i + 1] == '(' && i + 2 < n && is_digit(p[i + 2]))));
    if (!opener || i == 0) return opener;
    char b = p[i - 1];
    if (is_alnum(b) || b == '_') return false;
    return !((b == '.' || b == ',' || b == '-') && i >= 2 && is_digit(p[i - 2]));
}

static bool emit(core_buf *out, const char *s, size_t n)
{
    return core_buf_append(out, s, n);
}

mica_status store_redact(const char *in, size_t n, core_buf *out)
{
    size_t i = 0;
    while (i < n) {
        char c = in[i];
        bool word_start = i == 0 || !(is_alnum(in[i - 1]) || in[i - 1] == '_');
        if (is_local_char(c) && (i == 0 || !is_local_char(in[i - 1]))) {
            size_t len = match_email(in + i, n - i);
            if (len) {
                if (!emit(out, "[email]", 7)) return MICA_ENOMEM;
                i += len;
                continue;
            }
        }
        if (number_start(in, i, n)) {
            num_run r;
            scan_number(in + i, n - i, &r);
            size_t end = i + r.len;
            const char *label = NULL;
            if (r.len && !(end < n && (is_alnum(in[end]) || in[end] == '_'))) label = classify(&r);
            if (label) {
                if (!emit(out, label, strlen(label))) return MICA_ENOMEM;
                i = end;
                continue;
            }
        }
        if (word_start && is_alnum(c)) {
            size_t t = i;
            int digits = 0, alphas = 0;
            for (; t < n && is_alnum(in[t]); t++)
                digits += is_digit(in[t]), alphas += is_alpha(in[t]);
            bool id = alphas > 0 && digits >= 5 && t - i >= 6; /* X12345678, AB123456C */
            if (!(id ? emit(out, "[id]", 4) : emit(out, in + i, t - i))) return MICA_ENOMEM;
            i = t;
            continue;
        }
        if (!emit(out, &c, 1)) return MICA_ENOMEM;
        i++;
    }
    return emit(out, "", 0) ? MICA_OK : MICA_ENOMEM;
}
