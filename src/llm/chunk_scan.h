/*
 * chunk_scan.h - the fields of a streamed chat-completion chunk, read without a JSON tree
 * (module-internal: call.c's SSE event handler).
 *
 * DESIGN: a reply streams one small JSON object per delta, and jansson's json_loadb built a tree
 * of it per event (~30,000 instructions for a 150-byte chunk; about 7 % of a chat message's server
 * CPU on the embedded defaults). llm_chunk_scan checks the text with the queue's strict checker
 * (core/json_scan.h: what it passes, jansson reads, with the same values) and picks the fields
 * call.c uses. Whatever it cannot read that way (not an object, an escaped key, a content
 * longer than the caller's buffer) it leaves to the jansson path, so both read every chunk alike.
 */
#ifndef SOMA_LLM_CHUNK_SCAN_H
#define SOMA_LLM_CHUNK_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct llm_chunk {
	const char *model;    /* "model" when a string, else NULL */
	const char *content;  /* choices[0].delta.content when a string, else NULL */
	size_t content_len;   /* its length in bytes */
	const char *finish;   /* choices[0].finish_reason when a string, else NULL */
	bool usage;	      /* "usage" is an object */
	bool no_choices;      /* "choices" is an empty array (the usage chunk) */
	bool has_in, has_out; /* usage.prompt_tokens / completion_tokens are integers (the usage
			       * is "usage", else Groq's "x_groq"."usage" of the last chunk) */
	int64_t in_tokens;    /* usage.prompt_tokens */
	int64_t out_tokens;   /* usage.completion_tokens */
};

/* Reads the chunk data[0..len) into *out; its strings are unescaped into buf[0..cap) (borrowed:
 * out's strings live as long as buf). True when read; false when the caller must read the chunk
 * with jansson instead (not valid JSON, not an object, an escaped key, or buf too small). */
bool llm_chunk_scan(const char *data, size_t len, char *buf, size_t cap, struct llm_chunk *out);

#define LLM_PEEK_USAGE	1u /* the key "usage" with an object value */
#define LLM_PEEK_FINISH 2u /* the key "finish_reason" with a string value */
#define LLM_PEEK_ERROR	4u /* the key "error" with an object or string value (a provider's error event) */

/* What a byte search finds in a chunk: LLM_PEEK_* flags. Each pattern is a key, a colon and the
 * start of its value; inside a JSON string the quotes would be escaped, and a string value is
 * never followed by a colon, so only the key matches. A relay (the proxy) reads only chunks with
 * usage; a finish reason it takes from the peek; the rest of a reply passes through unread. */
unsigned llm_chunk_peek(const char *data, size_t len);

#endif
