/*
 * test_grammar.c - tests src/grammar: the GBNF parser (what it accepts, what it refuses and
 * with which line), the matcher on whole strings (accepted or refused, by hand-checked
 * cases, including UTF-8 edge cases), when a document may end or is done, and token masks
 * against a brute-force reference that feeds every token's bytes to a fresh matcher after
 * the text so far, over a random vocabulary with multi-byte and split characters.
 */
#include "test_util.h"

#include "core/core.h"
#include "grammar/grammar.h"

static gram *parse_ok(const char *text)
{
    gram *g = NULL;
    mica_err err;
    if (gram_parse(&g, text, strlen(text), NULL, &err))
        fail_msg("grammar did not parse: %s\n%s", err.msg, text);
    return g;
}

/* Whether the whole of s is a document of g. */
static bool matches(const gram *g, const char *s, size_t n)
{
    gram_state st;
    mica_err err;
    assert_int_equal(gram_state_init(&st, g, &err), MICA_OK);
    const bool ok = gram_state_accept(&st, s, n, &err) == MICA_OK && gram_state_can_end(&st);
    gram_state_free(&st);
    return ok;
}

typedef struct match_case {
    const char *grammar;
    const char *yes[6];
    const char *no[6];
} match_case;

static const match_case match_cases[] = {
    {"root ::= \"a\" | \"b\"", {"a", "b"}, {"c", "ab", "", "A"}},
    {"root ::= [a-z]+ \"!\"?", {"abc", "abc!", "z"}, {"", "ABC", "abc!!", "!"}},
    {"root ::= \"x\"{2,3}", {"xx", "xxx"}, {"x", "xxxx", ""}},
    {"root ::= \"x\"{2} \"y\"{1,}", {"xxy", "xxyyy"}, {"xy", "xx", "xxxy"}},
    {"root ::= [^\"\\\\]*", {"h\xc3\xa9llo", "", "a b"}, {"\"", "a\\b"}},
    {"root ::= (\"ab\" | \"c\")* \"d\"", {"ababcd", "d", "abd", "cccd"}, {"ad", "abab", "dd"}},
    {"root ::= . .", {"\xc3\xa9\xe2\x82\xac", "ab", "\xf0\x9f\x98\x80x"}, {"a", "abc"}},
    {"root ::= \"\\x41\\u00e9\\n\" [\\]\\-]",
     {"A\xc3\xa9\n]", "A\xc3\xa9\n-"},
     {"A\xc3\xa9\n", "Ae\n]"}},
    {"# a comment\nroot ::= list   # the document\nlist ::= \"[\" (item (\",\" item)*)? \"]\"\n"
     "item ::= [0-9] | list\n",
     {"[]", "[1,[2,[]]]", "[[[]]]"},
     {"[1,]", "[", "[12]", "[1,[2]"}},
    /* newlines inside a rule: after '|' and inside parentheses */
    {"root ::=\n  \"a\" |\n  \"b\" (\n \"c\"\n )\n", {"a", "bc"}, {"b", "ac"}},
    /* invalid UTF-8: overlong '/', a surrogate, above U+10FFFF, a lone continuation byte */
    {"root ::= .*",
     {"ok", "\xe2\x82\xac"},
     {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80"}},
    {"root ::= [^a-c\\u00e9]", {"d", "\xc3\xa8", "\xe2\x82\xac"}, {"a", "b", "\xc3\xa9"}},
};

static void test_match(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof match_cases / sizeof *match_cases; i++) {
        const match_case *mc = &match_cases[i];
        gram *g = parse_ok(mc->grammar);
        for (int k = 0; k < 6 && mc->yes[k]; k++)
            if (!matches(g, mc->yes[k], strlen(mc->yes[k])))
                fail_msg("case %zu: '%s' should match", i, mc->yes[k]);
        for (int k = 0; k < 6 && mc->no[k]; k++)
            if (matches(g, mc->no[k], strlen(mc->no[k])))
                fail_msg("case %zu: '%s' should not match", i, mc->no[k]);
        gram_free(g);
    }
}

typedef struct bad_case {
    const char *grammar;
    const char *message; /* a part of the error */
    const char *bad_rule;
} bad_case;

static const bad_case bad_cases[] = {
    {"root ::= foo", "rule 'foo' is used but not defined", "foo"},
    {"start ::= \"a\"", "no 'root' rule", ""},
    {"root ::= \"a\n", "line 1: unterminated string literal", ""},
    {"root ::= \"a\"\nx ::= [\\q]", "line 2: unknown escape", ""},
    {"root ::= root \"a\" | \"b\"", "rule 'root' is left-recursive", "root"},
    {"root ::= a\na ::= b? a \"x\"\nb ::= \"y\"", "is left-recursive", "a"},
    {"root ::= \"{\" root \"}\"", "rule 'root' can never finish", "root"},
    {"root ::= \"a\"\nroot ::= \"b\"", "line 2: rule 'root' is defined twice", ""},
    {"root ::= \"a\"{3,2}", "is backwards", ""},
    {"root ::= * \"a\"", "without a symbol before it", ""},
    {"root ::= []", "empty character class", ""},
    {"root ::= \"a\" )", "unexpected ')'", ""},
};

static void test_parse_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case *bc = &bad_cases[i];
        gram *g = NULL;
        mica_err err;
        char bad[GRAM_NAME_MAX];
        const mica_status st = gram_parse(&g, bc->grammar, strlen(bc->grammar), bad, &err);
        if (st != MICA_EINVAL) fail_msg("case %zu: status %d, want MICA_EINVAL", i, st);
        assert_null(g);
        if (!strstr(err.msg, bc->message))
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, bc->message);
        if (strcmp(bad, bc->bad_rule))
            fail_msg("case %zu: bad rule '%s', want '%s'", i, bad, bc->bad_rule);
    }
}

