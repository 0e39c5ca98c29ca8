/*
 * llm_int.h - what the blocking client (client.c) and the event-loop client (async.c) share:
 * one attempt of a chat completion over a libcurl easy handle (call.c).
 *
 * DESIGN: an attempt is set up on an easy handle the caller owns (llm_call_prepare), run by
 * whoever drives the handle (curl_easy_perform on a worker thread, or a curl multi on an io
 * thread's event loop), and classified when libcurl says it is done (llm_call_finish). The
 * libcurl callbacks parse a streamed reply as it arrives and hand each chunk to the caller's
 * llm_callbacks on the thread that drives the transfer. The retry policy (which errors, how long
 * to wait) is shared too, so both clients retry alike.
 */
#ifndef SOMA_LLM_LLM_INT_H
#define SOMA_LLM_LLM_INT_H

#include "llm/curl_dl.h"
#include "llm/h1_conn.h"
#include "llm/llm.h"
#include "llm/sse.h"

struct llm_call {
	const struct llm_request *req;	/* what was asked (only ->stream is read once started) */
	const struct llm_callbacks *cb; /* caller's hooks */
	struct llm_result *res;		/* where results go */
	CURL *curl;			/* the transfer's easy handle (borrowed during an attempt) */
	struct curl_slist *headers;	/* the attempt's own headers (traceparent); owned, often NULL */
	struct sse_parser sse;		/* streamed reply parser */
	char *body;			/* buffered body (error or non-stream reply); owned */
	size_t body_len;		/* bytes in body */
	bool got_token;			/* a content delta arrived, or a chunk was relayed (no more retries) */
	bool done;			/* [DONE] or a finish_reason was seen */
	bool finished;			/* [DONE] was seen: the reply is whole, whatever the connection does next */
	uint64_t finished_ns;		/* when (clock_mono_ns): libcurl's transfer gets LLM_AFTER_DONE_MS more */
	/* libcurl path, may be NULL: [DONE] came while the transfer goes on (async.c ends the call
	 * now and lets the transfer drain, so its connection is kept); called with cb->ctx. NULL:
	 * the blocking client, whose progress callback stops the transfer LLM_AFTER_DONE_MS later */
	void (*on_finished)(void *ctx);
	bool paused;		   /* the caller asked for no more bytes for now (llm_async_pause) */
	bool unsent;		   /* the attempt timed out before its request went out */
	bool stopped;		   /* a callback asked to stop */
	bool failed;		   /* the stream carried an error event (its message is res->detail) */
	bool not_sse;		   /* the answer's Content-Type is not text/event-stream: read whole */
	bool overflow;		   /* a bound was hit */
	long status;		   /* HTTP status once headers are in */
	long retry_after_ms;	   /* Retry-After (or retry-after-ms) of the last answer, -1 none */
	bool retry_after_ms_exact; /* it came from retry-after-ms */
	uint64_t started_ns;	   /* the first attempt began (clock_mono_ns): retries end retry_wait_ms later */
};

/* How long a transfer may go on after [DONE] for its framing's end (its connection is kept
 * when it ends in time), as the direct path's H1_OVER_GRACE_MS. */
#define LLM_AFTER_DONE_MS H1_OVER_GRACE_MS

/* What every attempt with the same provider settings sends alike, built once and shared: the
 * provider URL parsed (libcurl parsed the text again on every transfer) and the constant header
 * lists. async.c keeps one per io thread for all its calls, llm_chat one per worker thread. Handles
 * set up with it (CURLOPT_CURLU, CURLOPT_HTTPHEADER) point into it: it must outlive their use. */
struct llm_setup {
	struct llm_config cfg;	       /* the settings it was built from */
	char url_text[600];	       /* base_url + "/chat/completions" */
	CURLU *url;		       /* url_text parsed; owned; NULL: libcurl refused it (CURLOPT_URL) */
	struct curl_slist *headers[2]; /* the constant request headers, [stream]; owned */
	/* direct: a plain-HTTP provider at a literal address (h1_conn.h), called without libcurl by
	 * the event-loop client; h1_head[stream] is its request head up to the per-call lines */
	bool direct;
	struct h1_target target;
	char *h1_head[2]; /* owned */
	size_t h1_head_len[2];
	int refs; /* holders (one thread only); freed at 0 */
};

