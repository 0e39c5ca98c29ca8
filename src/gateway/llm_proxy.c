/*
 * llm_proxy.c - the LLM endpoints: POST /v1/chat/completions and GET /v1/models in OpenAI's
 * shapes (so the official SDKs work unchanged), and POST /v1/llm/invoke[/stream] for tools and
 * workers of other nodes.
 *
 * DESIGN: the provider call blocks, so it runs on the LLM pool (llm.proxy_concurrency threads);
 * the io thread only parses the request and writes what the pool posts back. A streamed reply
 * is relayed chunk by chunk as the provider's own chat.completion.chunk objects, ending in
 * `data: [DONE]`; errors after the first chunk go in-band as `data: {"error":..}`. The job is
 * shared by the two threads with a reference count; when the client leaves, `aborted` makes
 * the provider call stop at its next callback.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/pool.h"
#include "gateway/gateway.h"
#include "limits/limits.h"
#include "llm/llm.h"
#include "policy/gate.h"

enum job_shape { SHAPE_OPENAI, SHAPE_INVOKE };

struct llm_job {
	_Atomic int refs;	       /* io side + pool side */
	_Atomic bool aborted;	       /* the client left */
	struct http_req *req;	       /* valid on the io thread while !aborted */
	struct io_thread *thread;      /* the request's io thread */
	enum job_shape shape;	       /* response shape */
	bool stream, include_usage;    /* what the client asked */
	bool started;		       /* io side: the stream began */
	json_t *messages;	       /* owned */
	char model[128];	       /* requested model, or "" */
	char tenant[65];	       /* the caller's tenant (its daily token budget) */
	double temperature;	       /* < 0: not given */
	int64_t max_tokens;	       /* <= 0: not given */
	struct llm_config cfg;	       /* effective provider settings */
	struct llm_result res;	       /* filled by the pool side */
	pthread_mutex_t lock;	       /* guards the outbox fields below */
	char *outbox;		       /* SSE frames ready for the client, not yet handed to the io thread */
	size_t outbox_len, outbox_cap; /* bytes used and allocated */
	bool finished;		       /* the provider call ended (res is final) */
	bool post_pending;	       /* a hand-off to the io thread is queued: later frames ride on it */
	bool answered;		       /* io side: the response is complete */
};

static struct pool *llm_pool;

static void job_unref(struct llm_job *job)
{
	if (atomic_fetch_sub(&job->refs, 1) != 1)
		return;
	json_decref(job->messages);
	llm_result_free(&job->res);
	pthread_mutex_destroy(&job->lock);
	free(job->outbox);
	free(job);
}

/* HTTP status and code for a provider failure. */
static int error_status(enum llm_error e)
{
	switch (e) {
	case LLM_ERR_UNCONFIGURED:
		return 503;
	case LLM_ERR_RATE_LIMITED:
		return 429;
	case LLM_ERR_BAD_REQUEST:
		return 400;
	case LLM_ERR_TIMEOUT:
		return 504;
	default:
		return 502;
	}
}

static json_t *error_object(struct llm_job *job)
{
	return json_pack("{s:{s:s, s:s, s:s, s:s}}", "error", "code", llm_error_code(job->res.error), "type",
			 "provider_error", "message", llm_error_message(job->res.error), "request_id",
			 job->req->request_id);
}

