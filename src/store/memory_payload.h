/*
 * memory_payload.h - a stored memory's payload read as a jansson value (memory_payload.c).
 */
#ifndef SOMA_STORE_MEMORY_PAYLOAD_H
#define SOMA_STORE_MEMORY_PAYLOAD_H

#include <jansson.h>
#include <stddef.h>

/* text[0..len) (any JSON value) as json_loadb(text, len, JSON_DECODE_ANY) reads it, faster.
 * New reference (caller decrefs); NULL when text is NULL, not JSON, or on OOM. */
json_t *memory_payload_read(const char *text, size_t len);

#endif
