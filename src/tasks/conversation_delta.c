/*
 * conversation_delta.c - the text of the events a reply publishes live (assistant.thinking and
 * assistant.delta), written directly.
 *
 * DESIGN: a reply publishes one delta per chunk of its provider's stream - the most frequent
 * publication of a chat - and building each as a jansson tree (a dozen allocations and a dump)
 * cost more than everything else a chunk does; thinking, once per reply, is the same event. The
 * members, their order and their escaping are those chat_event_new's event gets from json_out: the strings go through
 * json_out one by one (same escapes, same refusal of text that is not UTF-8), the rest is fixed text.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/event.h"
#include "core/ids.h"
#include "core/json_out.h"
#include "tasks/conversation_int.h"

/* s (n bytes) as a JSON string literal, quotes included (malloc'd), as json_out writes it; NULL
 * when s is not UTF-8 or memory ran out. */
static char *quoted(const char *s, size_t n)
{
	json_t *v = json_stringn(s, n);
	char *q = v ? json_out(v, 1, NULL) : NULL;
	json_decref(v);
	return q;
}

char *conv_event_text(const char *session_id, const char *type, const char *generation_id, int64_t stream_index,
		      const char *text, size_t len, size_t *out_len)
{
	if (!session_id || !generation_id)
		return NULL;
	char id[IDS_UUID_LEN + 1], created[CLOCK_RFC3339_LEN + 1];
	ids_uuid7(id);
	clock_rfc3339(clock_wall_ms(), created, sizeof(created));
	char *sid = quoted(session_id, strlen(session_id)), *gid = quoted(generation_id, strlen(generation_id));
	char *msg = quoted(text, len);
	char *out = NULL;
	if (sid && gid) {
		char index[48] = "";
		if (stream_index >= 0)
			snprintf(index, sizeof(index), "\"stream_index\":%" PRId64 ",", stream_index);
		int n = asprintf(
			&out,
			"{\"event_id\":\"%s\",\"session_id\":%s,\"role\":\"assistant\",\"type\":\"%s\","
			"\"message\":%s,\"persona_id\":null,\"attachments\":[],\"metadata\":{%s\"generation_id\":%s},"
			"\"created_at\":\"%s\",\"version\":\"" EVENT_VERSION "\"}",
			id, sid, type, msg ? msg : "\"\"", index, gid, created);
		if (n < 0)
			out = NULL;
		else if (out_len)
			*out_len = (size_t)n;
	}
	free(sid);
	free(gid);
	free(msg);
	return out;
}