static json_t *completion_json(struct llm_job *job)
{
	struct llm_result *r = &job->res;
	int64_t in = r->input_tokens > 0 ? r->input_tokens : 0, out = r->output_tokens > 0 ? r->output_tokens : 0;
	const char *model = r->model[0] ? r->model : job->model[0] ? job->model : job->cfg.model;
	json_t *content = json_stringn(r->content ? r->content : "", r->content_len);
	if (job->shape == SHAPE_INVOKE)
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

/* ---- io thread side --------------------------------------------------------------------------- */

/* The io side: writes every frame gathered since the last hand-off as one chunk, and answers
 * the request once the provider call has finished. Frames that arrive together (a provider that
 * sends a burst) cost one cross-thread wake-up, not one each. */
static void on_io_post(void *arg)
{
	struct llm_job *job = arg;
	pthread_mutex_lock(&job->lock);
	char *frames = job->outbox;
	size_t nframes = job->outbox_len;
	bool finished = job->finished;
	job->outbox = NULL;
	job->outbox_len = job->outbox_cap = 0;
	job->post_pending = false;
	pthread_mutex_unlock(&job->lock);
	if (atomic_load(&job->aborted) || job->answered)
		goto out;
	struct http_req *req = job->req;
	if (nframes) {
		if (!job->started) {
			job->started = true;
			http_stream_begin(req, 200, "text/event-stream");
		}
		struct str all = {frames, nframes};
		http_stream_writev(req, &all, 1);
	}
	if (!finished)
		goto out;
	/* finished: the request is answered below, so the io side's reference goes too */
	job->answered = true;
	req->on_abort = NULL;
	job_unref(job);
	if (job->started) {
		if (job->res.error != LLM_OK && job->res.error != LLM_ERR_CANCELLED) {
			json_t *obj = error_object(job);
			char *err = json_dumps(obj, JSON_COMPACT);
			json_decref(obj);
			struct str frame[] = {STR_LIT("data: "), str_from(err ? err : "{}"), STR_LIT("\n\n")};
			http_stream_writev(req, frame, 3);
			free(err);
		}
		http_stream_write(req, "data: [DONE]\n\n", 14);
		http_stream_end(req);
	} else if (job->res.error != LLM_OK) {
		if (job->res.error == LLM_ERR_RATE_LIMITED)
			http_resp_header(req, "Retry-After", "5");
		http_respond_json(req, error_status(job->res.error), error_object(job));
	} else if (job->stream) {
		http_stream_begin(req, 200, "text/event-stream");
		http_stream_write(req, "data: [DONE]\n\n", 14);
		http_stream_end(req);
	} else {
		http_respond_json(req, 200, completion_json(job));
	}
out:
	free(frames);
	job_unref(job);
}

/* Hands the job to its io thread unless a hand-off is already queued (it will carry everything).
 * Called with job->lock held; posts after unlocking. */
static void hand_off(struct llm_job *job)
{
	bool post = !job->post_pending;
	job->post_pending = true;
	pthread_mutex_unlock(&job->lock);
	if (!post)
		return;
	atomic_fetch_add(&job->refs, 1);
	enum soma_err err = http_thread_post_wait(job->thread, on_io_post, job);
	if (err != SOMA_OK) /* the io thread stopped: the request was aborted with it */
		job_unref(job);
}

/* Appends one SSE frame for the client (pool thread). */
static void queue_frame(struct llm_job *job, const char *json, size_t len)
{
	pthread_mutex_lock(&job->lock);
	size_t need = job->outbox_len + len + 8;
	if (need > job->outbox_cap) {
		size_t cap = need * 2;
		char *grown = realloc(job->outbox, cap);
		if (!grown) {
			pthread_mutex_unlock(&job->lock);
			return;
		}
		job->outbox = grown;
		job->outbox_cap = cap;
	}
	memcpy(job->outbox + job->outbox_len, "data: ", 6);
	memcpy(job->outbox + job->outbox_len + 6, json, len);
	memcpy(job->outbox + job->outbox_len + 6 + len, "\n\n", 2);
	job->outbox_len += len + 8;
	hand_off(job); /* unlocks */
}

/* A job that never started: both references go. */
static void job_drop(void *arg)
{
	job_unref(arg);
	job_unref(arg);
}

static void on_abort(struct http_req *req)
{
	struct llm_job *job = req->handler_ctx;
	atomic_store(&job->aborted, true);
	job_unref(job);
}

/* ---- pool side ---------------------------------------------------------------------------------- */

static bool relay_chunk(void *ctx, const char *json, size_t len)
{
	struct llm_job *job = ctx;
	if (atomic_load(&job->aborted))
		return false;
	if (!job->stream)
		return true;
	if (!job->include_usage) { /* we always ask for usage upstream; drop it when the client did not */
		json_t *chunk = json_loadb(json, len, 0, NULL);
		bool usage_only = json_is_array(json_object_get(chunk, "choices")) &&
				  json_array_size(json_object_get(chunk, "choices")) == 0;
		json_decref(chunk);
		if (usage_only)
			return true;
	}
	queue_frame(job, json, len);
	return true;
}

static bool job_cancelled(void *ctx)
{
	return atomic_load(&((struct llm_job *)ctx)->aborted);
}

static void run_job(void *arg)
{
	struct llm_job *job = arg;
	struct llm_request r = {.messages = job->messages,
				.model = job->model,
				.temperature = job->temperature,
				.max_tokens = job->max_tokens,
				.stream = job->stream};
	struct llm_callbacks cb = {.on_chunk = relay_chunk, .should_cancel = job_cancelled, .ctx = job};
	llm_chat(&job->cfg, &r, &cb, &job->res);
	limits_tokens_add(job->tenant, (job->res.input_tokens > 0 ? job->res.input_tokens : 0) +
					       (job->res.output_tokens > 0 ? job->res.output_tokens : 0));
	if (job->res.error != LLM_OK && job->res.error != LLM_ERR_CANCELLED)
		log_warn("llm", "provider call failed: %s (%s)", llm_error_code(job->res.error), job->res.detail);
	pthread_mutex_lock(&job->lock);
	job->finished = true;
	hand_off(job); /* unlocks */
	job_unref(job);
}

/* ---- handlers ----------------------------------------------------------------------------------- */

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

/* Policy allowed the job (issue 6): hand it to the LLM pool. */
static void job_submit(struct http_req *req, void *arg)
{
	struct llm_job *job = arg;
	if (!llm_pool || pool_submit(llm_pool, run_job, job) != SOMA_OK) {
		job_drop(job);
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "llm_busy",
				   "all LLM slots are busy (llm.proxy_concurrency); retry shortly");
		return;
	}
	req->handler_ctx = job;
	req->on_abort = on_abort;
}