/* The constant request headers (stream or not), with a traceparent line when given, for libcurl;
 * NULL on OOM (setup.c). */
struct curl_slist *llm_build_headers(const struct llm_config *cfg, bool stream, const char *traceparent);
/* A setup for cfg with one reference; NULL on OOM. libcurl must be loaded (llm_call_begin). */
struct llm_setup *llm_setup_new(const struct llm_config *cfg);
/* Whether s was built from settings that give the same requests as cfg. */
bool llm_setup_matches(const struct llm_setup *s, const struct llm_config *cfg);
/* Drops a reference (NULL is ignored); the last frees s. */
void llm_setup_unref(struct llm_setup *s);

/* Starts a call's outcome in res (zeroed, token counts unknown) and checks that a call can be
 * made: SOMA_OK, or SOMA_ERR_UNAVAILABLE (no API key: LLM_ERR_UNCONFIGURED) or
 * SOMA_ERR_INTERNAL (libcurl could not be loaded: LLM_ERR_UNREACHABLE, why in res->detail). */
enum soma_err llm_call_begin(const struct llm_config *cfg, struct llm_result *res);
/* The JSON body sent to the provider; owned by the caller (free), NULL on OOM. */
char *llm_request_body(const struct llm_config *cfg, const struct llm_request *req);
/* Sets curl up for one attempt of c (c->req, c->cb, c->res set by the caller) posting body,
 * which must outlive the attempt, with setup's URL and headers (plus c->req->traceparent's).
 * fresh: curl has not been set up with this setup yet (new or reset), so the options that are the
 * same for every attempt are set too; a handle reused with the same setup keeps them. false on
 * OOM (nothing to undo). */
bool llm_call_prepare(struct llm_call *c, const struct llm_setup *setup, bool fresh, const char *body, CURL *curl);
/* Readies c for an attempt that is not libcurl's (h1_conn.h): the stream parser, the status and
 * Retry-After unknown, no detail. false on OOM. */
bool llm_call_reset(struct llm_call *c);
/* The answer's body bytes (c->status set): a streamed reply parsed, anything else kept. false:
 * stop the transfer (a bound was hit, or a hook asked to stop). */
bool llm_call_body(struct llm_call *c, const char *data, size_t n);
/* A header line of the answer (Retry-After is read), not necessarily NUL-terminated. */
void llm_call_header(struct llm_call *c, const char *line, size_t n);
/* A line of the answer's head as a transport gives it (a status line, or a header line): its
 * Content-Type is noted (c->not_sse), then llm_call_header reads it. */
void llm_call_head(struct llm_call *c, const char *line, size_t n);
/* ---- direct.c: a plain-HTTP provider without libcurl (setup->direct) ---- */
/* The libcurl code of the failure a direct transfer ended with, for classification. */
CURLcode llm_direct_curl_code(enum h1_end end);
/* Writes a direct request's per-call lines (traceparent when not NULL, Content-Length, the blank
 * line) into tail (cap >= 200); returns their length. */
size_t llm_direct_tail(char *tail, size_t cap, const char *traceparent, size_t body_len);
/* One blocking attempt of c posting body over this thread's own loop and connections (llm_chat's
 * attempt when setup->direct); the outcome as llm_call_finish gives it. */
enum llm_error llm_direct_attempt(const struct llm_setup *setup, const char *body, struct llm_call *c);
/* The attempt ended with rc: returns its class (res->http_status and res->detail filled) and
 * releases what prepare allocated. curl stays the caller's. */
enum llm_error llm_call_finish(struct llm_call *c, CURLcode rc);
/* Milliseconds to wait before the next attempt of c, whose last failed with e, or -1: no retry
 * (not an error worth one, a token came, cfg->max_retries used up, or the retry would start more
 * than cfg->retry_wait_ms after the first attempt: see retry.c). The wait is Retry-After when the
 * provider sent one, else half to all of *delay_ms (jittered), which then doubles up to 8 s. */
long llm_call_retry_ms(const struct llm_call *c, enum llm_error e, const struct llm_config *cfg, long *delay_ms);

#endif
