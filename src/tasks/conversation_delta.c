/*
 * conversation_delta.c - the text of the events a reply publishes live (assistant.thinking and
 * assistant.delta), written directly.
 *
 * DESIGN: a reply publishes one delta per chunk of its provider's stream - the most frequent
 * publication of a chat - and building each as a jansson tree (a dozen allocations and a dump)
 * cost more than everything else a chunk does; thinking, once per reply, is the same event. The
 * members, their order and their escaping are those chat_event_new's event gets from json_out: the strings go through
 * json_out_string one by one (same escapes, same refusal of text that is not UTF-8), the rest is fixed text.
 * The final's metadata is here too: built member by member, as json_pack built it.
 * A long reply's deltas are merged (conv_delta_add): the session's resume log keeps BUS_LOG_MAX
 * entries, and a reply of more chunks than that (long code answers: 4-8k) lost its first deltas
 * from it, so a stream resumed inside it had a gap. The first CONV_DELTA_EACH chunks still go out
 * one delta each; then the chunks are held and published together once the interval since the
 * last delta has passed, checked at each chunk and when the LLM client polls should_cancel (at
 * least once a second while it waits: a stalled provider holds no text back longer). Held text
 * is published before any other event of the generation (its tool events, its final or error,
 * a stop), so the deltas keep their order among the session's events, their stream_index stays
 * contiguous (one per published delta), the final's metadata.deltas counts them, and their
 * concatenation is the final's message. Worker thread of the task only.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "core/clock.h"
#include "core/event.h"
#include "core/ids.h"
#include "core/json_out.h"
#include "tasks/conversation_int.h"

/* s (n bytes) as a JSON string literal, quotes included (malloc'd), as json_out writes it; NULL
 * when s is not UTF-8 or memory ran out. */
static char *quoted(const char *s, size_t n)
{
	return json_out_string(s, n, NULL);
}

/* The n pieces joined into one malloc'd text (NUL-terminated; its length in *len, may be NULL). */
static char *join(const char *const *pieces, int n, size_t *len)
{
	size_t total = 0, at = 0;
	for (int i = 0; i < n; i++)
		total += strlen(pieces[i]);
	char *out = malloc(total + 1);
	for (int i = 0; out && i < n; i++) {
		size_t k = strlen(pieces[i]);
		memcpy(out + at, pieces[i], k);
		at += k;
	}
	if (out) {
		out[at] = '\0';
		if (len)
			*len = at;
	}
	return out;
}

char *conv_event_text(const char *session_id, const char *type, const char *generation_id, int64_t stream_index,
		      const char *text, size_t len, size_t *out_len)
{
	if (!session_id || !generation_id)
		return NULL;
	char id[IDS_UUID_LEN + 1], created[CLOCK_RFC3339_LEN + 1], digits[24];
	ids_uuid7(id);
	clock_rfc3339(clock_wall_ms(), created, sizeof(created));
	int d = (int)sizeof(digits) - 1; /* stream_index in decimal, written backwards */
	digits[d] = '\0';
	for (uint64_t v = stream_index > 0 ? (uint64_t)stream_index : 0; d == (int)sizeof(digits) - 1 || v; v /= 10)
		digits[--d] = (char)('0' + v % 10);
	char *sid = quoted(session_id, strlen(session_id)), *gid = quoted(generation_id, strlen(generation_id));
	char *msg = quoted(text, len);
	char *out = NULL;
	if (sid && gid) { /* pieces: text without a NUL (quoted writes a NUL as \u0000) */
		bool indexed = stream_index >= 0;
		const char *pieces[] = {"{\"event_id\":\"",
					id,
					"\",\"session_id\":",
					sid,
					",\"role\":\"assistant\",\"type\":\"",
					type,
					"\",\"message\":",
					msg ? msg : "\"\"",
					",\"persona_id\":null,\"attachments\":[],\"metadata\":{",
					indexed ? "\"stream_index\":" : "",
					indexed ? digits + d : "",
					indexed ? "," : "",
					"\"generation_id\":",
					gid,
					"},\"created_at\":\"",
					created,
					"\",\"version\":\"" EVENT_VERSION "\"}"};
		out = join(pieces, (int)(sizeof(pieces) / sizeof(pieces[0])), out_len);
	}
	free(sid);
	free(gid);
	free(msg);
	return out;
}

