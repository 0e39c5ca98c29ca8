/*
 * memory_rows.c - the memory outbox's row bodies (see memory_rows.h).
 */
#include "store/memory_rows.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"

char *memory_value_text(const json_t *value)
{
	const char *t = json_string_value(json_object_get(value, "content"));
	if (!t)
		t = json_string_value(json_object_get(value, "text"));
	return t ? strdup(t) : json_out(value, 1, NULL);
}

enum soma_err memory_event_row(const char *tenant, const char *session_id, json_t *event, json_t **body,
			       const char **key)
{
	*body = NULL;
	*key = NULL;
	const char *type = json_string_value(json_object_get(event, "type"));
	json_t *meta = json_object_get(event, "metadata");
	if (!type || (strcmp(type, "user") != 0 && strcmp(type, "assistant.final") != 0))
		return SOMA_OK;
	const char *status = json_string_value(json_object_get(meta, "status"));
	if (strcmp(type, "assistant.final") == 0 && status && strcmp(status, "completed") != 0)
		return SOMA_OK; /* a stopped reply is not a memory */
	const char *id = json_string_value(json_object_get(event, "event_id"));
	if (!id)
		return SOMA_ERR_INVALID;
	json_t *persona = json_object_get(event, "persona_id");
	/* {value: {id, type, role, content, session_id, persona_id, metadata: {tenant}, created_at},
	 * tags: ["conversation"]}, member by member (what json_pack built, without reading a format
	 * per event); a member missing from the event fails it, as json_pack's "O" did */
	json_t *b = json_object(), *value = json_object(), *who = json_object(), *tags = json_array();
	bool ok = b && value && who && tags && json_object_set_new_nocheck(value, "id", json_string(id)) == 0 &&
		  json_object_set_new_nocheck(value, "type", json_string("conversation_event")) == 0 &&
		  json_object_set_nocheck(value, "role", json_object_get(event, "role")) == 0 &&
		  json_object_set_nocheck(value, "content", json_object_get(event, "message")) == 0 &&
		  json_object_set_new_nocheck(value, "session_id", json_string(session_id)) == 0 &&
		  json_object_set_nocheck(value, "persona_id", persona ? persona : json_null()) == 0 &&
		  json_object_set_new_nocheck(who, "tenant", json_string(tenant)) == 0 &&
		  json_object_set_nocheck(value, "metadata", who) == 0 &&
		  json_object_set_nocheck(value, "created_at", json_object_get(event, "created_at")) == 0 &&
		  json_object_set_nocheck(b, "value", value) == 0 &&
		  json_array_append_new(tags, json_string("conversation")) == 0 &&
		  json_object_set_nocheck(b, "tags", tags) == 0;
	json_decref(value);
	json_decref(who);
	json_decref(tags);
	if (!ok) {
		json_decref(b);
		return SOMA_ERR_NOMEM;
	}
	*body = b;
	*key = id;
	return SOMA_OK;
}

enum soma_err memory_event_body(const char *tenant, const char *session_id, json_t *event, char **text,
				const char **key)
{
	json_t *body;
	*text = NULL;
	enum soma_err err = memory_event_row(tenant, session_id, event, &body, key);
	if (err != SOMA_OK || !body)
		return err;
	*text = json_out(body, 0, NULL);
	json_decref(body);
	return *text ? SOMA_OK : SOMA_ERR_NOMEM;
}

char *memory_remember_body(json_t *row)
{
	json_t *body =
		json_pack("{s:O, s:O?}", "value", json_object_get(row, "value"), "tags", json_object_get(row, "tags"));
	char *text = body ? json_out(body, 0, NULL) : NULL;
	json_decref(body);
	return text;
}
