/*
 * llm_reply.h - the LLM endpoints' answers built from a provider call's outcome (module-internal:
 * llm_proxy.c): the error answer, the whole completion, and the usage chunk of a stream.
 *
 * DESIGN: pure functions of a struct llm_result (borrowed, never kept), on the request's io
 * thread. A refusal of the client's own request (the provider's 400, 404 or 422) passes on the
 * provider's status, type, param and code, as OpenAI's SDKs read them; other failures are ours
 * (502, 504, 429 after our retries) and say that asking again is no use (x-should-retry: false):
 * the call was already retried llm.max_retries times, and a provider that did not answer may
 * have billed.
 */
#ifndef SOMA_GATEWAY_LLM_REPLY_H
#define SOMA_GATEWAY_LLM_REPLY_H

#include <stdbool.h>

#include <jansson.h>

#include "http/http.h"
#include "llm/llm.h"

/* The error object (the envelope's "error") for res's failure: OpenAI's four members and ours.
 * Owned by the caller. */
json_t *llm_reply_error(const struct llm_result *res, const char *request_id);
/* Answers req with res's failure (status, Retry-After and x-should-retry headers, the error). */
void llm_reply_fail(struct http_req *req, const struct llm_result *res);
/* A whole reply built from res: OpenAI's chat.completion (openai) or /v1/llm/invoke's shape;
 * model: the one asked or configured, used when the provider named none. Owned by the caller. */
json_t *llm_reply_completion(const struct llm_result *res, bool openai, const char *model);
/* The SSE frame of a usage chunk (choices [], usage from res) for a stream whose provider sent
 * none at the top level (Groq: in x_groq.usage); NULL when res has no usage or on OOM. Owned by
 * the caller (free). */
char *llm_reply_usage_frame(const struct llm_result *res, const char *model);

#endif
