/*
 * forward.c - what a proxied chat completion passes on from its client's request body
 * (llm_forwarded_members, see llm.h): every member the provider call does not set itself, so
 * tools, tool_choice, top_p, stop, seed, response_format and whatever OpenAI adds next reach
 * the provider as the client wrote them.
 *
 * DESIGN: the members the call sets (model, messages, stream, stream_options, temperature,
 * max_tokens) come from llm_request; the platform's own (persona_id, session_id: policy input)
 * are not the provider's business, and OpenAI refuses members it does not know. The rest are
 * written by json_out in the body's order. Any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"
#include "llm/llm.h"

bool llm_member_set_by_call(const char *key, size_t len)
{
	static const char *const own[] = {"model",	 "messages",   "stream",     "stream_options",
					  "temperature", "max_tokens", "persona_id", "session_id"};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
		if (strlen(own[i]) == len && memcmp(key, own[i], len) == 0)
			return true;
	}
	return false;
}

/* Appends n bytes to *text (*len long, *cap allocated); false on OOM. */
static bool put(char **text, size_t *len, size_t *cap, const char *p, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t grown = (*len + n + 1) * 2;
		char *t = realloc(*text, grown);
		if (!t)
			return false;
		*text = t, *cap = grown;
	}
	memcpy(*text + *len, p, n);
	*len += n;
	(*text)[*len] = '\0';
	return true;
}

char *llm_forwarded_members(const json_t *body)
{
	size_t len = 0, cap = 64;
	char *text = malloc(cap);
	const char *key;
	json_t *value;
	if (!text)
		return NULL;
	text[0] = '\0';
	json_object_foreach((json_t *)body, key, value)
	{
		if (llm_member_set_by_call(key, strlen(key)))
			continue;
		size_t klen = 0, vlen = 0;
		char *k = json_out_string(key, strlen(key), &klen), *v = json_out(value, 1, &vlen);
		bool ok = k && v && (!len || put(&text, &len, &cap, ",", 1)) && put(&text, &len, &cap, k, klen) &&
			  put(&text, &len, &cap, ":", 1) && put(&text, &len, &cap, v, vlen);
		free(k);
		free(v);
		if (!ok) {
			free(text);
			return NULL;
		}
	}
	return text;
}
