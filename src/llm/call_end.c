/*
 * call_end.c - the end of one attempt of a chat completion (see llm_int.h): what the answer was
 * (a whole reply, a provider's error, a cut stream) as an llm_error, with the provider's own words
 * or a sentence of ours as the detail, and the release of what the attempt held.
 *
 * DESIGN: the class decides retries (retry.c) and the words users see (client.c's texts); the
 * detail is for the log and the conversation's error event, so it is never empty and never a
 * transport's "No error": a failure that came in a 200 (an error event in the stream, an error
 * body, a stream that ended early) says what the provider did. A provider that ignores
 * stream:true and answers a whole chat.completion gave the reply: it is handed on as the chunks a
 * stream would have brought (a relay gets role and content, the finish, the usage), not asked
 * for again (each attempt is billed); a 200 that is neither reply nor error body is a protocol
 * error, not retried. A timeout before the request went out (connecting) was never billed: it
 * is UNREACHABLE, retried as a refused connect.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/str_copy.h"
#include "llm/llm_int.h"

#define MAX_CONTENT (4u << 20) /* a whole reply's text, as a streamed one's (call.c) */

static void take_usage(struct llm_result *res, json_t *usage)
{
	json_t *in = json_object_get(usage, "prompt_tokens"), *out = json_object_get(usage, "completion_tokens");
	if (json_is_integer(in))
		res->input_tokens = json_integer_value(in);
	if (json_is_integer(out))
		res->output_tokens = json_integer_value(out);
}

static void take_model(struct llm_result *res, json_t *obj)
{
	const char *model = json_string_value(json_object_get(obj, "model"));
	if (model)
		str_copy(res->model, sizeof(res->model), model);
}

/* Reads the provider's error message out of an error body ({"error":{"message":..}}), and its
 * type, param and code when they are strings. */
static void take_error_detail(struct llm_call *c)
{
	json_t *body = c->body ? json_loadb(c->body, c->body_len, 0, NULL) : NULL;
	json_t *err = json_object_get(body, "error");
	const char *msg = json_string_value(json_object_get(err, "message"));
	snprintf(c->res->detail, sizeof(c->res->detail), "HTTP %ld: %.400s", c->status,
		 msg ? msg : (c->body ? c->body : ""));
	const char *type = json_string_value(json_object_get(err, "type"));
	const char *param = json_string_value(json_object_get(err, "param"));
	const char *code = json_string_value(json_object_get(err, "code"));
	str_copy(c->res->err_type, sizeof(c->res->err_type), type ? type : "");
	str_copy(c->res->err_param, sizeof(c->res->err_param), param ? param : "");
	str_copy(c->res->err_code, sizeof(c->res->err_code), code ? code : "");
	json_decref(body);
}

/* A whole non-streamed reply. */
static enum llm_error take_reply(struct llm_call *c)
{
	json_t *body = json_loadb(c->body ? c->body : "", c->body_len, 0, NULL);
	json_t *choice = json_array_get(json_object_get(body, "choices"), 0);
	json_t *message = json_object_get(choice, "message");
	json_t *content = json_object_get(message, "content");
	enum llm_error e = LLM_ERR_PROTOCOL;
	/* a message with tool calls has a null content, or (some servers) none at all */
	if (json_is_string(content) || json_is_null(content) || (json_is_object(message) && !content)) {
		const char *text = json_is_string(content) ? json_string_value(content) : "";
		size_t n = json_is_string(content) ? json_string_length(content) : 0;
		char *copy = n <= MAX_CONTENT ? malloc(n + 1) : NULL;
		if (copy) {
			memcpy(copy, text, n);
			copy[n] = '\0';
			free(c->res->content);
			c->res->content = copy;
			c->res->content_len = n;
			e = LLM_OK;
		}
		const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
		str_copy(c->res->finish_reason, sizeof(c->res->finish_reason), finish ? finish : "stop");
		take_model(c->res, body);
		take_usage(c->res, json_object_get(body, "usage"));
	}
	json_decref(body);
	if (e == LLM_OK && c->req->keep_raw) { /* the body moves to the result as it came */
		free(c->res->raw);
		c->res->raw = c->body;
		c->res->raw_len = c->body_len;
		c->body = NULL;
		c->body_len = 0;
	}
	return e;
}

