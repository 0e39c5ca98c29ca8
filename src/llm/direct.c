/*
 * direct.c - what both clients share to call a plain-HTTP provider without libcurl (h1_conn.h),
 * and the blocking client's attempt over it (llm_direct_attempt, for llm_chat on worker threads).
 *
 * DESIGN: a request is the setup's head (llm_setup.h1_head), a tail with the per-call lines
 * (traceparent, Content-Length) and the body. How a transfer ended maps onto the libcurl code of
 * the same failure, so call.c classifies, words and retries both transports alike. A worker
 * thread keeps its own small event loop and connection pool (made on its first direct call,
 * freed when the thread exits) and runs the loop until its transfer ends; a 50 ms timer polls
 * the caller's should_cancel meanwhile (libcurl's progress callback did that before), so a
 * deleted session stops its reply as soon as it did.
 */
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/str.h"
#include "llm/llm_int.h"

#define CANCEL_POLL_MS 50

CURLcode llm_direct_curl_code(enum h1_end end)
{
	switch (end) {
	case H1_END_OK:
		return CURLE_OK;
	case H1_END_CONNECT:
		return CURLE_COULDNT_CONNECT;
	case H1_END_TIMEOUT:
		return CURLE_OPERATION_TIMEDOUT;
	case H1_END_STOPPED:
		return CURLE_WRITE_ERROR; /* as a write callback refusing bytes */
	case H1_END_BROKEN:
		break;
	}
	return CURLE_RECV_ERROR;
}

/* Appends n bytes of s at *at (cap checked by the caller's sizing). */
static void put(char *out, size_t *at, const char *s, size_t n)
{
	memcpy(out + *at, s, n);
	*at += n;
}

size_t llm_direct_tail(char *tail, size_t cap, const char *traceparent, size_t body_len)
{
	size_t at = 0;
	size_t tp = traceparent ? strlen(traceparent) : 0;
	if (tp > 100 || cap < 13 + tp + 2 + 16 + 20 + 4)
		tp = 0, traceparent = NULL; /* a W3C traceparent is 55 characters */
	if (traceparent) {
		put(tail, &at, "traceparent: ", 13);
		put(tail, &at, traceparent, tp);
		put(tail, &at, "\r\n", 2);
	}
	put(tail, &at, "Content-Length: ", 16);
	at += str_u64_dec(tail + at, body_len);
	put(tail, &at, "\r\n\r\n", 4);
	return at;
}

/* ---- the blocking attempt --------------------------------------------------------------------- */

struct thread_loop {
	struct event_base *base; /* owned */
	struct h1_pool *pool;	 /* owned; freed before base */
	struct event *poll;	 /* the should_cancel timer; owned */
};

/* One attempt's state, on the caller's stack. */
struct blocking {
	struct llm_call *call;
	struct h1_xfer *x; /* the transfer while it runs */
	bool ended;	   /* on_end came */
	bool cancelled;	   /* should_cancel said so */
	enum h1_end end;   /* how it ended */
	char why[256];	   /* on_end's sentence */
};

static pthread_key_t loop_key;
static pthread_once_t loop_once = PTHREAD_ONCE_INIT;
static bool loop_key_ok;

static void loop_free(void *arg)
{
	struct thread_loop *t = arg;
	if (t->poll)
		event_free(t->poll);
	h1_pool_free(t->pool);
	if (t->base)
		event_base_free(t->base);
	free(t);
}

static void loop_key_make(void)
{
	loop_key_ok = pthread_key_create(&loop_key, loop_free) == 0;
}

static void on_poll(evutil_socket_t fd, short what, void *arg);

/* This thread's loop, made on first use; NULL on OOM. */
static struct thread_loop *thread_loop(void)
{
	pthread_once(&loop_once, loop_key_make);
	struct thread_loop *t = loop_key_ok ? pthread_getspecific(loop_key) : NULL;
	if (t || !loop_key_ok)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->base = event_base_new();
	t->pool = t->base ? h1_pool_new(t->base) : NULL;
	if (!t->pool || pthread_setspecific(loop_key, t) != 0) {
		loop_free(t);
		return NULL;
	}
	return t;
}

static void got_status(void *ctx, int status)
{
	struct blocking *b = ctx;
	b->call->status = status;
}

static bool got_header(void *ctx, const char *line, size_t len)
{
	struct blocking *b = ctx;
	llm_call_head(b->call, line, len);
	return true;
}

static bool got_body(void *ctx, const char *data, size_t len)
{
	struct blocking *b = ctx;
	return llm_call_body(b->call, data, len);
}

static bool got_all(void *ctx)
{
	struct blocking *b = ctx;
	return b->call->finished;
}

static void ended(void *ctx, enum h1_end end, const char *why)
{
	struct blocking *b = ctx;
	b->x = NULL;
	b->ended = true;
	b->end = end;
	snprintf(b->why, sizeof(b->why), "%s", why);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct blocking *b = arg;
	const struct llm_callbacks *cb = b->call->cb;
	if (b->ended || !cb->should_cancel(cb->ctx))
		return; /* (the transfer may have ended in this same turn of the loop) */
	h1_xfer_cancel(b->x);
	b->x = NULL;
	b->ended = b->cancelled = true;
}

enum llm_error llm_direct_attempt(const struct llm_setup *s, const char *body, struct llm_call *c)
{
	struct thread_loop *t = thread_loop();
	if (!t || !llm_call_reset(c))
		return LLM_ERR_PROTOCOL;
	struct blocking b = {.call = c};
	const struct h1_xfer_hooks hooks = {.on_status = got_status,
					    .on_header = got_header,
					    .on_body = got_body,
					    .body_over = got_all,
					    .on_end = ended,
					    .ctx = &b};
	bool stream = c->req->stream;
	char tail[200];
	size_t body_len = strlen(body);
	size_t n = llm_direct_tail(tail, sizeof(tail), c->req->traceparent, body_len);
	struct iovec iov[] = {{s->h1_head[stream], s->h1_head_len[stream]}, {tail, n}, {(void *)body, body_len}};
	b.x = h1_xfer_start(t->pool, &s->target, iov, 3, s->cfg.connect_timeout_s, s->cfg.timeout_s, &hooks);
	if (!b.x) {
		llm_call_finish(c, CURLE_FAILED_INIT);
		return LLM_ERR_PROTOCOL;
	}
	bool polled = c->cb && c->cb->should_cancel;
	struct timeval every = {0, CANCEL_POLL_MS * 1000};
	if (polled && (t->poll || (t->poll = event_new(t->base, -1, EV_PERSIST, on_poll, NULL)))) {
		event_assign(t->poll, t->base, -1, EV_PERSIST, on_poll, &b);
		event_add(t->poll, &every);
	}
	while (!b.ended)
		event_base_loop(t->base, EVLOOP_ONCE);
	if (t->poll)
		event_del(t->poll);
	if (b.cancelled)
		return llm_call_finish(c, CURLE_ABORTED_BY_CALLBACK);
	if (b.end != H1_END_OK && b.why[0])
		snprintf(c->res->detail, sizeof(c->res->detail), "%s", b.why);
	return llm_call_finish(c, llm_direct_curl_code(b.end));
}