json_t *conv_final_meta(const char *status, const char *model, const char *finish, const char *generation_id,
			int64_t deltas, int64_t input_tokens, int64_t output_tokens)
{
	/* built member by member: what json_pack built (NULL when a string is not UTF-8 - a model name
	 * cut inside a character - or memory ran out), without reading a format per reply */
	json_t *usage = json_object(), *meta = json_object();
	bool ok = usage && meta &&
		  json_object_set_new_nocheck(usage, "input_tokens", json_integer(input_tokens)) == 0 &&
		  json_object_set_new_nocheck(usage, "output_tokens", json_integer(output_tokens)) == 0 &&
		  json_object_set_new_nocheck(meta, "status", json_string(status)) == 0 &&
		  json_object_set_new_nocheck(meta, "model", json_string(model)) == 0 &&
		  json_object_set_nocheck(meta, "usage", usage) == 0 &&
		  json_object_set_new_nocheck(meta, "finish_reason", json_string(finish)) == 0 &&
		  json_object_set_new_nocheck(meta, "generation_id", json_string(generation_id)) == 0 &&
		  json_object_set_new_nocheck(meta, "deltas", json_integer(deltas)) == 0;
	json_decref(usage);
	if (!ok) {
		json_decref(meta);
		return NULL;
	}
	return meta;
}

int64_t conv_delta_interval_ms(int64_t published)
{
	return published < CONV_DELTA_EACH ? 0 : published < CONV_DELTA_SLOW ? CONV_DELTA_FAST_MS : CONV_DELTA_SLOW_MS;
}

bool conv_held_due(const struct conv_held *h, int64_t published, uint64_t now_ns)
{
	uint64_t wait_ns = (uint64_t)conv_delta_interval_ms(published) * 1000000u;
	return h->len > 0 && (now_ns < h->last_ns || now_ns - h->last_ns >= wait_ns);
}

bool conv_held_add(struct conv_held *h, const char *text, size_t len)
{
	if (len > CONV_DELTA_BYTES - h->len)
		return false;
	if (!h->text && !(h->text = malloc(CONV_DELTA_BYTES)))
		return false;
	memcpy(h->text + h->len, text, len);
	h->len += len;
	return true;
}

void conv_held_free(struct conv_held *h)
{
	free(h->text);
	h->text = NULL;
	h->len = 0;
}

/* Publishes text (len bytes, borrowed) as g's next delta. */
static void publish_delta(struct generation *g, const char *text, size_t len)
{
	size_t n = 0;
	char *ev =
		conv_event_text(g->task->session_id, "assistant.delta", g->task->id, g->stream_index++, text, len, &n);
	if (ev)
		bus_publish_ephemeral(g->bus_key, g->base_seq, ev, n, NULL);
	free(ev);
	if (g->stream_index >= CONV_DELTA_EACH) /* (the clock is read only where it is used) */
		g->held.last_ns = clock_mono_ns();
}

void conv_delta_flush(struct generation *g)
{
	if (!g->held.len)
		return;
	publish_delta(g, g->held.text, g->held.len);
	g->held.len = 0;
}

void conv_delta_add(struct generation *g, const char *text, size_t len)
{
	if (conv_delta_interval_ms(g->stream_index) == 0) {
		publish_delta(g, text, len);
		return;
	}
	if (!conv_held_add(&g->held, text, len)) { /* too much at once, or no memory: in order, now */
		conv_delta_flush(g);
		if (!conv_held_add(&g->held, text, len)) {
			publish_delta(g, text, len);
			return;
		}
	}
	if (conv_held_due(&g->held, g->stream_index, clock_mono_ns()))
		conv_delta_flush(g);
}