/* The provider's error message of a 200 that is no reply (an error body, a JSON answer to a
 * streamed request) as the detail, or why; the class of such an answer is SERVER (retried). */
static enum llm_error not_a_reply(struct llm_call *c)
{
	json_t *body = c->body ? json_loadb(c->body, c->body_len, 0, NULL) : NULL;
	json_t *err = json_object_get(body, "error");
	const char *msg =
		json_is_string(err) ? json_string_value(err) : json_string_value(json_object_get(err, "message"));
	if (msg)
		snprintf(c->res->detail, sizeof(c->res->detail), "HTTP 200: %.400s", msg);
	else if (c->req->stream)
		snprintf(c->res->detail, sizeof(c->res->detail),
			 "the provider answered a streamed request with a body that is no event stream");
	else
		snprintf(c->res->detail, sizeof(c->res->detail), "the provider's answer is no chat completion");
	json_decref(body);
	return msg ? LLM_ERR_SERVER : LLM_ERR_PROTOCOL;
}

/* Hands one synthesized chunk to the relay; false when it asked to stop. */
static bool give_chunk(struct llm_call *c, json_t *chunk, bool usage_only)
{
	char *text = json_dumps(chunk, JSON_COMPACT);
	json_decref(chunk);
	bool ok = !text || c->cb->on_chunk(c->cb->ctx, text, strlen(text), usage_only);
	free(text);
	return ok;
}

/* A whole chat.completion answering a streamed request: the reply (take_reply), passed on as a
 * stream's chunks would have been - to a relay as chat.completion.chunk objects (the message as
 * the first delta, then the finish, then the usage), to on_delta as one delta. */
static enum llm_error json_to_stream(struct llm_call *c)
{
	enum llm_error e = take_reply(c);
	if (e != LLM_OK)
		return not_a_reply(c);
	json_t *body = c->cb && c->cb->on_chunk ? json_loadb(c->body, c->body_len, 0, NULL) : NULL;
	if (body) {
		json_t *choice = json_array_get(json_object_get(body, "choices"), 0);
		json_t *delta = json_deep_copy(json_object_get(choice, "message"));
		if (!json_is_object(delta)) {
			json_decref(delta);
			delta = json_object();
		}
		if (!json_object_get(delta, "role"))
			json_object_set_new(delta, "role", json_string("assistant"));
		json_t *calls = json_object_get(delta, "tool_calls"), *call;
		size_t i;
		json_array_foreach(calls, i, call)
		{
			if (json_is_object(call) && !json_object_get(call, "index"))
				json_object_set_new(call, "index", json_integer((json_int_t)i));
		}
		json_t *id = json_object_get(body, "id"), *created = json_object_get(body, "created");
		json_t *model = json_object_get(body, "model"), *usage = json_object_get(body, "usage");
		const char *finish = c->res->finish_reason[0] ? c->res->finish_reason : "stop";
#define CHUNK_HEAD                                                                                               \
	"id", json_is_string(id) ? json_incref(id) : json_string("chatcmpl-stream"), "object",                   \
		json_string("chat.completion.chunk"), "created",                                                 \
		json_is_integer(created) ? json_incref(created) : json_integer((json_int_t)time(NULL)), "model", \
		json_is_string(model) ? json_incref(model) : json_string("")
		bool ok = give_chunk(c,
				     json_pack("{s:o,s:o,s:o,s:o,s:[{s:i,s:o,s:n,s:n}]}", CHUNK_HEAD, "choices",
					       "index", 0, "delta", delta, "logprobs", "finish_reason"),
				     false) &&
			  give_chunk(c,
				     json_pack("{s:o,s:o,s:o,s:o,s:[{s:i,s:{},s:n,s:s}]}", CHUNK_HEAD, "choices",
					       "index", 0, "delta", "logprobs", "finish_reason", finish),
				     false) &&
			  (!json_is_object(usage) ||
			   give_chunk(c, json_pack("{s:o,s:o,s:o,s:o,s:[],s:O}", CHUNK_HEAD, "choices", "usage", usage),
				      true));
#undef CHUNK_HEAD
		json_decref(body);
		c->got_token = true;
		if (!ok)
			return c->stopped = true, LLM_ERR_CANCELLED;
	}
	if (c->cb && c->cb->on_delta && c->res->content_len) {
		c->got_token = true;
		if (!c->cb->on_delta(c->cb->ctx, c->res->content, c->res->content_len))
			return c->stopped = true, LLM_ERR_CANCELLED;
	}
	return LLM_OK;
}