static void test_end_and_done(void **state)
{
    (void)state;
    gram *g = parse_ok("root ::= \"a\" \"b\"? \n");
    gram_state st;
    mica_err err;
    assert_int_equal(gram_state_init(&st, g, &err), MICA_OK);
    assert_false(gram_state_can_end(&st));
    assert_int_equal(gram_state_accept(&st, "a", 1, &err), MICA_OK);
    assert_true(gram_state_can_end(&st));
    assert_false(gram_state_done(&st));
    /* a refused byte leaves the state as it was */
    assert_int_equal(gram_state_accept(&st, "ax", 2, &err), MICA_EINVAL);
    assert_int_equal(gram_state_accept(&st, "b", 1, &err), MICA_OK);
    assert_true(gram_state_done(&st));
    gram_state_free(&st);
    gram_free(g);
    /* half a character: neither complete nor refused */
    g = parse_ok("root ::= \"\\u00e9\"");
    assert_int_equal(gram_state_init(&st, g, &err), MICA_OK);
    assert_int_equal(gram_state_accept(&st, "\xc3", 1, &err), MICA_OK);
    assert_false(gram_state_can_end(&st));
    assert_int_equal(gram_state_accept(&st, "\xa9", 1, &err), MICA_OK);
    assert_true(gram_state_done(&st));
    gram_state_free(&st);
    gram_free(g);
}

/* ---- masks against brute force -------------------------------------------------------- */

#define N_TOK 1200

typedef struct test_vocab {
    char *pieces[N_TOK];
    size_t lens[N_TOK];
    bool eog[N_TOK];
} test_vocab;

/* Single bytes (all 256), then random pieces of 2-6 bytes drawn from an alphabet that
 * includes JSON punctuation, and multi-byte characters that pieces may cut in half. */
static void make_vocab(test_vocab *v, core_rng *rng)
{
    static const char *const atoms[] = {"a",
                                        "b",
                                        "x",
                                        "0",
                                        "1",
                                        "9",
                                        "\"",
                                        "\\",
                                        "{",
                                        "}",
                                        "[",
                                        "]",
                                        ",",
                                        ":",
                                        " ",
                                        "\n",
                                        "-",
                                        ".",
                                        "e",
                                        "t",
                                        "r",
                                        "u",
                                        "n",
                                        "l",
                                        "\xc3\xa9",
                                        "\xe2\x82\xac",
                                        "\xf0\x9f\x98\x80",
                                        "\xc3",
                                        "\xa9",
                                        "\x82"};
    const size_t n_atoms = sizeof atoms / sizeof *atoms;
    for (int t = 0; t < N_TOK; t++) {
        char buf[64];
        size_t n = 0;
        if (t < 256) {
            buf[n++] = (char)t;
        } else if (t > 256) {
            const int k = 1 + (int)core_rng_below(rng, 5);
            for (int i = 0; i < k; i++) {
                const char *a = atoms[core_rng_below(rng, n_atoms)];
                memcpy(buf + n, a, strlen(a));
                n += strlen(a);
            }
        } /* token 256: empty, like a control token */
        v->pieces[t] = malloc(n + 1);
        memcpy(v->pieces[t], buf, n);
        v->lens[t] = n;
        v->eog[t] = t == N_TOK - 1;
    }
}

