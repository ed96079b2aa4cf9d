/*
 * tmpl_json.h - template values from JSON through Jansson, for the programs that have Jansson
 * (the CLI, the gateway, the tests). Not part of the numerical core: tmpl_json.c is built into
 * the mica_tmpl_json library, never into libmica.
 */
#ifndef MICA_TMPL_JSON_H
#define MICA_TMPL_JSON_H

#include "template.h"

#include <jansson.h>

/* Converts a Jansson value (objects keep their key order, integers stay ints, reals floats).
 * *out is a new value for tmpl_value_free. what names the value in messages. */
mica_status tmpl_from_json(const json_t *j, tmpl_value **out, const char *what, mica_err *err);

/* Parses JSON text (at most 64 MiB) and converts it; errors name what, line and column. */
mica_status tmpl_from_json_text(const char *text, size_t len, tmpl_value **out, const char *what,
                                mica_err *err);

#endif
