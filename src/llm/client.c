/*
 * client.c - the blocking chat completions call (llm_chat, for worker threads) and what both
 * clients share: error texts, global set-up. One attempt is call.c's; this file drives it with
 * curl_easy_perform (or direct.c's loop for a plain-HTTP provider at a literal address) and
 * sleeps between retries.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "llm/llm_int.h"

static const struct {
	const char *code, *message;
} error_text[] = {
	[LLM_OK] = {"ok", "ok"},
	[LLM_ERR_UNCONFIGURED] = {"llm_unconfigured",
				  "No language model is configured: set llm.api_key (or GROQ_API_KEY / "
				  "OPENAI_API_KEY) and restart somaagent."},
	[LLM_ERR_UNREACHABLE] = {"llm_unreachable",
				 "The language model provider could not be reached. Check the network "
				 "and llm.base_url, then try again."},
	[LLM_ERR_RATE_LIMITED] = {"llm_rate_limited", "The language model provider is rate limiting requests. Wait a "
						      "moment and try again, or raise your plan's limits."},
	[LLM_ERR_AUTH] = {"llm_auth", "The language model provider rejected the API key. Check llm.api_key."},
	[LLM_ERR_BAD_REQUEST] = {"llm_bad_request", "The language model provider refused the request (unknown model or "
						    "input too long). Check llm.model or shorten the conversation."},
	[LLM_ERR_SERVER] = {"llm_server_error", "The language model provider failed to answer. Try again in a moment."},
	[LLM_ERR_TIMEOUT] = {"llm_timeout", "The language model provider did not answer in time. Try again."},
	[LLM_ERR_CUT] = {"llm_stream_cut", "The reply was cut off by the provider before it finished. Try again."},
	[LLM_ERR_CANCELLED] = {"llm_cancelled", "The reply was cancelled."},
	[LLM_ERR_PROTOCOL] = {"llm_protocol", "The language model provider sent an answer that could not be read."},
};

const char *llm_error_message(enum llm_error e)
{
	return error_text[e].message;
}
const char *llm_error_code(enum llm_error e)
{
	return error_text[e].code;
}

enum soma_err llm_global_init(void)
{
	return SOMA_OK;
}

void llm_global_deinit(void)
{
	curl_api_release();
}

void llm_result_free(struct llm_result *res)
{
	free(res->content);
	res->content = NULL;
	res->content_len = 0;
	free(res->raw);
	res->raw = NULL;
	res->raw_len = 0;
	json_decref(res->tool_calls);
	res->tool_calls = NULL;
}

int64_t llm_tokens_used(const struct llm_result *res, size_t prompt_bytes, int64_t relayed)
{
	/* the prompt counts unless the provider never took it (not configured, unreachable) or
	 * refused it with an error status; a call stopped, timed out or cut was read by the provider
	 * (a stop before the request went out is counted too: a budget is a cap, so the doubt goes
	 * against the caller) */
	enum llm_error e = res->error;
	bool refused = e == LLM_ERR_UNCONFIGURED || e == LLM_ERR_UNREACHABLE || e == LLM_ERR_RATE_LIMITED ||
		       e == LLM_ERR_AUTH || e == LLM_ERR_BAD_REQUEST || e == LLM_ERR_SERVER;
	bool taken = !refused || relayed > 0 || res->content_len > 0;
	int64_t in = res->input_tokens >= 0 ? res->input_tokens : taken ? (int64_t)(prompt_bytes / 4) + 1 : 0;
	int64_t out = res->output_tokens >= 0 ? res->output_tokens
		      : relayed > 0	      ? relayed
					      : (int64_t)(res->raw_len ? res->raw_len : res->content_len) / 4;
	return in + out;
}

/* Sleeps ms in short steps, polling should_cancel; false when cancelled. */
static bool backoff_sleep(const struct llm_callbacks *cb, long ms)
{
	while (ms > 0) {
		if (cb && cb->should_cancel && cb->should_cancel(cb->ctx))
			return false;
		long step = ms > 50 ? 50 : ms;
		struct timespec ts = {0, step * 1000000L};
		nanosleep(&ts, NULL);
		ms -= step;
	}
	return true;
}

/* This thread's setup, kept for its next calls (a reference, dropped when the thread exits):
 * building one parses the URL and the header lists again (~12k instructions, on the path to a
 * reply's first token). */
static pthread_key_t setup_key;
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;

static void setup_drop(void *setup)
{
	llm_setup_unref(setup);
}

static void setup_key_make(void)
{
	if (pthread_key_create(&setup_key, setup_drop) != 0)
		setup_key = (pthread_key_t)-1;
}

/* The setup for cfg (a new reference): this thread's when it was built from the same settings,
 * else a new one, kept in its place. NULL on OOM. */
static struct llm_setup *thread_setup(const struct llm_config *cfg)
{
	pthread_once(&setup_once, setup_key_make);
	bool keyed = setup_key != (pthread_key_t)-1;
	struct llm_setup *kept = keyed ? pthread_getspecific(setup_key) : NULL;
	if (kept && llm_setup_matches(kept, cfg)) {
		kept->refs++;
		return kept;
	}
	struct llm_setup *s = llm_setup_new(cfg);
	if (s && keyed && pthread_setspecific(setup_key, s) == 0) {
		llm_setup_unref(kept);
		s->refs++; /* the thread's reference */
	}
	return s;
}

