/*
 * test_schema.c - tests src/grammar/schema_json.c with the engine's public grammar API: for
 * each schema, 100 completions sampled at temperature 1 from a random-weight model (a
 * vocabulary of byte tokens, so any JSON can be written) must be JSON that validates against
 * the schema. The validator below is written for the test from the JSON Schema rules (types,
 * properties in order, required, no other properties, enum, const, items, min/max items and
 * lengths, patterns through POSIX regcomp, anyOf, oneOf, $ref) over Jansson, independent of
 * the compiler. Also: invalid and unsupported schemas fail naming the schema path, and the
 * json_object grammar takes objects only.
 */
#include "test_util.h"

#include "core/core.h"
#include "grammar/grammar.h"
#include "grammar/schema_json.h"
#include "model/model_synth.h"

#include <jansson.h>
#include <regex.h>
#include <unistd.h>

/* ---- the validator ------------------------------------------------------------------- */

static bool validate(json_t *root, json_t *s, json_t *v, char *why, size_t cap);

static bool fail_why(char *why, size_t cap, const char *what)
{
    snprintf(why, cap, "%s", what);
    return false;
}

static json_t *lookup_ref(json_t *root, const char *ref)
{
    const char *name = strrchr(ref, '/') + 1;
    json_t *defs = json_object_get(root, strstr(ref, "$defs") ? "$defs" : "definitions");
    return json_object_get(defs, name);
}

static bool type_is(const char *t, json_t *v)
{
    if (!strcmp(t, "object")) return json_is_object(v);
    if (!strcmp(t, "array")) return json_is_array(v);
    if (!strcmp(t, "string")) return json_is_string(v);
    if (!strcmp(t, "integer")) return json_is_integer(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    return !strcmp(t, "null") && json_is_null(v);
}

static bool check_type(json_t *t, json_t *v)
{
    if (json_is_string(t)) return type_is(json_string_value(t), v);
    size_t i;
    json_t *x;
    json_array_foreach(t, i, x)
    {
        if (type_is(json_string_value(x), v)) return true;
    }
    return false;
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static bool check_string(json_t *s, json_t *v, char *why, size_t cap)
{
    const size_t n = utf8_chars(json_string_value(v), json_string_length(v));
    json_t *min = json_object_get(s, "minLength"), *max = json_object_get(s, "maxLength");
    if (min && (json_int_t)n < json_integer_value(min)) return fail_why(why, cap, "too short");
    if (max && (json_int_t)n > json_integer_value(max)) return fail_why(why, cap, "too long");
    json_t *pat = json_object_get(s, "pattern");
    if (!pat) return true;
    regex_t re;
    assert_int_equal(regcomp(&re, json_string_value(pat), REG_EXTENDED | REG_NOSUB), 0);
    const bool ok = strlen(json_string_value(v)) == json_string_length(v) &&
                    regexec(&re, json_string_value(v), 0, NULL, 0) == 0;
    regfree(&re);
    return ok || fail_why(why, cap, "pattern does not match");
}

static bool check_array(json_t *root, json_t *s, json_t *v, char *why, size_t cap)
{
    json_t *min = json_object_get(s, "minItems"), *max = json_object_get(s, "maxItems");
    const json_int_t n = (json_int_t)json_array_size(v);
    if (min && n < json_integer_value(min)) return fail_why(why, cap, "too few items");
    if (max && n > json_integer_value(max)) return fail_why(why, cap, "too many items");
    json_t *items = json_object_get(s, "items");
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        if (items && !validate(root, items, x, why, cap)) return false;
    }
    return true;
}

static int prop_index(json_t *props, const char *key)
{
    int i = 0;
    const char *k;
    json_t *x;
    json_object_foreach(props, k, x)
    {
        if (!strcmp(k, key)) return i;
        i++;
    }
    return -1;
}

/* Strict objects: declared properties only, in their declared order, required ones present. */
static bool check_object(json_t *root, json_t *s, json_t *v, char *why, size_t cap)
{
    json_t *props = json_object_get(s, "properties");
    if (!props) return true;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(s, "required"), i, x)
    {
        if (!json_object_get(v, json_string_value(x))) return fail_why(why, cap, "missing");
    }
    int last = -1;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        const int at = prop_index(props, key);
        if (at < 0) return fail_why(why, cap, "a property not in the schema");
        if (at <= last) return fail_why(why, cap, "properties out of order");
        last = at;
        if (!validate(root, json_object_get(props, key), val, why, cap)) return false;
    }
    return true;
}

