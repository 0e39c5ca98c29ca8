/*
 * event.c - building conversation events (see event.h).
 *
 * DESIGN: a chat message makes five or more events (the user's, thinking, deltas, final), so an
 * event is built member by member rather than through json_pack's format parser; the members and
 * their order are those of the contract's event, as before.
 */
#include "core/event.h"

#include "core/clock.h"
#include "core/ids.h"

/* Sets key to a new string of s (NULL s: JSON null when nullable, else nothing); false on failure
 * (s not UTF-8, or no memory). */
static bool set_str(json_t *ev, const char *key, const char *s, bool nullable)
{
	if (!s)
		return !nullable || json_object_set_new_nocheck(ev, key, json_null()) == 0;
	json_t *v = json_string(s);
	return v && json_object_set_new_nocheck(ev, key, v) == 0;
}

json_t *chat_event_new(const char *session_id, const char *role, const char *type, const char *message,
		       const char *persona_id, json_t *metadata)
{
	char id[IDS_UUID_LEN + 1], created[CLOCK_RFC3339_LEN + 1];
	ids_uuid7(id);
	json_t *ev = json_object();
	json_t *meta = metadata ? metadata : json_object();
	bool ok = ev && meta && set_str(ev, "event_id", id, false) && session_id && role && type &&
		  set_str(ev, "session_id", session_id, false) && set_str(ev, "role", role, false) &&
		  set_str(ev, "type", type, false) && set_str(ev, "message", message ? message : "", false) &&
		  set_str(ev, "persona_id", persona_id, true) &&
		  json_object_set_new_nocheck(ev, "attachments", json_array()) == 0;
	if (!ok || json_object_set_new_nocheck(ev, "metadata", meta) != 0) { /* takes meta, even on failure */
		if (ok)
			meta = NULL;
		json_decref(meta);
		json_decref(ev);
		return NULL;
	}
	if (!set_str(ev, "created_at", clock_rfc3339(clock_wall_ms(), created, sizeof(created)), false) ||
	    !set_str(ev, "version", EVENT_VERSION, false)) {
		json_decref(ev);
		return NULL;
	}
	return ev;
}
