/*
 * llm_routes.c - the LLM endpoints' routes and what their requests ask (see llm_ask.h):
 * POST /v1/chat/completions (its body read from the text when it can be, else from a tree, with
 * the same answers), POST /v1/llm/invoke[/stream], GET /v1/models and GET /v1/models/{id}. The
 * calls themselves are llm_proxy.c's.
 *
 * DESIGN: the OpenAI routes (chat completions, models) answer errors in OpenAI's shape through
 * their error renderer (openai_error): type and param added, our 422 said as OpenAI's 400; the
 * project's envelope (code, message, request_id) stays inside it. /v1/llm/invoke keeps ours.
 */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "gateway/gateway.h"
#include "gateway/llm_ask.h"
#include "llm/llm.h"

#define LLM_BAD_MESSAGES "messages must be a non-empty array of {role, content}"
#define LLM_BAD_MESSAGE_AT                                                                                 \
	"messages[%zu] must have role system|developer|user|assistant|tool and a content (an assistant's " \
	"may be absent or null with tool_calls or a refusal)"

/* A 422 naming the member at fault (param): on the OpenAI routes the error renderer makes it
 * OpenAI's 400 invalid_request_error. */
static void refuse(struct http_req *req, const char *code, const char *param, const char *message)
{
	http_respond_error_json(req, 422,
				json_pack("{s:s, s:s, s:s, s:s}", "code", code, "message", message, "param", param,
					  "request_id", req->request_id));
}

/* Whether message m (a member of messages) has a known role and a content: a string, an array of
 * parts, or null; an assistant's may be absent or null when it has tool_calls or a refusal, as
 * OpenAI allows. llm_ask.c messages_ok makes the same check on text. */
static bool valid_message(json_t *m)
{
	const char *role = json_string_value(json_object_get(m, "role"));
	json_t *content = json_object_get(m, "content");
	if (!role || (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
		      strcmp(role, "tool") != 0 && strcmp(role, "developer") != 0))
		return false;
	if (json_is_string(content) || json_is_array(content))
		return true;
	if (json_is_null(content)) /* null (a tool call's turn) is accepted from every role, as before */
		return true;
	return !content && strcmp(role, "assistant") == 0 &&
	       (json_is_array(json_object_get(m, "tool_calls")) || json_is_string(json_object_get(m, "refusal")));
}

/* Checks {messages:[{role, content}], ...}; answers 422 and returns false on a problem. */
static bool valid_messages(struct http_req *req, json_t *messages)
{
	if (!json_is_array(messages) || json_array_size(messages) == 0 || json_array_size(messages) > 4096) {
		refuse(req, "invalid_messages", "messages", LLM_BAD_MESSAGES);
		return false;
	}
	size_t i;
	json_t *m;
	json_array_foreach(messages, i, m)
	{
		if (!valid_message(m)) {
			char param[32], message[256];
			snprintf(param, sizeof(param), "messages[%zu]", i);
			snprintf(message, sizeof(message), LLM_BAD_MESSAGE_AT, i);
			refuse(req, "invalid_messages", param, message);
			return false;
		}
	}
	return true;
}

/* The tree path's checks of model, temperature and max_tokens in options; fills *ask, or answers
 * 422 and returns false. */
static bool tree_options(struct http_req *req, json_t *body, json_t *options, struct job_ask *ask)
{
	json_t *model = json_object_get(options, "model"), *temp = json_object_get(options, "temperature");
	json_t *maxt = json_object_get(options, "max_tokens");
	const char *bad = NULL;
	if (model && !json_is_null(model) && (!json_is_string(model) || json_string_length(model) >= 128))
		bad = "model";
	else if (temp && !json_is_null(temp) &&
		 (!json_is_number(temp) || json_number_value(temp) < 0 || json_number_value(temp) > 2))
		bad = "temperature";
	else if (maxt && !json_is_null(maxt) && (!json_is_integer(maxt) || json_integer_value(maxt) < 1))
		bad = "max_tokens";
	if (bad) {
		refuse(req, "invalid_parameters", bad,
		       "model must be a string, temperature a number from 0 to 2, max_tokens a positive integer");
		return false;
	}
	ask->model = json_string_value(model);
	ask->temperature = json_is_number(temp) ? json_number_value(temp) : -1;
	ask->max_tokens = json_is_integer(maxt) ? json_integer_value(maxt) : 0;
	ask->include_usage = json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
	ask->persona_id = json_string_value(json_object_get(body, "persona_id"));
	ask->session_id = json_string_value(json_object_get(body, "session_id"));
	ask->messages = json_object_get(body, "messages");
	return true;
}

static void chat_completions(struct http_req *req, void *arg)
{
	(void)arg;
	struct llm_ask text;
	switch (llm_ask_read(req, &text)) {
	case LLM_ASK_OK: {
		struct job_ask ask = {.model = text.model_text,
				      .temperature = text.temperature_value,
				      .max_tokens = text.max_tokens_value,
				      .stream = text.stream,
				      .include_usage = text.include_usage,
				      .persona_id = text.has_persona ? text.persona_id : NULL,
				      .text = &text};
		llm_job_start(req, &ask, SHAPE_OPENAI);
		return;
	}
	case LLM_ASK_USE_TREE:
		break;
	}
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *stream = json_object_get(body, "stream");
	struct job_ask ask = {.stream = json_is_true(stream), .forward = body};
	if (stream && !json_is_boolean(stream) && !json_is_null(stream))
		refuse(req, "invalid_parameters", "stream", "stream must be a boolean");
	else if (valid_messages(req, json_object_get(body, "messages")) && tree_options(req, body, body, &ask))
		llm_job_start(req, &ask, SHAPE_OPENAI);
	json_decref(body);
}

