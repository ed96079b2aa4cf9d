/*
 * test_unicode.c - tests src/tokenizer/tok_unicode.c and its generated tables against facts
 * from the Unicode Character Database (UnicodeData.txt categories and simple lowercase
 * mappings, PropList.txt White_Space, canonical decompositions), and the UTF-8 decoding
 * rules llama.cpp's unicode_cpts_from_utf8 follows.
 */
#include "test_util.h"

#include "tokenizer/tok_unicode.h"

typedef struct cat_case {
    uint32_t cp;
    unsigned cat;
} cat_case;

static void test_categories_match_ucd(void **state)
{
    static const cat_case cases[] = {
        {0x0041, TOK_UCAT_LETTER},                                      /* A, Lu */
        {0x00E9, TOK_UCAT_LETTER},                                      /* e acute, Ll */
        {0x01C5, TOK_UCAT_LETTER},                                      /* Dz with caron, Lt */
        {0x02B0, TOK_UCAT_LETTER},                                      /* modifier h, Lm */
        {0x4E2D, TOK_UCAT_LETTER},                                      /* CJK, Lo */
        {0x0030, TOK_UCAT_NUMBER},                                      /* 0, Nd */
        {0x0661, TOK_UCAT_NUMBER},                                      /* Arabic-Indic one, Nd */
        {0x00BD, TOK_UCAT_NUMBER},                                      /* one half, No */
        {0x2160, TOK_UCAT_NUMBER},                                      /* Roman numeral one, Nl */
        {0x0020, TOK_UCAT_SEPARATOR},                                   /* space, Zs */
        {0x3000, TOK_UCAT_SEPARATOR},                                   /* ideographic space, Zs */
        {0x2028, TOK_UCAT_SEPARATOR},                                   /* line separator, Zl */
        {0x0300, TOK_UCAT_MARK},                                        /* combining grave, Mn */
        {0x0903, TOK_UCAT_MARK},                                        /* Devanagari visarga, Mc */
        {0x0021, TOK_UCAT_PUNCT},                                       /* !, Po */
        {0x005F, TOK_UCAT_PUNCT},                                       /* _, Pc */
        {0x00AB, TOK_UCAT_PUNCT},                                       /* guillemet, Pi */
        {0x0024, TOK_UCAT_SYMBOL},                                      /* $, Sc */
        {0x007E, TOK_UCAT_SYMBOL},                                      /* ~, Sm */
        {0x005E, TOK_UCAT_SYMBOL},                                      /* ^, Sk */
        {0x1F600, TOK_UCAT_SYMBOL},                                     /* grinning face, So */
        {0x0000, TOK_UCAT_CONTROL},                                     /* Cc */
        {0x0009, TOK_UCAT_CONTROL},                                     /* tab, Cc */
        {0x00AD, TOK_UCAT_CONTROL},                                     /* soft hyphen, Cf */
        {0xE000, TOK_UCAT_CONTROL},                                     /* private use, Co */
        {0xD800, TOK_UCAT_CONTROL},                                     /* surrogate, Cs */
        {0x0378, TOK_UCAT_UNDEFINED},                                   /* unassigned, Cn */
        {0x10FFFF, TOK_UCAT_UNDEFINED}, {0x110000, TOK_UCAT_UNDEFINED}, /* beyond Unicode */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned got = tok_ucat(cases[i].cp);
        if (got != cases[i].cat)
            fail_msg("U+%04X: category 0x%02X, want 0x%02X", cases[i].cp, got, cases[i].cat);
    }
}

