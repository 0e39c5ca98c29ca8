/*
 * llm_proxy.c - the provider calls of the LLM endpoints (llm_routes.c reads their requests):
 * POST /v1/chat/completions in OpenAI's shapes (so the official SDKs work unchanged), and POST
 * /v1/llm/invoke[/stream] for tools and workers of other nodes.
 *
 * DESIGN: the provider call runs on the request's own io thread (llm_async_start: an HTTP client
 * on that thread's event loop, src/llm/async.c), so the provider's chunks are parsed and written to the
 * client by one thread, with no hand-off and no thread held per call. A streamed reply is relayed
 * chunk by chunk as the provider's own chat.completion.chunk objects, ending in `data: [DONE]`
 * (a read's plain `data: {..}` events without usage pass on as they came, in one piece: the
 * frames we would write for them, byte for byte); the frames of one provider read are corked and
 * sent together once that read is handled;
 * errors after the first chunk go in-band as `data: {"error":..}`. A client that reads slower than
 * the provider writes is not buffered for without bound: once more than stream.max_buffer bytes
 * wait for it the provider call pauses until it has read them (llm_flow.h); one that reads nothing
 * for llm.proxy_stall_s is cut (the call stops: the provider connection closes and the slot
 * frees) and its stream ends with an in-band llm_client_too_slow error. At most
 * llm.proxy_concurrency calls run at once per process (slots, shared by the io threads under one
 * lock); up to 64 times as many wait in arrival order and are started on their own io thread when
 * a slot frees; beyond that the answer is 503 llm_busy. When the client leaves, on_abort cancels the call (or takes
 * the job off the wait list). The answers built from a call's outcome (errors, a whole completion,
 * the usage chunk a Groq-style provider does not send) are llm_reply.c's.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/str_copy.h"
#include "gateway/gateway.h"
#include "gateway/llm_ask.h"
#include "gateway/llm_flow.h"
#include "gateway/llm_reply.h"
#include "limits/limits.h"
#include "llm/llm.h"
#include "policy/gate.h"

enum job_state { JOB_NEW, JOB_WAITING, JOB_GRANTED, JOB_RUNNING };

struct llm_job {
	struct http_req *req;	    /* the request (valid until answered or aborted) */
	struct io_thread *thread;   /* the request's io thread: everything below runs there */
	enum job_shape shape;	    /* response shape */
	bool stream, include_usage; /* what the client asked */
	bool started;		    /* the stream began */
	bool usage_relayed;	    /* a top-level usage chunk went to the client */
	json_t *messages;	    /* owned */
	char *extra;		    /* owned: the client's other members, forwarded (OpenAI shape), or NULL */
	char *upstream;		    /* owned: the provider's body written from the client's text, or NULL */
	char model[128];	    /* requested model, or "" */
	char tenant[65];	    /* the caller's tenant (its daily token budget) */
	double temperature;	    /* < 0: not given */
	int64_t max_tokens;	    /* <= 0: not given */
	struct llm_config cfg;	    /* effective provider settings */
	struct llm_result res;	    /* the call's outcome */
	struct llm_async *call;	    /* the provider call while JOB_RUNNING */
	size_t asked_bytes;	    /* the client's request body: the prompt's estimate when no usage comes */
	int64_t relayed;	    /* chunks relayed: the completion's estimate when no usage comes */
	struct llm_flow flow;	    /* backpressure (stream.max_buffer, llm.proxy_stall_s) */
	enum job_state state;	    /* slots.lock */
	bool aborted;		    /* slots.lock: the client left while the job held an unused grant */
	struct llm_job *next;	    /* slots.lock: wait list link */
};

/* Provider calls in flight (llm.proxy_concurrency) and the jobs waiting for one, process-wide. */
static struct {
	pthread_mutex_t lock;	     /* guards everything here and the jobs' state fields */
	int in_flight, max;	     /* running calls (and grants on their way) and the limit */
	size_t waiting, max_waiting; /* jobs on the list and its bound */
	struct llm_job *head, *tail; /* wait list, oldest first */
} slots = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void job_free(struct llm_job *job)
{
	llm_flow_free(&job->flow);
	json_decref(job->messages);
	free(job->extra);
	free(job->upstream);
	llm_result_free(&job->res);
	free(job);
}

/* ---- slots ------------------------------------------------------------------------------------ */

static void start_granted(void *arg);

/* A call ended (or a grant was dropped): the slot goes to the oldest waiting job, started on its
 * own io thread, or is freed. Any thread. */
