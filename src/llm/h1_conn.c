/*
 * h1_conn.c - HTTP/1.1 POSTs to a plain-HTTP provider from an event loop (see h1_conn.h).
 *
 * DESIGN: a connection (struct conn) owns its socket and one persistent read event for its whole
 * life; the event's callback looks at what the connection is doing: connecting (a failed connect
 * turns readable too), carrying a transfer (the answer's bytes), or idle in the pool (the provider
 * closed it, or sent what nobody asked for: either way it is closed). A write event is added only
 * while connecting or when the socket did not take the whole request. A transfer (struct
 * h1_xfer) has one timer, armed once: for the connect timeout, then for the idle timeout, which
 * when it fires checks the time of the last byte and re-arms for what is left, so reads cost no
 * timer work (the time is CLOCK_MONOTONIC's: a step of the wall clock moves no timeout). Hooks
 * may cancel their own transfer: `busy` marks that a hook is running, and the caller finishes the
 * cancel once it returns. A connection goes back to the pool only after an answer that was whole,
 * said it stays open, brought no byte more, and came after the whole request went out.
 */
#include "llm/h1_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/clock.h"
#include "llm/h1_conn_int.h"

#define MAX_IDLE  16	/* kept connections per pool */
#define READ_SIZE 16384 /* bytes per recv */

static const struct timeval over_grace = {0, H1_OVER_GRACE_MS * 1000};

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);
static void try_send(struct h1_xfer *x);

/* ---- connections -------------------------------------------------------------------------------- */

static void conn_close(struct conn *c)
{
	event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	close(c->fd);
	free(c);
}

/* Takes c off the idle list. */
static void unidle(struct conn *c)
{
	struct h1_pool *pool = c->pool;
	for (struct conn **p = &pool->idle; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			pool->nidle--;
			return;
		}
	}
}

/* An idle connection to t's address from the pool, or NULL. */
static struct conn *take_idle(struct h1_pool *pool, const struct h1_target *t)
{
	for (struct conn **p = &pool->idle; *p; p = &(*p)->next) {
		struct conn *c = *p;
		if (c->addr_len == t->addr_len && memcmp(&c->addr, &t->addr, t->addr_len) == 0) {
			*p = c->next;
			pool->nidle--;
			return c;
		}
	}
	return NULL;
}

/* A transfer's connection is done with it: kept in the pool when reusable, else closed. */
static void release_conn(struct h1_xfer *x, bool reusable)
{
	struct conn *c = x->conn;
	x->conn = NULL;
	if (!c)
		return;
	c->xfer = NULL;
	if (c->wev)
		event_del(c->wev);
	if (!reusable || x->pool->nidle >= MAX_IDLE || (x->paused && event_add(c->rev, NULL) != 0)) {
		conn_close(c);
		return;
	}
	c->next = x->pool->idle;
	x->pool->idle = c;
	x->pool->nidle++;
}

