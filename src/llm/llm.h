/*
 * llm.h - OpenAI-compatible chat completions client (Groq, OpenAI, any compatible server).
 *
 * DESIGN: two ways to make the same call over libcurl. llm_chat blocks (worker threads: the
 * conversation task); llm_async_start runs on an io thread's event loop with libcurl's multi
 * interface (the HTTP proxy: no thread is held per call, and no hand-off between threads sits
 * between the provider's socket and the client's). Streaming replies are parsed with
 * the SSE parser and each content delta is handed to on_delta as it arrives. Failures before
 * the first token (connect errors, 429, 408, 409, 5xx; not our own timeout) are retried with
 * exponential backoff that honours Retry-After, within llm_config.retry_wait_ms (retry.c); after the first token
 * nothing is retried (the user has already seen text), and a cut stream is reported as LLM_ERR_CUT. should_cancel is
 * polled while waiting so a deleted session stops its generation promptly. Errors are classified so callers can tell
 * the user what to do (configure a key, wait for a rate limit, ...).
 */
#ifndef SOMA_LLM_LLM_H
#define SOMA_LLM_LLM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

enum llm_error {
	LLM_OK,
	LLM_ERR_UNCONFIGURED, /* no API key */
	LLM_ERR_UNREACHABLE,  /* connect / DNS / TLS failure */
	LLM_ERR_RATE_LIMITED, /* 429 after the retries */
	LLM_ERR_AUTH,	      /* 401 / 403: key missing or rejected */
	LLM_ERR_BAD_REQUEST,  /* other 4xx: model unknown, context too long, ... */
	LLM_ERR_SERVER,	      /* 5xx after the retries */
	LLM_ERR_TIMEOUT,      /* no answer in time */
	LLM_ERR_CUT,	      /* the stream ended before [DONE] / finish_reason */
	LLM_ERR_CANCELLED,    /* should_cancel said stop */
	LLM_ERR_PROTOCOL,     /* the answer was not what the API promises */
};

struct llm_config {
	char base_url[512];    /* e.g. https://api.groq.com/openai/v1 */
	char api_key[512];     /* bearer key; empty = unconfigured */
	char model[128];       /* default model */
	int connect_timeout_s; /* connect phase */
	int timeout_s;	       /* whole request without any byte (idle) */
	int max_retries;       /* retries before the first token */
	int backoff_ms;	       /* first backoff; doubles, capped at 8 s */
	int retry_wait_ms;     /* no retry starts later than this after the first attempt (llm.retry_wait_s) */
	bool env_proxy;	       /* an HTTP proxy is set in the environment (cfg_env_http_proxy) */
};

/* Who makes a call, for the soma_llm_* metrics (llm_metrics.c). */
enum llm_kind {
	LLM_KIND_CHAT,	 /* the conversation task (the default) */
	LLM_KIND_PROXY,	 /* POST /v1/chat/completions */
	LLM_KIND_INVOKE, /* POST /v1/llm/invoke[/stream] */
};

struct llm_request {
	enum llm_kind kind; /* for metrics; LLM_KIND_CHAT when left 0 */
	json_t *messages;   /* borrowed: [{role, content}] */
	const char *model;  /* NULL: config model */
	double temperature; /* < 0: not sent */
	int64_t max_tokens; /* <= 0: not sent */
	bool stream;	    /* ask for a streamed reply */

	/* borrowed: sent as the W3C traceparent header when not NULL (llm_chat only) */
	const char *traceparent;
	/* borrowed, may be NULL: more members of the request body as JSON text without braces
	 * ("tools":[..],"top_p":0.9), sent as they are (the proxy forwards what the client asked) */
	const char *extra;
	bool keep_raw; /* a whole (non-streamed) reply's body is kept in llm_result.raw */
	/* borrowed, may be NULL: the whole request body, written by the caller (a proxy that kept the
	 * client's text); messages, model, temperature, max_tokens and extra are then not read */
	const char *body;
	/* a streamed reply's tool_calls deltas are gathered into llm_result.tool_calls (tool_calls.h;
	 * the conversation task offers tools in extra) */
	bool tool_calls;
};

struct llm_callbacks {
	/* each content delta of a streamed reply; return false to stop (treated as cancel) */
	bool (*on_delta)(void *ctx, const char *text, size_t len);
	/* polled while waiting; true stops the call with LLM_ERR_CANCELLED */
	bool (*should_cancel)(void *ctx);
	/* each raw chunk object of a streamed reply (for proxies); may be NULL. usage_only: its
	 * "choices" is an empty array and it has a "usage" object (the usage chunk), read by the
	 * client's own scan of the chunk. With on_chunk set and on_delta NULL, only chunks
	 * with usage are read and a finish is taken from a byte search (llm_chunk_peek); content is
	 * not gathered */
	bool (*on_chunk)(void *ctx, const char *json, size_t len, bool usage_only);
	/* may be NULL; with on_chunk (a relay): whole events of a streamed reply passed on as the
	 * provider wrote them, several at once - each `data: {chunk}\n\n` with no usage in it, none
	 * of them given to on_chunk too (count: how many). Events of any other form still go to
	 * on_chunk one by one. Return false to stop (treated as cancel) */
	bool (*on_events)(void *ctx, const char *sse, size_t len, size_t count);
	/* llm_async only, may be NULL: after one read from the provider that delivered chunks, while
	 * the call goes on (a proxy sends what those chunks wrote, in one write: http_uncork) */
	void (*on_flush)(void *ctx);
	void *ctx;
};