static bool validate(json_t *root, json_t *s, json_t *v, char *why, size_t cap)
{
    if (json_is_true(s)) return true;
    json_t *x;
    if ((x = json_object_get(s, "$ref")))
        return validate(root, lookup_ref(root, json_string_value(x)), v, why, cap);
    if ((x = json_object_get(s, "const")) && !json_equal(x, v)) return fail_why(why, cap, "const");
    if ((x = json_object_get(s, "enum"))) {
        size_t i;
        json_t *e;
        bool found = false;
        json_array_foreach(x, i, e) found |= json_equal(e, v);
        if (!found) return fail_why(why, cap, "not in enum");
    }
    const char *alts = json_object_get(s, "anyOf") ? "anyOf" : "oneOf";
    if ((x = json_object_get(s, alts))) {
        size_t i, n_ok = 0;
        json_t *sub;
        char sub_why[128];
        json_array_foreach(x, i, sub) n_ok += validate(root, sub, v, sub_why, sizeof sub_why);
        if (n_ok == 0 || (!strcmp(alts, "oneOf") && n_ok > 1))
            return fail_why(why, cap, "anyOf/oneOf");
    }
    if ((x = json_object_get(s, "type")) && !check_type(x, v)) return fail_why(why, cap, "type");
    if (json_is_string(v)) return check_string(s, v, why, cap);
    if (json_is_array(v)) return check_array(root, s, v, why, cap);
    if (json_is_object(v)) return check_object(root, s, v, why, cap);
    return true;
}

/* ---- sampling ------------------------------------------------------------------------ */

typedef struct fixture {
    char path[512];
    mica_model *m;
    mica_context *c;
    float *logits;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s/test_schema_%ld.gguf", tu_tmpdir(), (long)getpid());
    model_synth_params p = model_synth_default_params();
    p.n_ctx = 1024;
    mica_err err;
    if (model_synth_write(f->path, &p, &err)) fail_msg("model_synth_write: %s", err.msg);
    if (mica_model_load(&f->m, f->path, &err)) fail_msg("%s", err.msg);
    mica_context_params cp = mica_context_default_params();
    cp.n_threads = 1;
    if (mica_context_new(&f->c, f->m, cp, &err)) fail_msg("%s", err.msg);
    f->logits = malloc((size_t)mica_model_n_vocab(f->m) * sizeof *f->logits);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    free(f->logits);
    mica_context_free(f->c);
    mica_model_free(f->m);
    unlink(f->path);
    free(f);
    return 0;
}

/* One completion after BOS at temperature 1 with no other cut, into text. */
static void sample_one(fixture *f, const char *gbnf, uint64_t seed, core_buf *text)
{
    mica_err err;
    mica_grammar *g;
    mica_sampler *s;
    mica_sampler_params sp = mica_sampler_default_params();
    sp.temperature = 1.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.seed = seed;
    if (mica_grammar_new(&g, f->m, gbnf, strlen(gbnf), &err)) fail_msg("%s", err.msg);
    assert_int_equal(mica_sampler_new(&s, sp, mica_model_n_vocab(f->m), &err), MICA_OK);
    mica_seq_truncate(f->c, 0, 0);
    mica_token t = mica_model_bos(f->m);
    text->len = 0;
    const int32_t n_ctx = mica_context_n_ctx(f->c);
    for (int32_t pos = 0;; pos++) {
        if (pos == n_ctx)
            fail_msg("seed %llu: no complete document in %d tokens: %.*s", (unsigned long long)seed,
                     n_ctx, (int)text->len, text->data);
        if (mica_decode(f->c, 0, &t, 1, pos, false, f->logits, &err)) fail_msg("%s", err.msg);
        if (mica_grammar_apply(g, f->logits, &err)) fail_msg("%s", err.msg);
        t = mica_sampler_sample(s, f->logits);
        if (mica_model_is_eog(f->m, t)) break;
        if (mica_grammar_accept(g, t, &err)) fail_msg("%s", err.msg);
        char piece[64];
        const size_t n = mica_token_to_piece(f->m, t, false, piece, sizeof piece);
        core_buf_append(text, piece, n);
        if (mica_grammar_done(g)) break;
    }
    mica_sampler_free(s);
    mica_grammar_free(g);
}

