/*
 * test_template_ref.c - the 64 real chat templates of ../shared/testdata/templates rendered
 * over its 17 conversations with the variables its README lists (messages, tools or None,
 * add_generation_prompt, bos / eos when not null, the template's extra_variables, the
 * conversation's kwargs, strftime_now frozen at 2025-01-15 10:30:00): each rendering must
 * equal transformers' reference byte for byte, and where transformers raised the render must
 * fail with Python's message, prefixed by the template name and line. Also: each parsed
 * template renders every conversation a second time identically, and mutated templates
 * never crash. Skips visibly without ../shared.
 */
#include "test_util.h"

#include "template/template.h"
#include "template/tmpl_json.h"

#include <dirent.h>

#define NOW "2025-01-15 10:30:00"

typedef struct conv {
    char name[128];
    tmpl_value *messages, *tools;
    json_t *kwargs; /* object or NULL */
    bool gen;
} conv;

typedef struct suite {
    char root[1024];
    json_t *meta;
    conv convs[64];
    int n_convs;
} suite;

static tmpl_value *from_json(const json_t *j, const char *what)
{
    tmpl_value *v;
    mica_err err;
    if (tmpl_from_json(j, &v, what, &err)) fail_msg("%s", err.msg);
    return v;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(((const conv *)a)->name, ((const conv *)b)->name);
}

static void load_conversations(suite *s)
{
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/conversations", s->root);
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".json")) continue;
        assert_true(s->n_convs < 64);
        conv *c = &s->convs[s->n_convs++];
        snprintf(c->name, sizeof c->name, "%.*s", (int)(n - 5), e->d_name);
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        json_error_t je;
        json_t *j = json_load_file(path, 0, &je);
        if (!j) fail_msg("%s: %s", path, je.text);
        c->messages = from_json(json_object_get(j, "messages"), path);
        json_t *tools = json_object_get(j, "tools");
        c->tools = tools && !json_is_null(tools) ? from_json(tools, path) : NULL;
        json_t *kw = json_object_get(j, "kwargs");
        c->kwargs = json_is_object(kw) ? json_incref(kw) : NULL;
        c->gen = json_is_true(json_object_get(j, "add_generation_prompt"));
        json_decref(j);
    }
    closedir(d);
    qsort(s->convs, (size_t)s->n_convs, sizeof s->convs[0], cmp_names);
}

static bool load_suite(suite *s)
{
    char rel[] = "testdata/templates";
    TU_SHARED_PATH(s->root, rel);
    char path[1200];
    snprintf(path, sizeof path, "%s/templates.json", s->root);
    json_error_t je;
    if (!(s->meta = json_load_file(path, 0, &je))) fail_msg("%s: %s", path, je.text);
    load_conversations(s);
    return true;
}

static void free_suite(suite *s)
{
    for (int i = 0; i < s->n_convs; i++) {
        tmpl_value_free(s->convs[i].messages);
        tmpl_value_free(s->convs[i].tools);
        json_decref(s->convs[i].kwargs);
    }
    json_decref(s->meta);
}

/* Template variables: extra_variables, then the conversation's kwargs (later ones win). */
typedef struct var_set {
    tmpl_var v[32];
    tmpl_value *owned[32];
    size_t n, n_owned;
} var_set;

static void add_vars(var_set *vs, const json_t *obj, const char *what)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        assert_true(vs->n < 32);
        tmpl_value *v = from_json(val, what);
        vs->owned[vs->n_owned++] = v;
        vs->v[vs->n++] = (tmpl_var){key, v};
    }
}

typedef struct outcome {
    int ok, errors, mismatches, renders;
} outcome;

static char *read_opt(const char *path, size_t *len)
{
    return tu_exists(path) ? tu_read_file(path, len) : NULL;
}