struct llm_result {
	enum llm_error error;	/* LLM_OK or the class of failure */
	int http_status;	/* last HTTP status, 0 when none */
	int attempts;		/* calls made */
	long retry_after_ms;	/* the last answer's Retry-After (or retry-after-ms), -1 when none */
	char *content;		/* whole reply text; owned (free) */
	size_t content_len;	/* bytes of content */
	int64_t input_tokens;	/* usage.prompt_tokens, -1 when not reported */
	int64_t output_tokens;	/* usage.completion_tokens, -1 when not reported */
	char model[128];	/* model that answered */
	char finish_reason[32]; /* stop, length, ... */
	char detail[512];	/* provider's error text, for logs and metadata */
	/* the provider's error object's type, param and code ("" when it gave none), so a proxy can
	 * pass a refusal of the client's request on as the provider worded it */
	char err_type[64], err_param[128], err_code[64];
	char *raw;	/* keep_raw: the provider's reply body as it came; owned (free) */
	size_t raw_len; /* bytes of raw */
	/* llm_request.tool_calls: the reply's calls [{id, type, function:{name, arguments}}], NULL
	 * when it made none; owned (llm_result_free) */
	json_t *tool_calls;
};

/* llm_config.retry_wait_ms of a call no client waits on (the conversation task): a longer
 * Retry-After than this ends the call (its error carries the provider's words). */
#define LLM_BACKGROUND_RETRY_WAIT_MS 120000

/* The effective settings: llm.* keys with the provider preset applied (retry_wait_ms: the
 * proxy's, llm.retry_wait_s). */
void llm_config_from_settings(struct llm_config *out);
/* Sets up libcurl once per process (before threads). */
enum soma_err llm_global_init(void) SOMA_MUST_CHECK;
void llm_global_deinit(void);
/* Runs one chat completion. Blocking: worker threads only. res must be freed with
 * llm_result_free. Returns SOMA_OK when res->error is LLM_OK. */
enum soma_err llm_chat(const struct llm_config *cfg, const struct llm_request *req, const struct llm_callbacks *cb,
		       struct llm_result *res);
void llm_result_free(struct llm_result *res);
/* The tokens a call used, for a tenant's daily budget: the provider's usage; where none came (a
 * reply stopped or cut, a client that left, a provider that reports none: it bills what it
 * generated) an estimate - prompt_bytes / 4 unless the provider never took the prompt (not
 * configured, unreachable) or refused it with an error status, and one per relayed chunk or the
 * reply's bytes / 4. A call stopped before its first token still counts its prompt. */
int64_t llm_tokens_used(const struct llm_result *res, size_t prompt_bytes, int64_t relayed);
/* The members of a client's request body that a proxy forwards as they are (forward.c): all but
 * those the call sets (model, messages, stream, stream_options, temperature, max_tokens) and the
 * platform's own (persona_id, session_id), as JSON text for llm_request.extra. Owned by the caller
 * (free); "" when there are none; NULL on OOM. */
char *llm_forwarded_members(const json_t *body);
/* Whether key (len bytes) is one of those members: the call's own or the platform's (forward.c;
 * the proxy's text reader asks it too). */
bool llm_member_set_by_call(const char *key, size_t len);
/* ---- the event-loop client (io threads) ------------------------------------------------------- */

struct llm_async;
struct event_base;

/* The end of an asynchronous call: res is final (res->error says how it went). */
typedef void (*llm_done_fn)(void *ctx, struct llm_result *res);

/* Starts a chat completion driven by base, the event loop of the calling thread: the provider's
 * socket is watched by that loop, and cb->on_chunk / cb->on_delta run on this thread as data
 * arrives (cb->should_cancel is not used: cancel instead). cfg and req are copied (req->messages
 * is read only here); cb is copied, and cb->ctx must stay valid until done or cancel. res is the
 * caller's storage (free it with llm_result_free afterwards). Retries before the first token wait
 * on a timer of base, honouring Retry-After. done(cb->ctx, res) runs exactly once, later, on this
 * thread, and the call is freed after it returns. Returns SOMA_OK with *out set; otherwise
 * res->error says why and done never runs. */
enum soma_err llm_async_start(struct event_base *base, const struct llm_config *cfg, const struct llm_request *req,
			      const struct llm_callbacks *cb, llm_done_fn done, struct llm_result *res,
			      struct llm_async **out) SOMA_MUST_CHECK;
/* Stops a call before its done ran, and frees it (done never runs). On the call's thread, not from
 * inside its own callbacks. */
void llm_async_cancel(struct llm_async *a);
/* Backpressure for a relay whose client lags: llm_async_pause stops reading the provider's answer
 * (a few kB already read may still reach the callbacks; no timeout runs meanwhile); it may be
 * called from the call's callbacks. llm_async_resume reads on; not from inside the call's
 * callbacks, and the call may end (done runs) before it returns. NULL is ignored. */
void llm_async_pause(struct llm_async *a);
void llm_async_resume(struct llm_async *a);

/* ---- metrics (llm_metrics.c) ------------------------------------------------------------------ */
/* Registers the soma_llm_* families and every series (again after metrics_reset). Any thread. */
void llm_metrics_register(void);
/* Counts one finished provider call of kind: its outcome (res->error), its duration from
 * started_ns, its first chunk at first_ns (clock_mono_ns; 0 when none came) and the tokens res
 * reports. Called by llm_chat and the asynchronous client; any thread. */
void llm_metrics_call(enum llm_kind kind, const struct llm_result *res, uint64_t started_ns, uint64_t first_ns);

/* A sentence for users about an error class (what happened and what to do). */
const char *llm_error_message(enum llm_error e);
/* Stable snake_case name of an error class. */
const char *llm_error_code(enum llm_error e);

#endif
