/*
 * conversation_bounds.c - the size bounds of function calling (conversation_tools.c): a tool's
 * result and the arguments shown in tool.start cut to llm.max_tool_result_chars, and the running
 * messages of the tool rounds kept within llm.max_context_tokens.
 *
 * DESIGN: sizes are bytes of compact JSON text (UTF-8), the unit the context read counts in (4 a
 * token, conv_build_messages). A value over the cap becomes an object the model (and the user)
 * can read: for an object, its longest string members are cut (on a UTF-8 character boundary)
 * until it fits, and "truncated":true and "truncated_note" (what was cut, and by which setting)
 * are added; any other value, or an object whose strings are too short to make it fit, becomes
 * {"truncated":true, "truncated_note", "partial": the start of its JSON text}. Before each later
 * call, the messages are measured (every content and every tool call's arguments); when they are
 * over the budget, the older turns give way first (oldest first, whole turns: everything between
 * the leading system messages and the reply's own user message), then the latest round's tool
 * results are left out, largest first, each replaced by {"error": "left out: no room ..."}, until
 * they fit; conv_tool_rounds then makes that call the last one, without tools. Messages that do
 * not fit even so (calls whose own arguments are too large) end the reply (llm_context_exceeded).
 * The context read leaves room for the rounds in the first place (conv_tool_room).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/event.h"
#include "tasks/conversation_int.h"

#define NOTE_ROOM 240 /* bytes kept for "truncated" and its note */