static void start_job(struct http_req *req, json_t *body, json_t *messages, json_t *options, enum job_shape shape,
		      bool stream)
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
		return;
	}
	struct llm_job *job = calloc(1, sizeof(*job));
	if (!job) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	atomic_init(&job->refs, 2);
	pthread_mutex_init(&job->lock, NULL);
	job->req = req;
	job->thread = req->thread;
	job->shape = shape;
	job->stream = stream;
	job->include_usage = json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
	job->messages = json_incref(messages);
	snprintf(job->model, sizeof(job->model), "%s", json_string_value(model) ? json_string_value(model) : "");
	job->temperature = json_is_number(temp) ? json_number_value(temp) : -1;
	job->max_tokens = json_is_integer(maxt) ? json_integer_value(maxt) : 0;
	llm_config_from_settings(&job->cfg);
	if (!job->cfg.api_key[0]) {
		job->res.error = LLM_ERR_UNCONFIGURED;
		http_respond_json(req, 503, error_object(job));
		job_unref(job);
		job_unref(job);
		return;
	}
	/* ---- policy (issue 6): the token budget, then llm.invoke for the model that will be used ---- */
	if (!limits_http_tokens(req)) {
		job_drop(job);
		return;
	}
	snprintf(job->tenant, sizeof(job->tenant), "%s", req->ident.tenant);
	const char *use = job->model[0] ? job->model : job->cfg.model;
	const char *session = json_string_value(json_object_get(body, "session_id"));
	char resource[160];
	snprintf(resource, sizeof(resource), "model:%s", use);
	json_t *ctx = json_pack("{s:s, s:b}", "model", use, "stream", stream);
	struct policy_input in = {.persona_id = json_string_value(json_object_get(body, "persona_id")),
				  .action = POLICY_LLM_INVOKE,
				  .resource = resource,
				  .context = ctx};
	policy_gate_ask(req, &in, shape == SHAPE_INVOKE ? session : NULL, job_submit, job, job_drop);
	json_decref(ctx);
}

static void chat_completions(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *stream = json_object_get(body, "stream");
	if (stream && !json_is_boolean(stream) && !json_is_null(stream))
		http_respond_error(req, 422, "invalid_parameters", "stream must be a boolean");
	else if (valid_messages(req, json_object_get(body, "messages")))
		start_job(req, body, json_object_get(body, "messages"), body, SHAPE_OPENAI, json_is_true(stream));
	json_decref(body);
}

static void invoke(struct http_req *req, bool stream)
{
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	json_t *overrides = json_object_get(body, "overrides");
	if (overrides && !json_is_object(overrides) && !json_is_null(overrides))
		http_respond_error(req, 422, "invalid_parameters",
				   "overrides must be an object {model, temperature, max_tokens}");
	else if (valid_messages(req, json_object_get(body, "messages")))
		start_job(req, body, json_object_get(body, "messages"), overrides, SHAPE_INVOKE, stream);
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

enum soma_err gateway_llm_start(int threads)
{
	llm_pool = pool_new(threads, (size_t)threads * 64);
	return llm_pool ? SOMA_OK : SOMA_ERR_NOMEM;
}

void gateway_llm_stop(void)
{
	pool_free(llm_pool);
	llm_pool = NULL;
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