static void invoke(struct http_req *req, bool stream)
{
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *overrides = json_object_get(body, "overrides");
	struct job_ask ask = {.stream = stream};
	if (overrides && !json_is_object(overrides) && !json_is_null(overrides))
		refuse(req, "invalid_parameters", "overrides",
		       "overrides must be an object {model, temperature, max_tokens}");
	else if (valid_messages(req, json_object_get(body, "messages")) && tree_options(req, body, overrides, &ask))
		llm_job_start(req, &ask, SHAPE_INVOKE);
	json_decref(body);
}

static void llm_invoke(struct http_req *req, void *arg)
{
	(void)arg, invoke(req, false);
}
static void llm_invoke_stream(struct http_req *req, void *arg)
{
	(void)arg, invoke(req, true);
}

/* The one model a deployment serves, as an entry of GET /v1/models. Owned by the caller. */
static json_t *model_entry(void)
{
	struct llm_config cfg;
	llm_config_from_settings(&cfg);
	return json_pack("{s:s, s:s, s:i, s:s}", "id", cfg.model, "object", "model", "created", 0, "owned_by",
			 cfg_str(CFG_LLM_PROVIDER));
}

static void models(struct http_req *req, void *arg)
{
	(void)arg;
	http_respond_json(req, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_entry()));
}

static int hex_digit(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* GET /v1/models/{id}: the entry of a model listed by GET /v1/models, else OpenAI's 404. The id
 * comes percent-encoded when it holds a slash ("org%2Fmodel", as the SDKs send it). */
static void model_get(struct http_req *req, void *arg)
{
	(void)arg;
	struct str raw = http_req_param(req, "id");
	char id[256];
	size_t n = 0;
	for (size_t i = 0; i < raw.len && n + 1 < sizeof(id); i++) {
		int hi = i + 2 < raw.len && raw.p[i] == '%' ? hex_digit(raw.p[i + 1]) : -1;
		int lo = hi >= 0 ? hex_digit(raw.p[i + 2]) : -1;
		if (lo >= 0)
			id[n++] = (char)(hi * 16 + lo), i += 2;
		else
			id[n++] = raw.p[i];
	}
	id[n] = '\0';
	json_t *entry = model_entry();
	if (entry && strcmp(json_string_value(json_object_get(entry, "id")), id) == 0) {
		http_respond_json(req, 200, entry);
		return;
	}
	json_decref(entry);
	char message[400];
	snprintf(message, sizeof(message),
		 "The model '%s' does not exist; GET /v1/models lists the one served (llm.model)", id);
	http_respond_error_json(req, 404,
				json_pack("{s:s, s:s, s:s, s:s, s:s}", "code", "model_not_found", "type",
					  "invalid_request_error", "message", message, "param", "model", "request_id",
					  req->request_id));
}

/* The error renderer of the OpenAI routes (http_route_set_error_fn): OpenAI's error object
 * {message, type, param, code} with our request_id, and its 400 where we say 422. */
static bool openai_error(struct http_req *req, int status, json_t *error)
{
	if (status == 422)
		status = 400;
	if (!json_object_get(error, "type")) {
		const char *type = status == 401   ? "authentication_error"
				   : status == 403 ? "permission_error"
				   : status == 429 ? "rate_limit_error"
				   : status >= 500 ? "server_error"
						   : "invalid_request_error";
		json_object_set_new(error, "type", json_string(type));
	}
	if (!json_object_get(error, "param"))
		json_object_set_new(error, "param", json_null());
	http_respond_json(req, status, json_pack("{s:O}", "error", error));
	return true;
}

enum soma_err gateway_llm_routes(struct http_router *r)
{
	static const char *const openai[][2] = {
		{"POST", "/v1/chat/completions"}, {"GET", "/v1/models"}, {"GET", "/v1/models/{id}"}};
	enum soma_err err = http_route_add(r, "POST", "/v1/chat/completions", chat_completions, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/models", models, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/models/{id}", model_get, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_add(r, "POST", "/v1/llm/invoke", llm_invoke, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_add(r, "POST", "/v1/llm/invoke/stream", llm_invoke_stream, NULL, 0);
	/* base64 images make a chat completion larger than other bodies (http.max_body) */
	size_t max = (size_t)cfg_int(CFG_LLM_MAX_REQUEST_MB) << 20, usual = (size_t)cfg_int(CFG_HTTP_MAX_BODY);
	if (err == SOMA_OK)
		err = http_route_set_mem_body(r, "POST", "/v1/chat/completions", max > usual ? max : usual,
					      max > usual ? "llm.max_request_mb" : "http.max_body");
	for (size_t i = 0; err == SOMA_OK && i < sizeof(openai) / sizeof(openai[0]); i++)
		err = http_route_set_error_fn(r, openai[i][0], openai[i][1], openai_error);
	return err;
}
