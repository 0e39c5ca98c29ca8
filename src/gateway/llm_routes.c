/*
 * llm_routes.c - the LLM endpoints' routes and what their requests ask (see llm_ask.h):
 * POST /v1/chat/completions (its body read from the text when it can be, else from a tree, with
 * the same answers), POST /v1/llm/invoke[/stream] and GET /v1/models. The calls themselves are
 * llm_proxy.c's.
 */
#include <string.h>

#include "core/config.h"
#include "gateway/gateway.h"
#include "gateway/llm_ask.h"
#include "llm/llm.h"

/* Checks {messages:[{role, content}], ...}; answers 400/422 and returns false on a problem. */
static bool valid_messages(struct http_req *req, json_t *messages)
{
	if (!json_is_array(messages) || json_array_size(messages) == 0 || json_array_size(messages) > 4096) {
		http_respond_error(req, 422, "invalid_messages",
				   "messages must be a non-empty array of {role, content}");
		return false;
	}
	size_t i;
	json_t *m;
	json_array_foreach(messages, i, m)
	{
		const char *role = json_string_value(json_object_get(m, "role"));
		json_t *content = json_object_get(m, "content");
		bool ok = role &&
			  (strcmp(role, "system") == 0 || strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0 ||
			   strcmp(role, "tool") == 0 || strcmp(role, "developer") == 0);
		ok = ok && (json_is_string(content) || json_is_array(content) || json_is_null(content));
		if (!ok) {
			http_respond_error(req, 422, "invalid_messages",
					   "messages[%zu] must have role system|user|assistant|tool and a content", i);
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
	if ((model && !json_is_null(model) && (!json_is_string(model) || json_string_length(model) >= 128)) ||
	    (temp && !json_is_null(temp) &&
	     (!json_is_number(temp) || json_number_value(temp) < 0 || json_number_value(temp) > 2)) ||
	    (maxt && !json_is_null(maxt) && (!json_is_integer(maxt) || json_integer_value(maxt) < 1))) {
		http_respond_error(
			req, 422, "invalid_parameters",
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
		http_respond_error(req, 422, "invalid_parameters", "stream must be a boolean");
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
		http_respond_error(req, 422, "invalid_parameters",
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

static void models(struct http_req *req, void *arg)
{
	(void)arg;
	struct llm_config cfg;
	llm_config_from_settings(&cfg);
	http_respond_json(req, 200,
			  json_pack("{s:s, s:[{s:s, s:s, s:i, s:s}]}", "object", "list", "data", "id", cfg.model,
				    "object", "model", "created", 0, "owned_by", cfg_str(CFG_LLM_PROVIDER)));
}

enum soma_err gateway_llm_routes(struct http_router *r)
{
	enum soma_err err = http_route_add(r, "POST", "/v1/chat/completions", chat_completions, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/models", models, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_add(r, "POST", "/v1/llm/invoke", llm_invoke, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_add(r, "POST", "/v1/llm/invoke/stream", llm_invoke_stream, NULL, 0);
	return err;
}