static size_t dumped_len(const json_t *v)
{
	return json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* n bytes of s or fewer, ending on a UTF-8 character boundary. */
static size_t utf8_floor(const char *s, size_t n)
{
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

static void add_note(json_t *obj, size_t was, size_t max)
{
	char note[NOTE_ROOM];
	snprintf(note, sizeof(note),
		 "cut to llm.max_tool_result_chars (%zu of %zu characters of JSON kept); ask for less "
		 "(a narrower query, a smaller max_chars) to see the rest",
		 max, was);
	json_object_set_new(obj, "truncated", json_true());
	json_object_set_new(obj, "truncated_note", json_string(note));
}

/* The object v with its longest strings cut until it fits max, or NULL when it cannot. */
static json_t *cut_strings(const json_t *v, size_t was, size_t max)
{
	json_t *copy = json_deep_copy(v);
	for (int round = 0; copy && round < 16; round++) {
		add_note(copy, was, max);
		size_t len = dumped_len(copy);
		if (len <= max)
			return copy;
		const char *key, *longest = NULL;
		json_t *member;
		size_t most = 0;
		json_object_foreach(copy, key, member)
		{
			if (json_is_string(member) && json_string_length(member) > most &&
			    strcmp(key, "truncated_note") != 0) {
				most = json_string_length(member);
				longest = key;
			}
		}
		if (!longest || most < 16)
			break;
		const char *s = json_string_value(json_object_get(copy, longest));
		size_t over = len - max + 8;
		/* escapes take up to 6 bytes a byte: cut by the excess at least, half of it at most */
		size_t keep = utf8_floor(s, over >= most / 2 ? most / 2 : most - over);
		json_object_set_new(copy, longest, json_stringn(s, keep));
	}
	json_decref(copy);
	return NULL;
}

json_t *conv_bound_value(const json_t *v, size_t max)
{
	size_t was = dumped_len(v);
	if (was <= max)
		return json_incref((json_t *)v);
	json_t *out = json_is_object(v) ? cut_strings(v, was, max) : NULL;
	if (out)
		return out;
	char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	size_t keep = max > NOTE_ROOM + 32 ? max - NOTE_ROOM - 32 : 0;
	for (int round = 0; text && round < 8; round++) {
		keep = utf8_floor(text, keep < was ? keep : was);
		json_decref(out);
		out = json_object();
		json_object_set_new(out, "partial", json_stringn(text, keep));
		add_note(out, was, max);
		size_t len = dumped_len(out);
		if (len <= max)
			break;
		keep = keep > len - max + 8 ? keep - (len - max + 8) : 0;
	}
	free(text);
	return out;
}

/* The bytes the model is sent of one message: its content and its calls' arguments. */
static size_t message_size(const json_t *m)
{
	size_t n = json_string_length(json_object_get(m, "content"));
	json_t *call;
	size_t i;
	json_array_foreach(json_object_get(m, "tool_calls"), i, call)
	{
		json_t *f = json_object_get(call, "function");
		n += json_string_length(json_object_get(f, "arguments")) +
		     json_string_length(json_object_get(f, "name"));
	}
	return n;
}

size_t conv_tool_room(void)
{
	if (!conv_tools_extra())
		return 0;
	int64_t quarter = cfg_int(CFG_LLM_MAX_CONTEXT_TOKENS); /* a quarter of its bytes */
	int64_t room = cfg_int(CFG_LLM_MAX_TOOL_RESULT_CHARS) + 1024;
	room = room < quarter ? room : quarter;
	return room > 0 ? (size_t)room : 0;
}

static bool role_is(json_t *messages, size_t i, const char *role)
{
	const char *r = json_string_value(json_object_get(json_array_get(messages, i), "role"));
	return r && strcmp(r, role) == 0;
}

/* Drops the oldest turns of the history (after the leading system messages, before the reply's
 * own user message: the last user message before round_from) until total fits budget; the
 * history left starts with a user message. Returns whether any was dropped. */
static bool drop_history(json_t *messages, size_t *round_from, int64_t *total, int64_t budget)
{
	size_t first = 0, own = *round_from;
	while (first < json_array_size(messages) && role_is(messages, first, "system"))
		first++;
	while (own > first && !role_is(messages, own - 1, "user"))
		own--;
	if (own <= first)
		return false;
	own--; /* the reply's own user message: kept */
	bool dropped = false;
	while (*total > budget && first < own) {
		do { /* a whole turn: the user message and what answered it */
			*total -= (int64_t)message_size(json_array_get(messages, first));
			json_array_remove(messages, first);
			own--;
			(*round_from)--;
		} while (first < own && !role_is(messages, first, "user"));
		dropped = true;
	}
	return dropped;
}

enum conv_fit conv_fit_messages(json_t *messages, size_t round_from)
{
	int64_t budget = cfg_int(CFG_LLM_MAX_CONTEXT_TOKENS) * 4;
	int64_t total = 0;
	json_t *m;
	size_t i;
	json_array_foreach(messages, i, m) total += (int64_t)message_size(m);
	if (total <= budget)
		return CONV_FITS;
	if (drop_history(messages, &round_from, &total, budget) && total <= budget)
		return CONV_DROPPED;
	static const char left_out[] = "{\"error\":\"left out: no room for this result in the context "
				       "(llm.max_context_tokens); answer with what you have\"}";
	while (total > budget) {
		json_t *largest = NULL;
		size_t most = sizeof(left_out);
		for (i = round_from; i < json_array_size(messages); i++) {
			m = json_array_get(messages, i);
			const char *role = json_string_value(json_object_get(m, "role"));
			if (role && strcmp(role, "tool") == 0 && message_size(m) > most) {
				most = message_size(m);
				largest = m;
			}
		}
		if (!largest || json_object_set_new(largest, "content", json_string(left_out)) != 0)
			return CONV_TOO_LARGE;
		total -= (int64_t)(most - (sizeof(left_out) - 1));
	}
	return CONV_LEFT_OUT;
}

json_t *conv_context_event(struct task_ctx *t)
{
	json_t *meta =
		json_pack("{s:s, s:{s:s, s:s, s:i}, s:s}", "status", "error", "error", "code", "llm_context_exceeded",
			  "detail", "the tool calls and their results no longer fit llm.max_context_tokens",
			  "http_status", 413, "generation_id", t->id);
	return chat_event_new(t->session_id, "assistant", "assistant.error",
			      "The tool calls and their results are too large for the model's context "
			      "(llm.max_context_tokens); ask for less at a time.",
			      NULL, meta);
}