/* Opens a new connection for x, without waiting; false (x->why set) when it failed at once. */
static bool open_conn(struct h1_xfer *x)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(x->why, sizeof(x->why), "out of memory opening a provider connection");
		return false;
	}
	c->pool = x->pool;
	c->fd = socket(x->target.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		snprintf(x->why, sizeof(x->why), "socket: %s", strerror(errno));
		free(c);
		return false;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->rev = event_new(x->pool->base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
	c->wev = event_new(x->pool->base, c->fd, EV_WRITE, on_writable, c);
	memcpy(&c->addr, &x->target.addr, x->target.addr_len);
	c->addr_len = x->target.addr_len;
	if (!c->rev || !c->wev || event_add(c->rev, NULL) != 0) {
		snprintf(x->why, sizeof(x->why), "out of memory watching a provider connection");
		if (c->rev)
			event_free(c->rev);
		if (c->wev)
			event_free(c->wev);
		close(c->fd);
		free(c);
		return false;
	}
	c->xfer = x;
	x->conn = c;
	x->reused = false;
	if (connect(c->fd, (struct sockaddr *)&c->addr, c->addr_len) == 0)
		return true;
	if (errno != EINPROGRESS) {
		snprintf(x->why, sizeof(x->why), "connect to %.100s: %s", x->target.authority, strerror(errno));
		release_conn(x, false);
		return false;
	}
	c->connecting = true;
	if (event_add(c->wev, NULL) == 0)
		return true;
	snprintf(x->why, sizeof(x->why), "out of memory watching a provider connection");
	release_conn(x, false);
	return false;
}

/* ---- transfers ---------------------------------------------------------------------------------- */

static void xfer_free(struct h1_xfer *x)
{
	release_conn(x, false);
	if (x->timer)
		event_free(x->timer);
	free(x->req);
	free(x);
}

/* Reports the end of x and frees it. */
static void end(struct h1_xfer *x, enum h1_end e, const char *why)
{
	if (!x->status_told && x->hooks.on_status) {
		x->status_told = true;
		x->hooks.on_status(x->hooks.ctx, x->resp.status);
	}
	release_conn(x, e == H1_END_OK && x->resp.keep_alive);
	event_del(x->timer);
	x->hooks.on_end(x->hooks.ctx, e, why ? why : "");
	xfer_free(x);
}

/* A failure at start, reported from the loop (on_end is never called from h1_xfer_start). */
static void fail_later(struct h1_xfer *x, enum h1_end e)
{
	release_conn(x, false);
	x->failed = e;
	x->failing = true;
	event_del(x->timer);
	event_active(x->timer, EV_TIMEOUT, 0);
}

/* Arms x's timer for secs from now. */
static void arm(struct h1_xfer *x, long secs)
{
	struct timeval tv = {secs > 0 ? secs : 1, 0};
	evtimer_add(x->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct h1_xfer *x = arg;
	if (x->failing) {
		end(x, x->failed, x->why);
		return;
	}
	if (x->over) { /* the caller had what it wanted; the framing did not end in time */
		end(x, H1_END_STOPPED, NULL);
		return;
	}
	if (x->conn && x->conn->connecting) {
		snprintf(x->why, sizeof(x->why), "connecting to %.100s timed out after %d s", x->target.authority,
			 x->connect_timeout_s);
		end(x, H1_END_CONNECT, x->why); /* nothing was sent: as a refused connect (retried) */
		return;
	}
	if (x->paused) /* the caller's reader lags: the provider is not waited on meanwhile */
		x->last_io_ns = clock_mono_ns();
	long quiet = (long)((clock_mono_ns() - x->last_io_ns) / 1000000000u);
	if (quiet < x->idle_timeout_s) {
		arm(x, x->idle_timeout_s - quiet);
		return;
	}
	snprintf(x->why, sizeof(x->why), "no byte from the provider at %.100s for %d s", x->target.authority,
		 x->idle_timeout_s);
	end(x, H1_END_TIMEOUT, x->why);
}

/* The connection carrying x failed before any byte of the answer. When it was a kept one that the
 * provider had closed, the request goes again on a new connection (or, when none opens, the
 * failure is reported from the loop): true. Otherwise false: the caller reports the failure. */
static bool resend_on_new(struct h1_xfer *x)
{
	if (!x->reused || x->got_bytes)
		return false;
	release_conn(x, false);
	x->sent = 0;
	if (!open_conn(x)) {
		fail_later(x, H1_END_CONNECT);
		return true;
	}
	event_del(x->timer);
	arm(x, x->conn->connecting ? x->connect_timeout_s : x->idle_timeout_s);
	if (!x->conn->connecting)
		try_send(x);
	return true;
}

/* Writes what is left of the request; waits for the socket when it takes only part. */
static void try_send(struct h1_xfer *x)
{
	struct conn *c = x->conn;
	while (x->sent < x->req_len) {
		ssize_t n = send(c->fd, x->req + x->sent, x->req_len - x->sent, MSG_NOSIGNAL);
		if (n > 0) {
			x->sent += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			event_add(c->wev, NULL);
			return;
		}
		int err = errno;
		if (resend_on_new(x))
			return;
		snprintf(x->why, sizeof(x->why), "sending to %.100s: %s", x->target.authority, strerror(err));
		fail_later(x, H1_END_BROKEN);
		return;
	}
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct conn *c = arg;
	struct h1_xfer *x = c->xfer;
	if (!x)
		return;
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY) {
			event_add(c->wev, NULL);
			return;
		}
		c->connecting = false;
		if (err) {
			snprintf(x->why, sizeof(x->why), "connect to %.100s: %s", x->target.authority, strerror(err));
			end(x, H1_END_CONNECT, x->why);
			return;
		}
		x->last_io_ns = clock_mono_ns();
		event_del(x->timer);
		arm(x, x->idle_timeout_s);
	}
	try_send(x);
}

/* Hook wrappers: the status told before the first body byte; busy while a hook runs. */
static bool got_header(void *ctx, const char *line, size_t len)
{
	struct h1_xfer *x = ctx;
	return !x->cancelled && (!x->hooks.on_header || x->hooks.on_header(x->hooks.ctx, line, len)) && !x->cancelled;
}

static bool got_body(void *ctx, const char *data, size_t len)
{
	struct h1_xfer *x = ctx;
	if (!x->status_told && x->hooks.on_status) {
		x->status_told = true;
		x->hooks.on_status(x->hooks.ctx, x->resp.status);
	}
	return !x->cancelled && x->hooks.on_body(x->hooks.ctx, data, len) && !x->cancelled;
}

