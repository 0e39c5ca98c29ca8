/*
 * json_read.h - JSON text read into a jansson value as json_loadb reads it, at a fraction of its
 * cost (json_read.c).
 */
#ifndef SOMA_CORE_JSON_READ_H
#define SOMA_CORE_JSON_READ_H

#include <jansson.h>
#include <stddef.h>

/* json_loadb(text, len, flags, error), faster: the same value (members in the same order, the
 * same types), the same refusals. flags: 0, JSON_DECODE_ANY and/or JSON_REJECT_DUPLICATES (others
 * go to json_loadb as they are). New reference (caller decrefs); NULL when text is NULL, is not
 * JSON, repeats a key under JSON_REJECT_DUPLICATES, or memory ran out; error (or NULL) is filled
 * as json_loadb fills it when the text is refused. Any thread; no state. */
json_t *json_read(const char *text, size_t len, size_t flags, json_error_t *error);

#endif
