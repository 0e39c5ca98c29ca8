/*
 * event.c - building conversation events (see event.h).
 */
#include "core/event.h"

#include "core/clock.h"
#include "core/ids.h"

json_t *chat_event_new(const char *session_id, const char *role, const char *type, const char *message,
		       const char *persona_id, json_t *metadata)
{
	char id[IDS_UUID_LEN + 1], created[CLOCK_RFC3339_LEN + 1];
	ids_uuid7(id);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:[], s:o, s:s, s:s}", "event_id", id, "session_id",
			 session_id, "role", role, "type", type, "message", message ? message : "", "persona_id",
			 persona_id, "attachments", "metadata", metadata ? metadata : json_object(), "created_at",
			 clock_rfc3339(clock_wall_ms(), created, sizeof(created)), "version", EVENT_VERSION);
}
