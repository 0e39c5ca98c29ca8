/*
 * event.h - the conversation event (CONTRACTS.md §2, version "sa01-v1").
 */
#ifndef SOMA_CORE_EVENT_H
#define SOMA_CORE_EVENT_H

#include <jansson.h>

#define EVENT_VERSION "sa01-v1"

/* A new event with a fresh event_id, created_at now, attachments [] and the given fields;
 * metadata is stolen (NULL for {}); persona_id may be NULL. seq is added by the store for
 * committed events. The caller owns the result. */
json_t *chat_event_new(const char *session_id, const char *role, const char *type, const char *message,
		       const char *persona_id, json_t *metadata);

#endif