static const char *const schemas[] = {
    /* required and optional properties, a pattern, an enum in an array */
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"maxLength\":8},"
    "\"age\":{\"type\":\"integer\"},"
    "\"email\":{\"type\":\"string\",\"pattern\":\"^[a-z]{1,6}@[a-z]{1,5}\\\\.(com|org)$\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",\"c\"]},\"maxItems\":3},"
    "\"ok\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"age\"]}",
    /* enum of mixed values */
    "{\"enum\":[\"red\",\"green\",1,null,{\"x\":[true]},\"\\u00e9\\\"\"]}",
    /* nested arrays with bounds */
    "{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"number\"},"
    "\"minItems\":1,\"maxItems\":3},\"minItems\":2,\"maxItems\":4}",
    /* anyOf, oneOf, type lists, const */
    "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"minLength\":2,\"maxLength\":4},"
    "{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":\"boolean\"},"
    "\"v\":{\"oneOf\":[{\"type\":\"null\"},{\"const\":\"fixed\"}]},"
    "\"n\":{\"type\":[\"number\",\"null\"]}},\"required\":[\"ok\",\"n\"]}]}",
    /* patterns: classes, groups, quantifiers, characters JSON escapes */
    "{\"type\":\"object\",\"properties\":{"
    "\"code\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-[0-9]{3,4}$\"},"
    "\"hex\":{\"type\":\"string\",\"pattern\":\"^(0x)?[0-9a-f]{1,8}$\"},"
    "\"odd\":{\"type\":\"string\",\"pattern\":\"^[a-c\\\"\\\\\\\\]{1,3}(x|yz)*$\"}},"
    "\"required\":[\"code\",\"hex\",\"odd\"]}",
    /* a recursive $ref that can end */
    "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
    "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},\"maxItems\":2}},"
    "\"required\":[\"v\"]}},\"$ref\":\"#/$defs/node\"}",
};

static void test_sampled_documents_validate(void **state)
{
    fixture *f = *state;
    core_buf gbnf, text;
    core_buf_init(&gbnf, 1 << 24);
    core_buf_init(&text, 1 << 20);
    for (size_t i = 0; i < sizeof schemas / sizeof *schemas; i++) {
        json_error_t je;
        json_t *schema = json_loads(schemas[i], 0, &je);
        if (!schema) fail_msg("schema %zu: %s", i, je.text);
        mica_err err;
        gbnf.len = 0;
        if (gram_schema_gbnf(schema, &gbnf, &err)) fail_msg("schema %zu: %s", i, err.msg);
        for (uint64_t seed = 0; seed < 100; seed++) {
            sample_one(f, gbnf.data, seed * 7919 + i, &text);
            json_t *doc = json_loadb(text.data, text.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!doc)
                fail_msg("schema %zu seed %llu: not JSON (%s): %.*s", i, (unsigned long long)seed,
                         je.text, (int)text.len, text.data);
            char why[128] = "";
            if (!validate(schema, schema, doc, why, sizeof why))
                fail_msg("schema %zu seed %llu: invalid (%s): %.*s", i, (unsigned long long)seed,
                         why, (int)text.len, text.data);
            json_decref(doc);
        }
        json_decref(schema);
    }
    core_buf_free(&gbnf);
    core_buf_free(&text);
}

/* ---- errors and the json_object grammar ----------------------------------------------- */

typedef struct bad_schema {
    const char *schema;
    const char *message; /* a part of the error */
} bad_schema;

