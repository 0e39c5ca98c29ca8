/*
 * tool_calls.c - a streamed reply's tool calls, gathered by index (see tool_calls.h). Runs on
 * the thread that drives the call; no state besides res.
 */
#include "llm/tool_calls.h"

#include <stdlib.h>
#include <string.h>

bool llm_tool_calls_in(const char *data, size_t len)
{
	return len >= 12 && memmem(data, len, "\"tool_calls\"", 12) != NULL;
}

/* Appends (or sets) the string member key of obj with piece; a piece equal to what is there
 * already is taken as repeated (ids and names), unless concat (arguments). */
static bool merge(json_t *obj, const char *key, json_t *piece, bool concat, size_t *total)
{
	if (!json_is_string(piece) || json_string_length(piece) == 0)
		return true;
	json_t *old = json_object_get(obj, key);
	size_t n = json_string_length(old), k = json_string_length(piece);
	if (!concat && n == k && memcmp(json_string_value(old), json_string_value(piece), n) == 0)
		return true;
	if ((*total += k) > LLM_TOOL_ARGS_MAX)
		return false;
	char *both = malloc(n + k + 1);
	if (!both)
		return false;
	memcpy(both, json_string_value(old), n);
	memcpy(both + n, json_string_value(piece), k);
	both[n + k] = '\0';
	json_t *s = json_stringn_nocheck(both, n + k);
	free(both);
	return s && json_object_set_new(obj, key, s) == 0;
}

/* The call at index i of calls, made (empty) with those before it when missing; NULL past the
 * bound or on OOM. */
static json_t *call_at(json_t *calls, size_t i)
{
	if (i >= LLM_TOOL_CALLS_MAX)
		return NULL;
	while (json_array_size(calls) <= i) {
		json_t *c = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", "", "type", "function", "function", "name", "",
				      "arguments", "");
		if (!c || json_array_append_new(calls, c) != 0)
			return NULL;
	}
	return json_array_get(calls, i);
}

/* Bytes held by the calls' strings so far. */
static size_t held(json_t *calls)
{
	size_t i, n = 0;
	json_t *c;
	json_array_foreach(calls, i, c)
	{
		json_t *f = json_object_get(c, "function");
		n += json_string_length(json_object_get(c, "id")) + json_string_length(json_object_get(f, "name")) +
		     json_string_length(json_object_get(f, "arguments"));
	}
	return n;
}

bool llm_tool_calls_feed(struct llm_result *res, const char *data, size_t len)
{
	json_t *chunk = json_loadb(data, len, 0, NULL);
	json_t *deltas = json_object_get(json_object_get(json_array_get(json_object_get(chunk, "choices"), 0), "delta"),
					 "tool_calls");
	bool ok = true;
	if (json_is_array(deltas) && json_array_size(deltas) > 0 && !res->tool_calls)
		ok = (res->tool_calls = json_array()) != NULL;
	size_t total = ok && res->tool_calls ? held(res->tool_calls) : 0, i;
	json_t *d;
	json_array_foreach(deltas, i, d)
	{
		if (!ok)
			break;
		json_t *index = json_object_get(d, "index");
		json_int_t at = json_is_integer(index) ? json_integer_value(index) : (json_int_t)i;
		json_t *call = at >= 0 ? call_at(res->tool_calls, (size_t)at) : NULL;
		json_t *f = json_object_get(d, "function"), *into = json_object_get(call, "function");
		ok = call && merge(call, "id", json_object_get(d, "id"), false, &total) &&
		     merge(into, "name", json_object_get(f, "name"), false, &total) &&
		     merge(into, "arguments", json_object_get(f, "arguments"), true, &total);
	}
	json_decref(chunk);
	return ok;
}
