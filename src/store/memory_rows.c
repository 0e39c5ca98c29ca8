/*
 * memory_rows.c - the memory outbox's row bodies (see memory_rows.h).
 */
#include "store/memory_rows.h"

#include <string.h>

#include "core/json_out.h"

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
	*body = json_pack("{s:{s:s, s:s, s:O, s:O, s:s, s:O, s:{s:s}, s:O}, s:[s]}", "value", "id", id, "type",
			  "conversation_event", "role", json_object_get(event, "role"), "content",
			  json_object_get(event, "message"), "session_id", session_id, "persona_id",
			  persona ? persona : json_null(), "metadata", "tenant", tenant, "created_at",
			  json_object_get(event, "created_at"), "tags", "conversation");
	*key = id;
	return *body ? SOMA_OK : SOMA_ERR_NOMEM;
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