static const bad_schema bad_schemas[] = {
    {"{\"type\":\"object\",\"properties\":{\"age\":{\"type\":\"integr\"}}}",
     "schema: #/properties/age/type: unknown type 'integr'"},
    {"{\"type\":\"string\",\"format\":\"date\"}", "schema: #/format: unsupported keyword"},
    {"{\"type\":\"array\",\"items\":{\"type\":\"number\",\"minimum\":3}}",
     "schema: #/items/minimum: unsupported keyword"},
    {"{\"properties\":{\"a/b\":{\"enum\":[]}}}", "schema: #/properties/a~1b/enum: must be"},
    {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "schema: #/maxItems: is below"},
    {"{\"anyOf\":[{\"type\":\"null\"},{\"$ref\":\"#/$defs/none\"}]}",
     "schema: #/anyOf/1/$ref: '#/$defs/none' does not exist"},
    {"{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}",
     "schema: #/$defs/a: a recursive $ref that never ends"},
    {"{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"c\":{\"$ref\":\"#/$defs/n\"}},"
     "\"required\":[\"c\"]}},\"$ref\":\"#/$defs/n\"}",
     "#/$defs/n"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}",
     "schema: #/required/0: 'b' is not among the properties"},
    {"{\"type\":\"string\",\"pattern\":\"^a\\\\bc$\"}", "schema: #/pattern: word boundaries"},
    {"{\"type\":\"string\",\"pattern\":\"a(b\"}", "schema: #/pattern: missing ')'"},
    {"false", "schema: #: the schema false accepts nothing"},
};

static void test_schema_errors(void **state)
{
    (void)state;
    core_buf out;
    core_buf_init(&out, 1 << 24);
    for (size_t i = 0; i < sizeof bad_schemas / sizeof *bad_schemas; i++) {
        mica_err err;
        const char *s = bad_schemas[i].schema;
        if (gram_schema_gbnf_text(s, strlen(s), &out, &err) != MICA_EINVAL)
            fail_msg("schema %zu compiled: %s", i, s);
        if (!strstr(err.msg, bad_schemas[i].message))
            fail_msg("schema %zu: message '%s' lacks '%s'", i, err.msg, bad_schemas[i].message);
        assert_int_equal(out.len, 0);
    }
    core_buf_free(&out);
}

static bool gbnf_matches(const char *gbnf, const char *doc)
{
    gram *g;
    gram_state st;
    mica_err err;
    if (gram_parse(&g, gbnf, strlen(gbnf), NULL, &err)) fail_msg("%s", err.msg);
    assert_int_equal(gram_state_init(&st, g, &err), MICA_OK);
    const bool ok = !gram_state_accept(&st, doc, strlen(doc), &err) && gram_state_can_end(&st);
    gram_state_free(&st);
    gram_free(g);
    return ok;
}

static void test_json_object_and_unanchored(void **state)
{
    (void)state;
    core_buf out;
    core_buf_init(&out, 1 << 24);
    mica_err err;
    assert_int_equal(gram_schema_any_object(&out, &err), MICA_OK);
    assert_true(gbnf_matches(out.data, "{\"a\": [1, {\"b\": null}], \"c\": \"\\ud83d\\ude00\"}"));
    assert_true(gbnf_matches(out.data, "{}"));
    assert_false(gbnf_matches(out.data, "[]"));
    assert_false(gbnf_matches(out.data, "{\"a\": \"\\ud800\"}")); /* a lone surrogate */
    assert_false(gbnf_matches(out.data, "{\"a\": 1,}"));
    /* whitespace is bounded: a newline and up to 20 indentation characters */
    assert_true(gbnf_matches(out.data, "{\n                    }"));
    assert_false(gbnf_matches(out.data, "{\n                     }"));
    out.len = 0;
    const char *s = "{\"type\":\"string\",\"pattern\":\"ab\"}";
    assert_int_equal(gram_schema_gbnf_text(s, strlen(s), &out, &err), MICA_OK);
    assert_true(gbnf_matches(out.data, "\"xaby\""));
    assert_true(gbnf_matches(out.data, "\"ab\""));
    assert_false(gbnf_matches(out.data, "\"a b\""));
    core_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_errors),
        cmocka_unit_test(test_json_object_and_unanchored),
        cmocka_unit_test_setup_teardown(test_sampled_documents_validate, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
