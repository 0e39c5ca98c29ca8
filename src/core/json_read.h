/*
 * json_read.h - JSON text read into a jansson value as json_loadb reads it, at a fraction of its
 * cost (json_read.c).
 */
#ifndef SOMA_CORE_JSON_READ_H
#define SOMA_CORE_JSON_READ_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Texts json_read leaves to json_loadb (what jscan_check refuses, a repeated key) are handed to it
 * only up to this size: jansson mishandles running out of memory while it reads a string. */
#define JSON_READ_JANSSON_MAX (256 * 1024)

/* json_loadb(text, len, flags, error), faster: the same value (members in the same order, the
 * same types), the same refusals. flags: 0, JSON_DECODE_ANY and/or JSON_REJECT_DUPLICATES (others
 * go to json_loadb as they are). New reference (caller decrefs); NULL when text is NULL, is not
 * JSON, repeats a key under JSON_REJECT_DUPLICATES, or memory ran out; error (or NULL) is filled
 * as json_loadb fills it when the text is refused (above JSON_READ_JANSSON_MAX bytes: our words,
 * line and column -1), and says "out of memory" (json_error_out_of_memory) when memory ran out:
 * then the text is never handed to json_loadb. Any thread; no state. */
json_t *json_read(const char *text, size_t len, size_t flags, json_error_t *error);
/* error (from json_read; may be NULL) says memory ran out: worth a retry, not a client's fault. */
bool json_read_out_of_memory(const json_error_t *error);

#endif