/* Bytes of x's answer. */
static void take_bytes(struct h1_xfer *x, const char *buf, size_t n)
{
	const struct h1_hooks hooks = {.on_header = got_header, .on_body = got_body, .ctx = x};
	size_t used;
	x->got_bytes = true;
	x->busy = true;
	enum h1_result r = h1_response_feed(&x->resp, buf, n, &hooks, &used);
	x->busy = false;
	if (x->cancelled) {
		xfer_free(x);
		return;
	}
	switch (r) {
	case H1_MORE: /* the caller may have all it wants: then the framing's end is waited for a moment */
		if (x->hooks.body_over && !x->over && (x->over = x->hooks.body_over(x->hooks.ctx)))
			event_add(x->timer, &over_grace);
		if (x->hooks.after_read) {
			x->busy = true;
			x->hooks.after_read(x->hooks.ctx);
			x->busy = false;
			if (x->cancelled)
				xfer_free(x);
		}
		return;
	case H1_COMPLETE:
		if (used < n)
			x->resp.keep_alive = false; /* more than was asked for: do not trust the connection */
		/* answered before the whole request went (a key check's 401, a 413): the server reads
		 * the rest of the body before anything else, so the next request would be taken for it */
		if (x->sent < x->req_len)
			x->resp.keep_alive = false;
		end(x, H1_END_OK, NULL);
		return;
	case H1_BAD:
		snprintf(x->why, sizeof(x->why), "the answer of %.100s is not valid HTTP/1.1", x->target.authority);
		end(x, H1_END_BROKEN, x->why);
		return;
	case H1_STOP:
		end(x, H1_END_STOPPED, NULL);
		return;
	}
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct conn *c = arg;
	struct h1_xfer *x = c->xfer;
	if (!x) { /* idle: the provider closed it (or spoke unasked) */
		unidle(c);
		conn_close(c);
		return;
	}
	if (c->connecting) { /* a failed connect is readable too */
		on_writable(fd, EV_WRITE, c);
		return;
	}
	char buf[READ_SIZE];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	if (n > 0) {
		x->last_io_ns = clock_mono_ns();
		take_bytes(x, buf, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	int err = n < 0 ? errno : 0;
	if (resend_on_new(x))
		return;
	if (!err && h1_response_eof_ok(&x->resp)) {
		x->resp.keep_alive = false;
		end(x, H1_END_OK, NULL);
		return;
	}
	snprintf(x->why, sizeof(x->why), "the provider at %.100s %s", x->target.authority,
		 err ? strerror(err) : "closed the connection before the answer ended");
	end(x, H1_END_BROKEN, x->why);
}

struct h1_pool *h1_pool_new(struct event_base *base)
{
	struct h1_pool *pool = calloc(1, sizeof(*pool));
	if (pool)
		pool->base = base;
	return pool;
}

void h1_pool_free(struct h1_pool *pool)
{
	if (!pool)
		return;
	while (pool->idle) {
		struct conn *c = pool->idle;
		pool->idle = c->next;
		conn_close(c);
	}
	free(pool);
}

struct h1_xfer *h1_xfer_start(struct h1_pool *pool, const struct h1_target *t, const struct iovec *iov, int iovcnt,
			      int connect_timeout_s, int idle_timeout_s, const struct h1_xfer_hooks *hooks)
{
	struct h1_xfer *x = malloc(sizeof(*x));
	if (!x)
		return NULL;
	memset(x, 0, offsetof(struct h1_xfer, resp));
	h1_response_init(&x->resp);
	x->pool = pool;
	x->target = *t;
	x->hooks = *hooks;
	x->connect_timeout_s = connect_timeout_s > 0 ? connect_timeout_s : 10;
	x->idle_timeout_s = idle_timeout_s > 0 ? idle_timeout_s : 60;
	for (int i = 0; i < iovcnt; i++)
		x->req_len += iov[i].iov_len;
	x->req = malloc(x->req_len ? x->req_len : 1);
	x->timer = evtimer_new(pool->base, on_timer, x);
	if (!x->req || !x->timer) {
		xfer_free(x);
		return NULL;
	}
	size_t at = 0;
	for (int i = 0; i < iovcnt; i++) {
		memcpy(x->req + at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	x->last_io_ns = clock_mono_ns();
	struct conn *c = take_idle(pool, t);
	if (c) {
		c->xfer = x;
		x->conn = c;
		x->reused = true;
	} else if (!open_conn(x)) {
		fail_later(x, H1_END_CONNECT);
		return x;
	}
	arm(x, x->conn->connecting ? x->connect_timeout_s : x->idle_timeout_s);
	if (!x->conn->connecting)
		try_send(x);
	return x;
}

void h1_xfer_pause(struct h1_xfer *x, bool paused)
{
	if (!x || x->paused == paused)
		return;
	x->paused = paused;
	if (!x->conn || x->conn->connecting)
		return;
	if (paused)
		event_del(x->conn->rev);
	else
		event_add(x->conn->rev, NULL);
}

void h1_xfer_cancel(struct h1_xfer *x)
{
	if (!x)
		return;
	if (x->busy) {
		x->cancelled = true; /* the hook's caller frees it when the hook returns */
		return;
	}
	xfer_free(x);
}