static void test_white_space_is_the_property(void **state)
{
    static const uint32_t yes[] = {0x09,   0x0A,   0x0D,   0x20,   0x85,   0xA0,   0x1680,
                                   0x2000, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
    /* U+001C..U+001F are isspace() in Python but not White_Space; U+200B is Cf; U+180E lost
     * White_Space in Unicode 6.3 */
    static const uint32_t no[] = {0x1C, 0x1F, 0x41, 0x200B, 0x180E, 0xFEFF, 0x2581};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!tok_uspace(yes[i])) fail_msg("U+%04X should be White_Space", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (tok_uspace(no[i])) fail_msg("U+%04X should not be White_Space", no[i]);
}

static void test_lowercase(void **state)
{
    static const uint32_t pairs[][2] = {
        {'A', 'a'},       {'z', 'z'},         {'1', '1'},       {0x00C9, 0x00E9}, {0x00D7, 0x00D7},
        {0x0100, 0x0101}, {0x0101, 0x0101},   {0x0130, 0x0069}, /* I with dot: first of "i\u0307" */
        {0x0178, 0x00FF}, {0x03A3, 0x03C3},   {0x0410, 0x0430}, {0x10A0, 0x2D00}, {0x1E9E, 0x00DF},
        {0x212A, 0x006B}, /* Kelvin sign */
        {0xFF21, 0xFF41}, {0x10400, 0x10428}, {0x4E2D, 0x4E2D},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        uint32_t got = tok_ulower(pairs[i][0]);
        if (got != pairs[i][1])
            fail_msg("lower(U+%04X) = U+%04X, want U+%04X", pairs[i][0], got, pairs[i][1]);
    }
}

static void test_nfd_base_letter(void **state)
{
    static const uint32_t pairs[][2] = {
        {0x00E9, 'e'},    {0x00C0, 'A'},    {0x1EED, 'u'}, /* u with horn and hook above */
        {0x1EC7, 'e'},    {0x00C7, 'C'},    {0x0385, 0x00A8}, {0x2126, 0x03A9}, /* Ohm sign */
        {0xAC00, 0x1100}, /* Hangul GA -> choseong kiyeok */
        {'a', 'a'},       {0x00DF, 0x00DF}, {0x4E2D, 0x4E2D},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        uint32_t got = tok_unfd_base(pairs[i][0]);
        if (got != pairs[i][1])
            fail_msg("nfd(U+%04X)[0] = U+%04X, want U+%04X", pairs[i][0], got, pairs[i][1]);
    }
}

static void test_utf8_decoding_like_llama(void **state)
{
    size_t l;
    assert_int_equal(tok_utf8_decode("\xE4\xB8\xAD", 3, &l), 0x4E2D);
    assert_int_equal(l, 3);
    assert_int_equal(tok_utf8_decode("\xF0\x9F\x98\x80", 4, &l), 0x1F600);
    assert_int_equal(l, 4);
    /* llama.cpp checks continuation bytes only: an overlong NUL decodes to 0 */
    assert_int_equal(tok_utf8_decode("\xC0\x80", 2, &l), 0);
    assert_int_equal(l, 2);
    /* truncated, stray continuation, invalid lead, past U+10FFFF: U+FFFD, one byte */
    assert_int_equal(tok_utf8_decode("\xE4\xB8", 2, &l), 0xFFFD);
    assert_int_equal(l, 1);
    assert_int_equal(tok_utf8_decode("\x80", 1, &l), 0xFFFD);
    assert_int_equal(l, 1);
    assert_int_equal(tok_utf8_decode("\xFF", 1, &l), 0xFFFD);
    assert_int_equal(l, 1);
    assert_int_equal(tok_utf8_decode("\xF5\x80\x80\x80", 4, &l), 0xFFFD);
    assert_int_equal(l, 1);

    uint32_t cps[8];
    assert_int_equal(tok_utf8_to_cps("a\xE4\xB8z", 4, cps), 4);
    assert_int_equal(cps[1], 0xFFFD);
    assert_int_equal(cps[2], 0xFFFD);
    assert_int_equal(cps[3], 'z');
}

/* The tables must be sorted and non-overlapping for the binary searches to be right. */
static void test_tables_are_sorted(void **state)
{
    assert_int_equal(tok_udata_cat[0] >> 8, 0);
    for (size_t i = 1; i < tok_udata_n_cat; i++) {
        if ((tok_udata_cat[i] >> 8) <= (tok_udata_cat[i - 1] >> 8))
            fail_msg("category table not increasing at %zu", i);
        if ((tok_udata_cat[i] & 0xFF) == (tok_udata_cat[i - 1] & 0xFF))
            fail_msg("category table has adjacent equal ranges at %zu", i);
    }
    for (size_t i = 1; i < tok_udata_n_space; i++)
        assert_true(tok_udata_space[i - 1] < tok_udata_space[i]);
    for (size_t i = 0; i < tok_udata_n_lower; i++) {
        assert_true(tok_udata_lower[i].first <= tok_udata_lower[i].last);
        assert_true(tok_udata_lower[i].stride >= 1);
        if (i > 0) assert_true(tok_udata_lower[i - 1].last < tok_udata_lower[i].first);
    }
    for (size_t i = 1; i < tok_udata_n_nfd; i++)
        assert_true(tok_udata_nfd[i - 1].last < tok_udata_nfd[i].first);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_categories_match_ucd),
        cmocka_unit_test(test_white_space_is_the_property),
        cmocka_unit_test(test_lowercase),
        cmocka_unit_test(test_nfd_base_letter),
        cmocka_unit_test(test_utf8_decoding_like_llama),
        cmocka_unit_test(test_tables_are_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