/* Compares one rendering (or failure) with the reference files; prints what differs. */
static bool check_pair(const char *root, const char *tname, const conv *c, mica_status st,
                       const char *out, size_t out_len, const mica_err *err)
{
    char base[1400], path[1500];
    snprintf(base, sizeof base, "%s/renders/%s__%s", root, tname, c->name);
    snprintf(path, sizeof path, "%s.txt", base);
    size_t want_len;
    char *want = read_opt(path, &want_len);
    bool good;
    if (want) {
        good = st == MICA_OK && out_len == want_len && !memcmp(out, want, want_len);
        if (!good) {
            size_t i = 0;
            while (st == MICA_OK && i < out_len && i < want_len && out[i] == want[i]) i++;
            printf("MISMATCH %s x %s: %s; first difference at byte %zu\n  want: '%.80s'\n  got:  "
                   "'%.80s'\n",
                   tname, c->name, st ? err->msg : "rendered", i, want + (i < want_len ? i : 0),
                   st ? "" : out + (i < out_len ? i : 0));
        }
    } else {
        snprintf(path, sizeof path, "%s.error.txt", base);
        want = tu_read_file(path, &want_len);
        /* our message: "<template>.jinja:<line>: <Python's message>", cut at 511 bytes */
        char prefix[600];
        snprintf(prefix, sizeof prefix, "%s.jinja:", tname);
        const char *name_at = strstr(err->msg, prefix);
        const char *msg_at = name_at ? strstr(name_at + strlen(prefix), ": ") : NULL;
        size_t cmp = want_len < 200 ? want_len : 200;
        good = st != MICA_OK && name_at && msg_at && !strncmp(msg_at + 2, want, cmp);
        if (!good)
            printf("MISMATCH %s x %s: transformers raised '%s', mica: %s\n", tname, c->name, want,
                   st ? err->msg : "rendered");
    }
    free(want);
    return good;
}

static mica_status render_pair(const tmpl_template *t, const json_t *tm, const conv *c,
                               const var_set *vs, char **out, size_t *len, mica_err *err)
{
    json_t *bos = json_object_get(tm, "bos_token"), *eos = json_object_get(tm, "eos_token");
    tmpl_render_params p = {
        .messages = c->messages,
        .tools = c->tools,
        .add_generation_prompt = c->gen,
        .bos_token = json_is_string(bos) ? json_string_value(bos) : NULL,
        .eos_token = json_is_string(eos) ? json_string_value(eos) : NULL,
        .vars = vs->v,
        .n_vars = vs->n,
        .now = NOW,
    };
    return tmpl_render(t, &p, out, len, err);
}

static tmpl_template *parse_file(const char *root, const char *tname, char **src, size_t *len)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/templates/%s.jinja", root, tname);
    *src = tu_read_file(path, len);
    tmpl_template *t;
    mica_err err;
    char name[300];
    snprintf(name, sizeof name, "%s.jinja", tname);
    if (tmpl_parse(&t, name, *src, *len, &err)) fail_msg("%s", err.msg);
    return t;
}

static void conv_vars(var_set *vs, const json_t *tm, const conv *c, const char *tname)
{
    memset(vs, 0, sizeof *vs);
    json_t *extra = json_object_get(tm, "extra_variables");
    if (json_is_object(extra)) add_vars(vs, extra, tname);
    if (c->kwargs) add_vars(vs, c->kwargs, c->name);
}