static void free_vocab(test_vocab *v)
{
    for (int t = 0; t < N_TOK; t++) free(v->pieces[t]);
}

/* Token t is allowed after prefix: a fresh matcher takes prefix and then t's bytes. */
static bool brute_allowed(const gram *g, const test_vocab *v, const core_buf *prefix, int t)
{
    gram_state st;
    mica_err err;
    assert_int_equal(gram_state_init(&st, g, &err), MICA_OK);
    assert_int_equal(gram_state_accept(&st, prefix->data ? prefix->data : "", prefix->len, &err),
                     MICA_OK);
    bool ok;
    if (v->eog[t])
        ok = gram_state_can_end(&st);
    else
        ok = v->lens[t] > 0 && gram_state_accept(&st, v->pieces[t], v->lens[t], &err) == MICA_OK;
    gram_state_free(&st);
    return ok;
}

static const char *const mask_grammars[] = {
    /* JSON-like values with strings of any character */
    "root ::= value\n"
    "value ::= obj | arr | str | num | \"true\" | \"null\"\n"
    "obj ::= \"{\" ws (str ws \":\" ws value (\",\" ws str ws \":\" ws value)*)? \"}\"\n"
    "arr ::= \"[\" ws (value (\",\" ws value)*)? \"]\"\n"
    "str ::= \"\\\"\" ([^\"\\\\\\x00-\\x1F] | \"\\\\\" [\"\\\\n])* \"\\\"\"\n"
    "num ::= \"-\"? [0-9]{1,4} (\".\" [0-9]+)?\n"
    "ws ::= [ \\n]{0,2}\n",
    /* ambiguous alternatives that share prefixes, and multi-byte characters */
    "root ::= (\"ab\" | \"a\" \"b\"? | \"\\u00e9\"+ | [\\u20ac-\\U0001F600])+ \"!\"?",
    /* only a few words */
    "root ::= (\"true\" | \"null\" | \"[1,2]\") \"\\n\"{0,3}",
};

static void check_masks(const char *grammar, const test_vocab *v, const gram_vocab *gv,
                        core_rng *rng)
{
    gram *g = parse_ok(grammar);
    gram_masker *mk;
    gram_state st;
    mica_err err;
    assert_int_equal(gram_masker_new(&mk, gv, &err), MICA_OK);
    assert_int_equal(gram_state_init(&st, g, &err), MICA_OK);
    core_buf prefix;
    core_buf_init(&prefix, 1 << 20);
    for (int step = 0; step < 40; step++) {
        const uint64_t *bits;
        assert_int_equal(gram_masker_mask(mk, &st, &bits, &err), MICA_OK);
        int allowed[N_TOK], n_allowed = 0;
        for (int t = 0; t < N_TOK; t++) {
            const bool got = (bits[t >> 6] >> (t & 63)) & 1;
            const bool want = brute_allowed(g, v, &prefix, t);
            if (got != want)
                fail_msg("step %d after '%.*s': token %d ('%.*s'): mask %d, brute force %d", step,
                         (int)prefix.len, prefix.data ? prefix.data : "", t, (int)v->lens[t],
                         v->pieces[t], got, want);
            if (got && !v->eog[t]) allowed[n_allowed++] = t;
        }
        if (!n_allowed) break;
        const int t = allowed[core_rng_below(rng, (uint64_t)n_allowed)];
        assert_int_equal(gram_state_accept(&st, v->pieces[t], v->lens[t], &err), MICA_OK);
        core_buf_append(&prefix, v->pieces[t], v->lens[t]);
    }
    core_buf_free(&prefix);
    gram_state_free(&st);
    gram_masker_free(mk);
    gram_free(g);
}

static void test_masks_brute_force(void **state)
{
    (void)state;
    core_rng rng;
    core_rng_seed(&rng, 7);
    test_vocab v;
    make_vocab(&v, &rng);
    gram_vocab *gv;
    mica_err err;
    assert_int_equal(gram_vocab_new(&gv, N_TOK, (const char *const *)v.pieces, v.lens, v.eog, &err),
                     MICA_OK);
    for (size_t i = 0; i < sizeof mask_grammars / sizeof *mask_grammars; i++)
        for (int walk = 0; walk < 4; walk++) check_masks(mask_grammars[i], &v, gv, &rng);
    gram_vocab_free(gv);
    free_vocab(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_end_and_done),
        cmocka_unit_test(test_masks_brute_force),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