static void slot_release(void)
{
	for (;;) {
		pthread_mutex_lock(&slots.lock);
		struct llm_job *next = slots.head;
		if (!next) {
			slots.in_flight--;
			pthread_mutex_unlock(&slots.lock);
			return;
		}
		slots.head = next->next;
		if (!slots.head)
			slots.tail = NULL;
		slots.waiting--;
		next->state = JOB_GRANTED;
		pthread_mutex_unlock(&slots.lock);
		if (http_thread_post_wait(next->thread, start_granted, next) == SOMA_OK)
			return;
		/* its io thread has stopped, so the client was aborted with it (on_abort saw the grant
		 * and left the job to us): free it and pass the slot on */
		job_free(next);
	}
}

/* ---- the call (the request's io thread) ---------------------------------------------------------- */

/* The chunks of one upstream read come in a burst: corked, they leave in one write and one packet
 * when the read is done (flush_burst, or the stream's end). The first begins the stream. */
static void stream_corked(struct llm_job *job)
{
	http_cork(job->req);
	if (!job->started) {
		job->started = true;
		http_stream_begin(job->req, 200, "text/event-stream");
		http_stream_count(job->req, gw_sse_gauge(GW_SSE_PROXY));
	}
}

/* What a write left queued for the client (http_stream_write's count): beyond the bound the
 * provider call pauses (llm_flow.h). The relay goes on either way. */
static bool within_bound(struct llm_job *job, size_t pending)
{
	llm_flow_wrote(&job->flow, job->call, pending);
	return true;
}

/* Each chunk object of a streamed reply, relayed as one SSE frame. usage_only comes from the
 * LLM client's own reading of the chunk (one scan per chunk, not two). */
static bool relay_chunk(void *ctx, const char *json, size_t len, bool usage_only)
{
	struct llm_job *job = ctx;
	if (!job->stream)
		return true;
	/* we always ask for usage upstream; drop it when the client did not */
	if (!job->include_usage && usage_only)
		return true;
	job->usage_relayed = job->usage_relayed || usage_only;
	stream_corked(job);
	job->relayed++;
	const char *nl = memchr(json, '\n', len);
	if (!nl) {
		struct str frame[] = {STR_LIT("data: "), {json, len}, STR_LIT("\n\n")};
		return within_bound(job, http_stream_writev(job->req, frame, 3));
	}
	/* the provider sent the value over several data: lines (the parser joined them with LF):
	 * each line goes out as its own data: line, so the client joins the same value */
	for (const char *p = json, *end = json + len; p <= end;) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);
		struct str line[] = {STR_LIT("data: "), {p, n}, STR_LIT("\n")};
		http_stream_writev(job->req, line, 3);
		if (!eol)
			break;
		p = eol + 1;
	}
	return within_bound(job, http_stream_write(job->req, "\n", 1));
}

/* Whole events of the provider's stream, none with usage: passed on as they came (the frames
 * relay_chunk would write for them, byte for byte). */
static bool relay_events(void *ctx, const char *sse, size_t len, size_t count)
{
	struct llm_job *job = ctx;
	if (!job->stream)
		return true;
	stream_corked(job);
	job->relayed += (int64_t)count;
	return within_bound(job, http_stream_write(job->req, sse, len));
}

/* The provider read that brought chunks is done and the call goes on: send the burst. */
static void flush_burst(void *ctx)
{
	struct llm_job *job = ctx;
	http_uncork(job->req);
}

/* The model named in answers when the provider named none. */
static const char *asked_model(const struct llm_job *job)
{
	return job->model[0] ? job->model : job->cfg.model;
}

/* A stream that ends well, for a client that asked for usage, ends with a usage chunk: the
 * provider's own, or (Groq reports it in x_groq.usage of the last chunk) one of ours. */
static void usage_if_missing(struct llm_job *job)
{
	if (!job->include_usage || job->usage_relayed || job->res.error != LLM_OK)
		return;
	char *frame = llm_reply_usage_frame(&job->res, asked_model(job));
	if (frame)
		http_stream_write(job->req, frame, strlen(frame));
	free(frame);
}