static enum llm_error classify(struct llm_call *c, CURLcode rc)
{
	/* an error event in the stream (detail: its message): a failure even when [DONE] followed */
	if (c->failed)
		return c->got_token ? LLM_ERR_CUT : LLM_ERR_SERVER;
	/* [DONE] came on a 200 stream: the reply is whole even when the transfer was then stopped
	 * (call.c stops it at [DONE]), the relay went away, or the provider hung or closed */
	if (c->finished && c->status == 200 && c->req->stream && !c->not_sse)
		return LLM_OK;
	if (c->stopped || rc == CURLE_ABORTED_BY_CALLBACK)
		return LLM_ERR_CANCELLED;
	if (c->overflow)
		return LLM_ERR_PROTOCOL;
	switch (rc) {
	case CURLE_OK:
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
		return LLM_ERR_UNREACHABLE;
	case CURLE_OPERATION_TIMEDOUT: /* before the request went out (connecting): never billed */
		return c->got_token ? LLM_ERR_CUT : c->unsent ? LLM_ERR_UNREACHABLE : LLM_ERR_TIMEOUT;
	default:
		/* the connection broke: mid-reply it is a cut stream, before it a server failure */
		return c->got_token ? LLM_ERR_CUT : c->status ? LLM_ERR_SERVER : LLM_ERR_UNREACHABLE;
	}
	if (c->status == 429)
		return LLM_ERR_RATE_LIMITED;
	if (c->status == 401 || c->status == 403)
		return LLM_ERR_AUTH;
	if (c->status == 408) /* the provider's own timeout: retried, as OpenAI's SDKs do */
		return LLM_ERR_TIMEOUT;
	if (c->status == 409) /* a conflict (a lock on the provider's side): retried, as OpenAI's SDKs do */
		return LLM_ERR_SERVER;
	if (c->status >= 500)
		return LLM_ERR_SERVER;
	if (c->status != 200)
		return LLM_ERR_BAD_REQUEST;
	if (c->req->stream && c->not_sse)
		return json_to_stream(c);
	if (!c->req->stream) {
		enum llm_error e = take_reply(c);
		return e == LLM_OK ? e : not_a_reply(c);
	}
	if (c->done)
		return LLM_OK;
	snprintf(c->res->detail, sizeof(c->res->detail), "%s",
		 c->got_token ? "the provider's stream ended before [DONE] or a finish_reason"
			      : "the provider's stream ended before any event");
	/* nothing of the reply came: a failure of the provider's, retried */
	return c->got_token ? LLM_ERR_CUT : LLM_ERR_SERVER;
}

enum llm_error llm_call_finish(struct llm_call *c, CURLcode rc)
{
	const struct curl_api *curl = curl_api_get(NULL);
	if (c->curl) { /* else (h1_conn) the status came with the answer's head */
		curl->easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
		long sent = 0;
		if (rc == CURLE_OPERATION_TIMEDOUT &&
		    curl->easy_getinfo(c->curl, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK)
			c->unsent = sent == 0;
	}
	c->res->http_status = (int)c->status;
	c->res->retry_after_ms = c->retry_after_ms;
	enum llm_error e = classify(c, rc);
	if (e != LLM_OK && e != LLM_ERR_CANCELLED) {
		if (c->status && c->status != 200)
			take_error_detail(c);
		else if (!c->res->detail[0])
			snprintf(c->res->detail, sizeof(c->res->detail), "%s",
				 rc != CURLE_OK ? curl->easy_strerror(rc) : "the provider's answer could not be read");
	}
	if (c->headers && c->curl) {
		curl->easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL); /* the call's own list, freed below */
		curl->slist_free_all(c->headers);
	}
	c->headers = NULL;
	c->curl = NULL;
	sse_parser_deinit(&c->sse);
	free(c->body);
	c->body = NULL;
	c->body_len = 0;
	return e;
}
