/*
 * llm_reply.c - the LLM endpoints' answers built from a provider call's outcome (see
 * llm_reply.h).
 *
 * DESIGN: the error object carries OpenAI's four members (message, type, param, code: the SDKs
 * read all four) and our request_id. A provider's refusal of the client's request keeps the
 * provider's status (400, 404, 422; any other 4xx is a 400), type, param and code (our
 * llm_bad_request when it gave none) and its words after a short prefix of ours; for every other
 * failure the code, words and type are ours. Runs on the request's io thread.
 */
#include "gateway/llm_reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/ids.h"

/* HTTP status of a provider failure. */
static int fail_status(const struct llm_result *res)
{
	switch (res->error) {
	case LLM_ERR_UNCONFIGURED:
		return 503;
	case LLM_ERR_RATE_LIMITED:
		return 429;
	case LLM_ERR_BAD_REQUEST: /* the provider's own status when OpenAI uses it too */
		return res->http_status == 404 || res->http_status == 422 ? res->http_status : 400;
	case LLM_ERR_TIMEOUT:
		return 504;
	default:
		return 502;
	}
}

/* The provider's words, without our "HTTP n: " prefix of the detail. */
static const char *provider_said(const struct llm_result *res)
{
	const char *said = res->detail;
	if (strncmp(said, "HTTP ", 5) == 0 && strstr(said, ": "))
		said = strstr(said, ": ") + 2;
	return said;
}

json_t *llm_reply_error(const struct llm_result *res, const char *request_id)
{
	const char *message = llm_error_message(res->error), *code = llm_error_code(res->error);
	const char *type = "provider_error", *param = NULL;
	char words[700];
	if (res->error == LLM_ERR_BAD_REQUEST) { /* about the client's request: the provider's words */
		type = res->err_type[0] ? res->err_type : "invalid_request_error";
		param = res->err_param[0] ? res->err_param : NULL;
		code = res->err_code[0] ? res->err_code : code;
		if (res->detail[0]) {
			snprintf(words, sizeof(words),
				 "The language model provider refused the request. The provider said: %s",
				 provider_said(res));
			message = words;
		}
	} else if (res->error == LLM_ERR_RATE_LIMITED && res->detail[0]) {
		/* a 429's words say how long to wait ("try again in 5.289s"), for the client to read */
		snprintf(words, sizeof(words), "%s The provider said: %s", message, provider_said(res));
		message = words;
	}
	json_t *param_json = param ? json_string(param) : json_null();
	return json_pack("{s:s, s:s, s:s, s:o, s:s}", "code", code, "type", type, "message", message, "param",
			 param_json, "request_id", request_id);
}

void llm_reply_fail(struct http_req *req, const struct llm_result *res)
{
	if (res->error == LLM_ERR_RATE_LIMITED) { /* the provider's wait when it gave one */
		long ms = res->retry_after_ms;
		char secs[24];
		snprintf(secs, sizeof(secs), "%ld", ms > 0 ? (ms + 999) / 1000 : ms == 0 ? 1 : 5);
		http_resp_header(req, "Retry-After", secs);
	}
	/* our own retries (llm.max_retries) are spent: a client's SDK asking again would multiply
	 * the provider calls, and ask again one that timed out (and may have billed) */
	http_resp_header(req, "x-should-retry", "false");
	http_respond_json(req, fail_status(res), json_pack("{s:o}", "error", llm_reply_error(res, req->request_id)));
}

json_t *llm_reply_completion(const struct llm_result *r, bool openai, const char *asked)
{
	int64_t in = r->input_tokens > 0 ? r->input_tokens : 0, out = r->output_tokens > 0 ? r->output_tokens : 0;
	const char *model = r->model[0] ? r->model : asked;
	json_t *content = json_stringn(r->content ? r->content : "", r->content_len);
	if (!openai)
		return json_pack("{s:o, s:{s:I, s:I}, s:s, s:s}", "content", content, "usage", "input_tokens",
				 (json_int_t)in, "output_tokens", (json_int_t)out, "model", model, "provider",
				 cfg_str(CFG_LLM_PROVIDER));
	char id[IDS_UUID_LEN + 1];
	ids_uuid4(id);
	return json_pack("{s:s+, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:o}, s:s, s:n}], s:{s:I, s:I, s:I}}", "id",
			 "chatcmpl-", id, "object", "chat.completion", "created", (json_int_t)time(NULL), "model",
			 model, "choices", "index", 0, "message", "role", "assistant", "content", content,
			 "finish_reason", r->finish_reason[0] ? r->finish_reason : "stop", "logprobs", "usage",
			 "prompt_tokens", (json_int_t)in, "completion_tokens", (json_int_t)out, "total_tokens",
			 (json_int_t)(in + out));
}

char *llm_reply_usage_frame(const struct llm_result *r, const char *asked)
{
	if (r->input_tokens < 0 && r->output_tokens < 0)
		return NULL;
	int64_t in = r->input_tokens > 0 ? r->input_tokens : 0, out = r->output_tokens > 0 ? r->output_tokens : 0;
	char id[IDS_UUID_LEN + 1];
	ids_uuid4(id);
	json_t *chunk = json_pack("{s:s+, s:s, s:I, s:s, s:[], s:{s:I, s:I, s:I}}", "id", "chatcmpl-", id, "object",
				  "chat.completion.chunk", "created", (json_int_t)time(NULL), "model",
				  r->model[0] ? r->model : asked, "choices", "usage", "prompt_tokens", (json_int_t)in,
				  "completion_tokens", (json_int_t)out, "total_tokens", (json_int_t)(in + out));
	char *text = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
	json_decref(chunk);
	if (!text)
		return NULL;
	size_t n = strlen(text);
	char *frame = malloc(n + 9);
	if (frame)
		snprintf(frame, n + 9, "data: %s\n\n", text);
	free(text);
	return frame;
}