/* Answers the request from job->res; the request must not be touched afterwards. */
static void answer(struct llm_job *job)
{
	struct http_req *req = job->req;
	req->on_abort = NULL;
	req->on_drain = NULL;
	if (job->started) {
		usage_if_missing(job);
		if (job->res.error != LLM_OK && job->res.error != LLM_ERR_CANCELLED) {
			json_t *obj = json_pack("{s:o}", "error", llm_reply_error(&job->res, req->request_id));
			char *err = json_dumps(obj, JSON_COMPACT);
			json_decref(obj);
			struct str frame[] = {STR_LIT("data: "), str_from(err ? err : "{}"), STR_LIT("\n\n")};
			http_stream_writev(req, frame, 3);
			free(err);
		}
		http_stream_write(req, "data: [DONE]\n\n", 14);
		http_stream_end(req);
	} else if (job->res.error != LLM_OK) {
		llm_reply_fail(req, &job->res);
	} else if (job->stream) {
		http_stream_begin(req, 200, "text/event-stream");
		usage_if_missing(job);
		http_stream_write(req, "data: [DONE]\n\n", 14);
		http_stream_end(req);
	} else if (job->res.raw) { /* the provider's own reply: tool calls, logprobs, all of it */
		http_respond(req, 200, "application/json", job->res.raw, job->res.raw_len);
	} else {
		http_respond_json(req, 200,
				  llm_reply_completion(&job->res, job->shape == SHAPE_OPENAI, asked_model(job)));
	}
}

/* The provider call ended. */
static void on_done(void *ctx, struct llm_result *res)
{
	struct llm_job *job = ctx;
	limits_tokens_add(job->tenant, llm_tokens_used(res, job->asked_bytes, job->relayed));
	if (res->error != LLM_OK && res->error != LLM_ERR_CANCELLED)
		log_warn("llm", "provider call failed: %s (%s)", llm_error_code(res->error), res->detail);
	job->call = NULL;
	answer(job);
	job_free(job);
	slot_release();
}

/* The client read all that waited for it: the paused call reads on (and may end here). */
static void client_drained(struct http_req *req)
{
	struct llm_job *job = req->handler_ctx;
	llm_flow_drained(&job->flow, job->call);
}

/* The client read nothing for llm.proxy_stall_s: the call stops, the stream ends in-band. */
static void client_stalled(void *ctx)
{
	struct llm_job *job = ctx;
	llm_async_cancel(job->call);
	job->call = NULL;
	if (job->res.error == LLM_OK)
		job->res.error = LLM_ERR_CANCELLED;
	limits_tokens_add(job->tenant, llm_tokens_used(&job->res, job->asked_bytes, job->relayed));
	llm_flow_end_too_slow(&job->flow);
	job_free(job);
	slot_release();
}

/* The job holds a slot: start its provider call. */
static void run_job(struct llm_job *job)
{
	struct llm_request r = {.kind = job->shape == SHAPE_INVOKE ? LLM_KIND_INVOKE : LLM_KIND_PROXY,
				.messages = job->messages,
				.model = job->model,
				.temperature = job->temperature,
				.max_tokens = job->max_tokens,
				.stream = job->stream,
				.extra = job->extra,
				.body = job->upstream,
				.keep_raw = job->shape == SHAPE_OPENAI && !job->stream};
	struct llm_callbacks cb = {
		.on_chunk = relay_chunk, .on_events = relay_events, .on_flush = flush_burst, .ctx = job};
	if (llm_async_start(http_thread_base(job->thread), &job->cfg, &r, &cb, on_done, &job->res, &job->call) ==
	    SOMA_OK)
		return;
	log_warn("llm", "provider call failed: %s (%s)", llm_error_code(job->res.error), job->res.detail);
	answer(job);
	job_free(job);
	slot_release();
}

/* A slot freed by another call reached this waiting job (on its io thread). */
static void start_granted(void *arg)
{
	struct llm_job *job = arg;
	pthread_mutex_lock(&slots.lock);
	bool aborted = job->aborted;
	job->state = JOB_RUNNING;
	pthread_mutex_unlock(&slots.lock);
	if (aborted) {
		job_free(job);
		slot_release();
		return;
	}
	run_job(job);
}

static void on_abort(struct http_req *req)
{
	struct llm_job *job = req->handler_ctx;
	pthread_mutex_lock(&slots.lock);
	enum job_state state = job->state;
	if (state == JOB_WAITING) { /* take it off the wait list */
		struct llm_job **p = &slots.head, *prev = NULL;
		while (*p != job)
			prev = *p, p = &(*p)->next;
		*p = job->next;
		if (slots.tail == job)
			slots.tail = prev;
		slots.waiting--;
	} else if (state == JOB_GRANTED) {
		job->aborted = true; /* start_granted (or slot_release) frees it */
	}
	pthread_mutex_unlock(&slots.lock);
	if (state == JOB_GRANTED)
		return;
	if (state == JOB_RUNNING) {
		llm_async_cancel(job->call);
		/* the provider read the prompt and generated up to here: the budget counts it, even
		 * when the client left before the first chunk */
		if (job->res.error == LLM_OK)
			job->res.error = LLM_ERR_CANCELLED;
		limits_tokens_add(job->tenant, llm_tokens_used(&job->res, job->asked_bytes, job->relayed));
		job_free(job);
		slot_release();
		return;
	}
	job_free(job);
}

