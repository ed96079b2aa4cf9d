/*
 * tmpl_json.c - Jansson values to template values (tmpl_json.h): objects become dicts in
 * their key order, arrays lists, integers ints, reals floats, strings str (NUL allowed), null
 * None. Built into mica_tmpl_json (linked by the CLI, the gateway and the tests), not into the
 * core library, which has no JSON parser.
 */
#include "tmpl_json.h"

#include "core/core.h"

#define JSON_MAX_TEXT (64u << 20)

static tmpl_value *convert(const json_t *j);

static tmpl_value *convert_array(const json_t *j)
{
    tmpl_value *list = tmpl_list();
    size_t i;
    json_t *item;
    json_array_foreach(j, i, item)
    {
        tmpl_value *v = convert(item);
        if (!list || !v || tmpl_list_push(list, v, NULL) != MICA_OK) {
            if (!list) tmpl_value_free(v);
            tmpl_value_free(list);
            return NULL;
        }
    }
    return list;
}

static tmpl_value *convert_object(const json_t *j)
{
    tmpl_value *dict = tmpl_dict();
    const char *key;
    size_t key_len;
    json_t *item;
    json_object_keylen_foreach((json_t *)j, key, key_len, item)
    {
        tmpl_value *v = convert(item);
        if (!dict || !v || tmpl_dict_set(dict, key, key_len, v, NULL) != MICA_OK) {
            if (!dict) tmpl_value_free(v);
            tmpl_value_free(dict);
            return NULL;
        }
    }
    return dict;
}

static tmpl_value *convert(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return convert_object(j);
    case JSON_ARRAY:
        return convert_array(j);
    case JSON_STRING:
        return tmpl_str(json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return tmpl_int((int64_t)json_integer_value(j));
    case JSON_REAL:
        return tmpl_float(json_real_value(j));
    case JSON_TRUE:
        return tmpl_bool(true);
    case JSON_FALSE:
        return tmpl_bool(false);
    default:
        return tmpl_none();
    }
}

mica_status tmpl_from_json(const json_t *j, tmpl_value **out, const char *what, mica_err *err)
{
    *out = j ? convert(j) : NULL;
    if (!*out) return core_fail(err, MICA_ENOMEM, "%s: out of memory", what);
    return MICA_OK;
}

mica_status tmpl_from_json_text(const char *text, size_t len, tmpl_value **out, const char *what,
                                mica_err *err)
{
    *out = NULL;
    if (len > JSON_MAX_TEXT)
        return core_fail(err, MICA_EUNSUPPORTED, "%s: %zu bytes of JSON (the cap is %u)", what, len,
                         JSON_MAX_TEXT);
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (!j)
        return core_fail(err, MICA_EFORMAT, "%s: invalid JSON at line %d, column %d: %s", what,
                         je.line, je.column, je.text);
    mica_status st = tmpl_from_json(j, out, what, err);
    json_decref(j);
    return st;
}
