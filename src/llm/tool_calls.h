/*
 * tool_calls.h - the tool calls of a streamed reply, gathered from its chunks' tool_calls deltas
 * (module-internal: call.c's event handler, when llm_request.tool_calls asks for them).
 *
 * DESIGN: OpenAI streams a call as deltas of choices[0].delta.tool_calls, each naming the call by
 * its index: the first carries id, type and function.name (arguments ""), the next ones pieces of
 * function.arguments, split anywhere (inside a string, an escape or a UTF-8 character: the pieces
 * are JSON strings, each whole). The pieces are concatenated per index; an id or a name that comes
 * again with the same text (some servers repeat them in every delta) is not doubled. Bounded:
 * LLM_TOOL_CALLS_MAX calls, LLM_TOOL_ARGS_MAX bytes of arguments in all.
 */
#ifndef SOMA_LLM_TOOL_CALLS_H
#define SOMA_LLM_TOOL_CALLS_H

#include <stdbool.h>
#include <stddef.h>

#include "llm/llm.h"

#define LLM_TOOL_CALLS_MAX 16
#define LLM_TOOL_ARGS_MAX  (1u << 20)

/* Whether the chunk text data[0..len) may hold tool_calls deltas (a byte search). */
bool llm_tool_calls_in(const char *data, size_t len);
/* Adds the tool_calls deltas of the chunk data[0..len) (JSON text) to res->tool_calls (created
 * when absent: [{id, type, function:{name, arguments}}] in index order, owned by res). A chunk
 * without them (or not JSON) changes nothing. false when a bound was hit or memory ran out. */
bool llm_tool_calls_feed(struct llm_result *res, const char *data, size_t len);

#endif