/* A job that never started (policy said no, or the client left first). */
static void job_drop(void *arg)
{
	job_free(arg);
}

/* ---- handlers ----------------------------------------------------------------------------------- */

/* Policy allowed the job (issue 6): start it if a slot is free, else queue it. */
static void job_submit(struct http_req *req, void *arg)
{
	struct llm_job *job = arg;
	if (http_client_gone(req)) { /* it left while policy was asked, or sent this after closing its side */
		job_free(job);
		http_respond_error(req, 400, "client_closed",
				   "the client closed its side of the connection before the call began; the "
				   "provider was not called");
		return;
	}
	pthread_mutex_lock(&slots.lock);
	bool run = slots.in_flight < slots.max, queued = !run && slots.waiting < slots.max_waiting;
	if (run) {
		slots.in_flight++;
		job->state = JOB_RUNNING;
	} else if (queued) {
		job->state = JOB_WAITING;
		if (slots.tail)
			slots.tail->next = job;
		else
			slots.head = job;
		slots.tail = job;
		slots.waiting++;
	}
	pthread_mutex_unlock(&slots.lock);
	if (!run && !queued) {
		job_free(job);
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "llm_busy",
				   "all LLM slots are busy (llm.proxy_concurrency); retry shortly");
		return;
	}
	req->handler_ctx = job;
	req->on_abort = on_abort;
	req->abort_on_eof = true; /* a client that left (EOF) frees its slot or wait-list place */
	if (run)
		run_job(job);
}

void llm_job_start(struct http_req *req, const struct job_ask *ask, enum job_shape shape)
{
	struct llm_job *job = calloc(1, sizeof(*job));
	if (!job) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	job->req = req;
	job->asked_bytes = req->body_len;
	job->thread = req->thread;
	job->shape = shape;
	job->stream = ask->stream;
	job->include_usage = ask->include_usage;
	job->messages = json_incref(ask->messages);
	str_copy(job->model, sizeof(job->model), ask->model ? ask->model : "");
	job->temperature = ask->temperature;
	job->max_tokens = ask->max_tokens;
	job->flow = (struct llm_flow){.req = req,
				      .max_pending = (size_t)cfg_int(CFG_STREAM_MAX_BUFFER),
				      .stall_s = (int)cfg_int(CFG_LLM_PROXY_STALL_S),
				      .on_stall = client_stalled,
				      .on_drain = client_drained,
				      .ctx = job};
	llm_config_from_settings(&job->cfg);
	if (!job->cfg.api_key[0]) {
		job->res.error = LLM_ERR_UNCONFIGURED;
		llm_reply_fail(req, &job->res);
		job_free(job);
		return;
	}
	if ((ask->text && !(job->upstream = llm_ask_upstream(ask->text, job->cfg.model))) ||
	    (ask->forward && !(job->extra = llm_forwarded_members(ask->forward)))) {
		job_free(job);
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	/* ---- policy (issue 6): the token budget, then llm.invoke for the model that will be used ---- */
	if (!limits_http_tokens(req)) {
		job_drop(job);
		return;
	}
	str_copy(job->tenant, sizeof(job->tenant), req->ident.tenant);
	const char *use = job->model[0] ? job->model : job->cfg.model;
	char resource[160];
	str_copy(resource + str_copy(resource, sizeof(resource), "model:"), sizeof(resource) - 6, use);
	json_t *ctx = json_pack("{s:s, s:b}", "model", use, "stream", ask->stream);
	struct policy_input in = {
		.persona_id = ask->persona_id, .action = POLICY_LLM_INVOKE, .resource = resource, .context = ctx};
	policy_gate_ask(req, &in, shape == SHAPE_INVOKE ? ask->session_id : NULL, job_submit, job, job_drop);
	json_decref(ctx);
}

enum soma_err gateway_llm_start(int concurrency)
{
	pthread_mutex_lock(&slots.lock);
	slots.max = concurrency;
	slots.max_waiting = (size_t)concurrency * 64;
	pthread_mutex_unlock(&slots.lock);
	return SOMA_OK;
}

void gateway_llm_stop(void)
{
	/* nothing to stop: calls run on the io threads, which cancelled them when they stopped */
}