/* One attempt: over this thread's own connections for a direct provider (direct.c), else on
 * this thread's easy handle. */
static enum llm_error attempt(const struct llm_setup *setup, const char *body, struct llm_call *c)
{
	if (setup->direct)
		return llm_direct_attempt(setup, body, c);
	CURL *h = curl_api_thread_handle(); /* owned by the thread, reset: connections are reused */
	if (!h || !llm_call_prepare(c, setup, true, body, h))
		return LLM_ERR_PROTOCOL;
	enum llm_error e = llm_call_finish(c, curl_api_get(NULL)->easy_perform(h));
	/* the handle is reset for the thread's next transfer: nothing of the setup stays on it */
	curl_api_get(NULL)->easy_setopt(h, CURLOPT_CURLU, NULL);
	curl_api_get(NULL)->easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	return e;
}

/* The caller's hooks seen through these, which note when the reply's first chunk came (for
 * soma_llm_first_token_seconds); a hook the caller left NULL stays NULL (call.c reads which are
 * set). */
struct timed_hooks {
	const struct llm_callbacks *cb; /* the caller's */
	uint64_t first_ns;		/* clock_mono_ns of the first chunk, events or delta; 0 none */
};

static void noted(struct timed_hooks *t)
{
	if (!t->first_ns)
		t->first_ns = clock_mono_ns();
}

static bool timed_delta(void *ctx, const char *text, size_t len)
{
	struct timed_hooks *t = ctx;
	noted(t);
	return t->cb->on_delta(t->cb->ctx, text, len);
}

static bool timed_chunk(void *ctx, const char *json, size_t len, bool usage_only)
{
	struct timed_hooks *t = ctx;
	noted(t);
	return t->cb->on_chunk(t->cb->ctx, json, len, usage_only);
}

static bool timed_events(void *ctx, const char *sse, size_t len, size_t count)
{
	struct timed_hooks *t = ctx;
	noted(t);
	return t->cb->on_events(t->cb->ctx, sse, len, count);
}

static bool timed_cancel(void *ctx)
{
	struct timed_hooks *t = ctx;
	return t->cb->should_cancel(t->cb->ctx);
}

static void timed_flush(void *ctx)
{
	struct timed_hooks *t = ctx;
	t->cb->on_flush(t->cb->ctx);
}

static enum soma_err chat(const struct llm_config *cfg, const struct llm_request *req, const struct llm_callbacks *cb,
			  struct llm_result *res, uint64_t started_ns);

enum soma_err llm_chat(const struct llm_config *cfg, const struct llm_request *req, const struct llm_callbacks *cb,
		       struct llm_result *res)
{
	uint64_t started_ns = clock_mono_ns();
	struct timed_hooks t = {.cb = cb};
	struct llm_callbacks hooks = {0};
	if (cb)
		hooks = (struct llm_callbacks){.on_delta = cb->on_delta ? timed_delta : NULL,
					       .should_cancel = cb->should_cancel ? timed_cancel : NULL,
					       .on_chunk = cb->on_chunk ? timed_chunk : NULL,
					       .on_events = cb->on_events ? timed_events : NULL,
					       .on_flush = cb->on_flush ? timed_flush : NULL,
					       .ctx = &t};
	enum soma_err err = chat(cfg, req, cb ? &hooks : NULL, res, started_ns);
	if (res->attempts > 0) /* a call no provider was asked for (no key) is not counted */
		llm_metrics_call(req->kind, res, started_ns, t.first_ns);
	return err;
}

static enum soma_err chat(const struct llm_config *cfg, const struct llm_request *req, const struct llm_callbacks *cb,
			  struct llm_result *res, uint64_t started_ns)
{
	enum soma_err err = llm_call_begin(cfg, res);
	if (err != SOMA_OK)
		return err;
	char *body = llm_request_body(cfg, req);
	struct llm_setup *setup = body ? thread_setup(cfg) : NULL;
	if (!setup) {
		free(body);
		res->error = LLM_ERR_PROTOCOL;
		return SOMA_ERR_NOMEM;
	}
	struct llm_call c = {.req = req, .cb = cb, .res = res, .started_ns = started_ns};
	long delay = cfg->backoff_ms > 0 ? cfg->backoff_ms : 500;
	for (;;) {
		res->attempts++;
		res->error = attempt(setup, body, &c);
		long wait = res->error == LLM_OK ? -1 : llm_call_retry_ms(&c, res->error, cfg, &delay);
		if (wait < 0)
			break;
		if (!backoff_sleep(cb, wait)) {
			res->error = LLM_ERR_CANCELLED;
			break;
		}
	}
	free(body);
	llm_setup_unref(setup);
	return res->error == LLM_OK ? SOMA_OK : SOMA_ERR_UNAVAILABLE;
}