static void test_reference_renders(void **state)
{
    suite s = {0};
    load_suite(&s);
    outcome o = {0};
    const char *tname;
    json_t *tm;
    int n_templates = 0;
    json_object_foreach(s.meta, tname, tm)
    {
        n_templates++;
        char *src;
        size_t src_len;
        tmpl_template *t = parse_file(s.root, tname, &src, &src_len);
        for (int i = 0; i < s.n_convs; i++) {
            const conv *c = &s.convs[i];
            var_set vs;
            conv_vars(&vs, tm, c, tname);
            char *out = NULL, *again = NULL;
            size_t len = 0, len2 = 0;
            mica_err err, err2;
            mica_status st = render_pair(t, tm, c, &vs, &out, &len, &err);
            if (check_pair(s.root, tname, c, st, out, len, &err)) {
                o.ok++;
                st ? o.errors++ : o.renders++;
            } else {
                o.mismatches++;
            }
            /* parse once, render many: the same again */
            mica_status st2 = render_pair(t, tm, c, &vs, &again, &len2, &err2);
            if (st2 != st || (st == MICA_OK && (len2 != len || memcmp(out, again, len))) ||
                (st && strcmp(err.msg, err2.msg)))
                fail_msg("%s x %s: a second render differs", tname, c->name);
            free(out);
            free(again);
            for (size_t k = 0; k < vs.n_owned; k++) tmpl_value_free(vs.owned[k]);
        }
        tmpl_free(t);
        free(src);
    }
    printf("%d templates x %d conversations: %d match transformers byte for byte (%d renders, "
           "%d errors raised where transformers raised), %d differ\n",
           n_templates, s.n_convs, o.ok, o.renders, o.errors, o.mismatches);
    assert_int_equal(n_templates, 64);
    assert_int_equal(s.n_convs, 17);
    assert_int_equal(o.mismatches, 0);
    free_suite(&s);
}

/* ---- mutated templates: an error naming the template, or a rendering; never a crash ------ */

static uint64_t rng(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* One random edit of src[0..len) into dst (room for 2 * len + 2). */
static size_t mutate(const char *src, size_t len, char *dst, uint64_t *x)
{
    static const char syms[] = "{}%#-+()[]|'\".:,=~ \n";
    size_t a = len ? rng(x) % len : 0, n = 1 + rng(x) % 24;
    if (a + n > len) n = len - a;
    switch (rng(x) % 3) {
    case 0: /* delete a span */
        memcpy(dst, src, a);
        memcpy(dst + a, src + a + n, len - a - n);
        return len - n;
    case 1: /* duplicate a span */
        memcpy(dst, src, a + n);
        memcpy(dst + a + n, src + a, len - a);
        return len + n;
    default: /* overwrite a byte with template punctuation */
        memcpy(dst, src, len);
        if (len) dst[a] = syms[rng(x) % (sizeof syms - 1)];
        return len;
    }
}

static void test_mutated_templates(void **state)
{
    suite s = {0};
    load_suite(&s);
    const char *tname;
    json_t *tm;
    uint64_t x = 0x2545F4914F6CDD1Dull;
    int parsed = 0, rendered = 0, total = 0;
    json_object_foreach(s.meta, tname, tm)
    {
        char path[1400], name[300];
        snprintf(path, sizeof path, "%s/templates/%s.jinja", s.root, tname);
        snprintf(name, sizeof name, "%s.jinja", tname);
        size_t len;
        char *src = tu_read_file(path, &len), *dst = malloc(2 * len + 2);
        assert_non_null(dst);
        for (int k = 0; k < 25; k++, total++) {
            size_t n = mutate(src, len, dst, &x);
            tmpl_template *t;
            mica_err err;
            if (tmpl_parse(&t, name, dst, n, &err)) {
                if (strncmp(err.msg, name, strlen(name))) fail_msg("%s", err.msg);
                continue;
            }
            parsed++;
            const conv *c = &s.convs[rng(&x) % (uint64_t)s.n_convs];
            var_set vs;
            conv_vars(&vs, tm, c, tname);
            char *out;
            size_t out_len;
            if (!render_pair(t, tm, c, &vs, &out, &out_len, &err)) {
                rendered++;
                free(out);
            } else if (strncmp(err.msg, name, strlen(name))) {
                fail_msg("%s", err.msg);
            }
            for (size_t i = 0; i < vs.n_owned; i++) tmpl_value_free(vs.owned[i]);
            tmpl_free(t);
        }
        free(dst);
        free(src);
    }
    printf("%d mutated templates: %d parsed, %d rendered, every failure named its template\n",
           total, parsed, rendered);
    free_suite(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_renders),
        cmocka_unit_test(test_mutated_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
