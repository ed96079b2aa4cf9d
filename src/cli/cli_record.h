/*
 * cli_record.h - a JSON-lines example as the model sees it (cli_record.c), shared by
 * `mica eval` and the training commands. Needs Jansson and src/template.
 */
#ifndef MICA_CLI_RECORD_H
#define MICA_CLI_RECORD_H

#include "core/core.h"
#include "template/template.h"

#include <jansson.h>

typedef struct cli_record {
    char *prompt;    /* the text the model is given (chat: rendered, generation prompt last) */
    char *reference; /* the expected answer */
    char *target;    /* chat with want_target: the text after the prompt to learn; else NULL */
} cli_record;

/* rec is {"prompt", "completion"} or {"messages"} ending with the assistant's answer; chat
 * renders it with fmt (messages records always need chat). MICA_EFORMAT says what the record
 * lacks; the caller adds file:line. */
mica_status cli_record_render(json_t *rec, bool chat, const tmpl_chat *fmt, bool want_target,
                              cli_record *r, mica_err *err);
void cli_record_free(cli_record *r);

#endif
