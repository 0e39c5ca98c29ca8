/*
 * h1_conn.h - HTTP/1.1 POSTs to a plain-HTTP provider at a literal address, driven by an io
 * thread's event loop over kept-alive connections: the fast path of the event-loop LLM client
 * (async.c) for local providers (Ollama, vLLM, llama.cpp on http://127.0.0.1:...).
 *
 * DESIGN: libcurl's multi interface costs about 60k instructions and two poll() calls per
 * proxied call; a POST with a known body to an address needing no name lookup, no TLS and no
 * proxy needs none of its generality. A transfer takes an idle connection to the same address
 * from the loop's pool (or opens one without blocking), writes the request (at once when the
 * socket takes it), and hands the response's header lines and body to its hooks as
 * h1_parse.h reads them. A connection goes back to the pool when its response ended cleanly and
 * may be reused; an idle connection that turns readable (the provider closed it) is closed. A
 * request on a reused connection that the provider had closed (EOF or reset before any byte of
 * the answer) is sent again once on a new connection, as libcurl does. Timeouts: connecting
 * (connect_timeout_s) and no byte for idle_timeout_s (libcurl's low-speed limit, as before).
 * Any URL this does not take (https, a host name, user info, an HTTP proxy in the environment)
 * stays with libcurl.
 *
 * Threads: a pool and its transfers belong to the thread running its event_base.
 */
#ifndef SOMA_LLM_H1_CONN_H
#define SOMA_LLM_H1_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

struct event_base;

struct h1_target {
	struct sockaddr_storage addr; /* where to connect */
	socklen_t addr_len;	      /* bytes of addr */
	char authority[280];	      /* host[:port] as the URL gives it: the Host header */
	char path[600];		      /* the request target, e.g. /v1/chat/completions */
};

/* Fills *t from url when it is http:// to an IPv4/IPv6 literal or localhost (127.0.0.1), with
 * an optional port and a path of visible ASCII; false for anything else (leave it to libcurl). */
bool h1_target_parse(const char *url, struct h1_target *t);

enum h1_end {
	H1_END_OK,	/* the response ended as its framing says */
	H1_END_CONNECT, /* no connection (refused, unreachable, connecting timed out): nothing sent */
	H1_END_TIMEOUT, /* no byte for idle_timeout_s */
	H1_END_BROKEN,	/* the connection broke, or the answer is not HTTP/1.x */
	H1_END_STOPPED, /* a hook returned false */
};

struct h1_xfer_hooks {
	/* the final status, once, before any body byte or the end */
	void (*on_status)(void *ctx, int status);
	/* each header line of the answer, without its line end; false stops */
	bool (*on_header)(void *ctx, const char *line, size_t len);
	/* body bytes, framing removed; false stops */
	bool (*on_body)(void *ctx, const char *data, size_t len);
	/* one read's bytes were handed on and the transfer goes on (may be NULL) */
	void (*after_read)(void *ctx);
	/* may be NULL: true when the caller has all of the body it wants (a stream's [DONE]). After
	 * a read that leaves the answer unfinished, the transfer then waits H1_OVER_GRACE_MS for the
	 * framing's end (the connection is kept) and else ends H1_END_STOPPED (closed); a body byte
	 * meanwhile goes to on_body, which should refuse it */
	bool (*body_over)(void *ctx);
	/* the transfer is over: called once, from the loop, never from h1_xfer_start; the transfer
	 * is freed when it returns. why: a sentence for the log, "" when OK */
	void (*on_end)(void *ctx, enum h1_end end, const char *why);
	void *ctx;
};

#define H1_OVER_GRACE_MS 200 /* see h1_xfer_hooks.body_over */

struct h1_pool;
struct h1_xfer;

/* A pool of connections for base's loop; NULL on OOM. */
struct h1_pool *h1_pool_new(struct event_base *base);
/* Closes the idle connections and frees the pool; its transfers must have ended or been
 * cancelled. NULL is ignored. */
void h1_pool_free(struct h1_pool *pool);

/* POSTs the iovcnt pieces of iov (the whole request, head and body; copied) to t. NULL on OOM;
 * every other failure reaches hooks->on_end. *hooks is copied. */
struct h1_xfer *h1_xfer_start(struct h1_pool *pool, const struct h1_target *t, const struct iovec *iov, int iovcnt,
			      int connect_timeout_s, int idle_timeout_s, const struct h1_xfer_hooks *hooks);
/* Ends x without calling on_end; its connection is closed. May be called from x's on_header,
 * on_body and after_read hooks (not from on_status or on_end). */
void h1_xfer_cancel(struct h1_xfer *x);
/* Stops reading x's answer (paused) or reads on (backpressure: the caller's reader lags); the
 * idle timeout does not run while paused. May be called from x's hooks. */
void h1_xfer_pause(struct h1_xfer *x, bool paused);

#endif
