/*
 * memory_rows.h - the memory outbox's row bodies, built the same way by both store drivers
 * (sqlite_memory.c, pg_memory.c): what a committed event or a remember call puts in the outbox.
 */
#ifndef SOMA_STORE_MEMORY_ROWS_H
#define SOMA_STORE_MEMORY_ROWS_H

#include <jansson.h>

#include "core/err.h"

/* The outbox body of a committed event when it is a memory: a user turn or a completed reply.
 * SOMA_OK with *text NULL for other events; else *text (caller frees) and *key (the event id,
 * borrowed from event). SOMA_ERR_INVALID for an event without an id. */
enum soma_err memory_event_body(const char *tenant, const char *session_id, json_t *event, char **text,
				const char **key) SOMA_MUST_CHECK;
/* The same body as a JSON object {value, tags} (*body: caller decrefs; NULL when the event is no
 * memory), for a driver that writes the memory itself rather than its outbox row. */
enum soma_err memory_event_row(const char *tenant, const char *session_id, json_t *event, json_t **body,
			       const char **key) SOMA_MUST_CHECK;
/* The text a memory is found by: value.content, else value.text (strings), else the whole value as
 * compact JSON. The built-in search indexes it (sqlite_memory.c, pg_memory.c) and a reply's context
 * shows a recalled memory by it (tasks/conversation_prep.c): one rule, so what a recall finds is
 * what the LLM reads. Caller frees; NULL when value is NULL or memory ran out. */
char *memory_value_text(const json_t *value);
/* The outbox body of a remember call's row {value, tags?}. Caller frees; NULL on OOM. */
char *memory_remember_body(json_t *row);

#endif
