/*
 * schema_json.h - JSON Schema to GBNF (schema_json.c, in the Jansson-linked
 * mica_grammar_json library): what response_format and `mica run --json-schema` constrain
 * generation with. The grammar's text goes to mica_grammar_new.
 */
#ifndef MICA_GRAMMAR_SCHEMA_JSON_H
#define MICA_GRAMMAR_SCHEMA_JSON_H

#include "core/core.h"

#include <jansson.h>

/* Appends the GBNF of documents that validate against schema. Supported: type (one or a
 * list), properties (in their order; required ones always written, the others optional),
 * required, additionalProperties (false unless given: only declared properties are written),
 * enum, const, items, minItems, maxItems, minLength, maxLength, pattern (anchors, literals,
 * classes, groups, alternation, quantifiers), anyOf, oneOf, $ref to #/$defs or #/definitions
 * (recursion allowed when it can end), annotations. Anything else, or an invalid schema:
 * MICA_EINVAL with "schema: #/json/pointer: what is wrong". */
mica_status gram_schema_gbnf(json_t *schema, core_buf *out, mica_err *err);
/* The same from schema text. */
mica_status gram_schema_gbnf_text(const char *text, size_t len, core_buf *out, mica_err *err);
/* The GBNF of any JSON object ({"type": "json_object"} response formats). */
mica_status gram_schema_any_object(core_buf *out, mica_err *err);

#endif
